"""Stage train: base model + tokenized data -> fine-tuned model, summary and loss curves.

Checkpoints go to `Layout.checkpoints`: a run that was killed resumes from the last complete
one. With train.distributed set, `run` relaunches training under `accelerate launch`, one
process per GPU, each running this module (`python -m chatsft.pipeline.train LAYOUT`) on the
params file the layout names.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from chatsft.config import Layout, Params, load_params
from chatsft.errors import user_errors_exit
from chatsft.io import write_json
from chatsft.model.load import load_tokenizer
from chatsft.template_kwargs import USED_FILE, stamp_used
from chatsft.training.data import load_splits
from chatsft.training.launch import die_with_launcher, launch_command, relaunch
from chatsft.training.run import run_training
from chatsft.training.sharding import check_sharding_device

SECTIONS = ("train", "tokenize", "model")


def outputs(layout: Layout) -> list[Path]:
    return [layout.sft, layout.train_summary]


def run(params: Params, layout: Layout) -> dict:
    """Train here, or relaunch under accelerate (then exit with the launch's status)."""
    cmd = launch_command(params.train, ["-m", "chatsft.pipeline.train", layout.to_arg()])
    if cmd:
        relaunch(cmd)
    return train_here(params, layout)


def train_here(params: Params, layout: Layout) -> dict:
    """This process's part of the training (all of it without a launch)."""
    # In each launched process too: a manual `accelerate launch` of an FSDP/ZeRO config on
    # CPU is refused here, and the CPU FSDP verification mode is switched on here.
    check_sharding_device(params.train.distributed)
    tokenizer = load_tokenizer(layout.base, trust_remote_code=params.model.trust_remote_code)
    stamp_used(tokenizer, layout.tokenized / USED_FILE)  # the model renders as tokenize did
    summary = run_training(params, layout.base, load_splits(layout.tokenized), tokenizer,
                           layout.sft, layout.checkpoints, layout.live)
    if os.environ.get("RANK", "0") == "0":  # one writer in a multi-process launch
        write_json(layout.train_summary, summary)
        print(f"train: {summary}")
    return summary


@user_errors_exit
def main() -> None:
    die_with_launcher()
    layout = Layout.from_arg(sys.argv[1])
    train_here(load_params(layout.params, require=SECTIONS), layout)


if __name__ == "__main__":
    main()
