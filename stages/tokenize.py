"""Stage tokenize: chatsft/pipeline/tokenize.py."""

from chatsft.pipeline import tokenize
from chatsft.stage import stage_main

main = stage_main(tokenize)

if __name__ == "__main__":
    main()
