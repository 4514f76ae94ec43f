"""Stage base: models/base/ holds the starting tokenizer (with chat template) and model."""

from chatsft.errors import user_errors_exit
from chatsft.modeling import prepare_base
from chatsft.stage import start_stage

TRAIN_SPLIT = "data/clean/train.jsonl"
OUT_DIR = "models/base"


@user_errors_exit
def main() -> None:
    info = prepare_base(start_stage(["model"], [OUT_DIR]).model, TRAIN_SPLIT, OUT_DIR)
    print(f"base: {info}")


if __name__ == "__main__":
    main()
