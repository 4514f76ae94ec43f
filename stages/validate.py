"""Stage validate: chatsft/pipeline/validate.py."""

from chatsft.pipeline import validate
from chatsft.stage import stage_main

main = stage_main(validate)

if __name__ == "__main__":
    main()
