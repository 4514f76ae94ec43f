"""Stage train: models/base + data/tokenized -> models/sft, metrics/train.json, loss curves.

Checkpoints go to models/checkpoints (a persisted DVC output): a run that was killed resumes
from the last complete one on the next `dvc repro`. With train.distributed set, the stage
relaunches itself under `accelerate launch`.
"""

import os
from pathlib import Path

from chatsft.errors import user_errors_exit
from chatsft.io import write_json
from chatsft.modeling import load_tokenizer
from chatsft.stage import start_stage
from chatsft.template_kwargs import USED_FILE, stamp_used
from chatsft.training.data import load_splits
from chatsft.training.launch import launch_command, relaunch
from chatsft.training.run import run_training

BASE_DIR = "models/base"
TOKENIZED = "data/tokenized"
OUT_DIR = "models/sft"
CHECKPOINTS = "models/checkpoints"
LIVE_DIR = "metrics/train"
SUMMARY = "metrics/train.json"


@user_errors_exit
def main() -> None:
    params = start_stage(["train", "tokenize", "model"], [OUT_DIR, SUMMARY])
    cmd = launch_command(params.train, ["-m", "stages.train"])
    if cmd:
        relaunch(cmd)
    tokenizer = load_tokenizer(BASE_DIR, trust_remote_code=params.model.trust_remote_code)
    stamp_used(tokenizer, Path(TOKENIZED) / USED_FILE)  # models/sft renders as tokenize did
    summary = run_training(params, BASE_DIR, load_splits(TOKENIZED), tokenizer, OUT_DIR,
                           CHECKPOINTS, LIVE_DIR)
    if os.environ.get("RANK", "0") == "0":  # one writer in a multi-process launch
        write_json(SUMMARY, summary)
        print(f"train: {summary}")


if __name__ == "__main__":
    main()
