"""Stage base: chatsft/pipeline/base.py."""

from chatsft.pipeline import base
from chatsft.stage import stage_main

main = stage_main(base)

if __name__ == "__main__":
    main()
