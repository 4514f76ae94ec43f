"""Stage predict: chatsft/pipeline/predict.py."""

from chatsft.pipeline import predict
from chatsft.stage import stage_main

main = stage_main(predict)

if __name__ == "__main__":
    main()
