"""Stage hardest: chatsft/pipeline/hardest.py."""

from chatsft.pipeline import hardest
from chatsft.stage import stage_main

main = stage_main(hardest)

if __name__ == "__main__":
    main()
