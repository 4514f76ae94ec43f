"""Stage evaluate_base: chatsft/pipeline/evaluate_base.py."""

from chatsft.pipeline import evaluate_base
from chatsft.stage import stage_main

main = stage_main(evaluate_base)

if __name__ == "__main__":
    main()
