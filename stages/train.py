"""Stage train: chatsft/pipeline/train.py."""

from chatsft.pipeline import train
from chatsft.stage import stage_main

main = stage_main(train)

if __name__ == "__main__":
    main()
