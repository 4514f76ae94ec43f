"""Stage evaluate: chatsft/pipeline/evaluate.py."""

from chatsft.pipeline import evaluate
from chatsft.stage import stage_main

main = stage_main(evaluate)

if __name__ == "__main__":
    main()
