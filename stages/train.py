"""Stage train: models/base + data/tokenized -> models/sft, metrics/train.json, loss curves."""

import shutil
import time
from pathlib import Path

from dvclive import Live

from chatsft.errors import user_errors_exit
from chatsft.io import atomic_path, write_json
from chatsft.modeling import load_model, load_tokenizer
from chatsft.params import load_params
from chatsft.train import build_trainer, summarize

BASE_DIR = "models/base"
TOKENIZED = Path("data/tokenized")
OUT_DIR = "models/sft"
WORK_DIR = Path("models/.train_work")
LIVE_DIR = "metrics/train"
SUMMARY = "metrics/train.json"


@user_errors_exit
def main() -> None:
    params = load_params()
    tokenizer = load_tokenizer(BASE_DIR)
    model = load_model(BASE_DIR, params.model.dtype, params.model.device_map)
    shutil.rmtree(LIVE_DIR, ignore_errors=True)
    with Live(LIVE_DIR, save_dvc_exp=False, dvcyaml=None, report=None) as live:
        trainer, counter, stats = build_trainer(
            model, TOKENIZED, params.train, params.tokenize, tokenizer.pad_token_id, WORK_DIR, live
        )
        start = time.perf_counter()
        trainer.train()
        summary = summarize(trainer, counter, time.perf_counter() - start) | stats
    with atomic_path(OUT_DIR, is_dir=True) as tmp:
        trainer.model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    shutil.rmtree(WORK_DIR, ignore_errors=True)
    write_json(SUMMARY, summary)
    print(f"train: {summary}")


if __name__ == "__main__":
    main()
