"""Stage clean: chatsft/pipeline/clean.py."""

from chatsft.pipeline import clean
from chatsft.stage import stage_main

main = stage_main(clean)

if __name__ == "__main__":
    main()
