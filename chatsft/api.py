"""Training without DVC: clean, tokenize and train in one go, with the pipeline's code.

    from chatsft.api import ChatTrainer, get_preset

    model, data, training = get_preset("qwen2.5-0.5b", data_path="my_chats.jsonl")
    ChatTrainer(model, data, training, output_dir="runs/qwen").train()

`chatsft train --model-name ... --data-path ...` does the same from the command line.
Everything lands in `output_dir`: `model/` (the fine-tuned model), `clean/`, `base/`,
`tokenized/` (with `quarantine.jsonl`), `tokenize.json`, `checkpoints/` (a rerun after a
crash resumes from them), `logs/` (dvclive) and `train.json` (the summary).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml

from chatsft.data.clean import clean_records, write_clean
from chatsft.io import atomic_path, remove_stale_temporaries, write_json, write_text
from chatsft.modeling import load_tokenizer, prepare_base
from chatsft.params import DataParams, ModelParams, Params, TokenizeParams, TrainParams, load_params
from chatsft.presets import DataSection, get_preset
from chatsft.tokenize_data import write_tokenized
from chatsft.training.data import load_splits
from chatsft.training.launch import launch_command, relaunch
from chatsft.training.run import run_training

__all__ = ["ChatTrainer", "get_preset", "run_pipeline"]


class ChatTrainer:
    """A trainer built from the model, data and training sections; `.train()` runs clean,
    base, tokenize and train like `dvc repro` would, into `output_dir`."""

    def __init__(self, model: ModelParams, data: DataParams | DataSection,
                 training: TrainParams, output_dir: str | Path = "outputs") -> None:
        tokenize = data.tokenize if isinstance(data, DataSection) else TokenizeParams()
        clean = DataParams(**data.model_dump(exclude={"tokenize"}))
        self.params = Params(model=model, data=clean, tokenize=tokenize, train=training)
        self.output_dir = Path(output_dir)

    def train(self) -> dict:
        return run_pipeline(self.params, self.output_dir)


PARAMS_FILE = "params.yaml"


def run_pipeline(params: Params, output_dir: str | Path) -> dict:
    """The pipeline's stages in order; returns the training summary. With
    train.distributed set, the data is prepared here and training relaunched under
    `accelerate launch` (`chatsft train --prepared DIR` in every process)."""
    out = Path(output_dir)
    prepare(params, out)
    cmd = launch_command(params.train, ["-m", "chatsft.cli", "train", "--prepared", str(out)])
    if cmd:
        relaunch(cmd)
    return train_prepared(out)


def prepare(params: Params, out: Path) -> None:
    """clean -> base -> tokenize into `out`, and the params used, in `out/params.yaml`."""
    out.mkdir(parents=True, exist_ok=True)
    # What a killed earlier run into `out` left (the stages do the same at their start).
    remove_stale_temporaries(*(out / name for name in (PARAMS_FILE, "clean", "base", "tokenized",
                                                       "tokenize.json", "train.json")))
    write_text(out / PARAMS_FILE, yaml.safe_dump(params.model_dump(), sort_keys=False,
                                                 allow_unicode=True))
    result = clean_records(params.data)
    with atomic_path(out / "clean", is_dir=True) as tmp:
        write_clean(result, tmp)
    report = result.report()
    print(f"clean: {report['quarantined']} of {report['read']} records quarantined, with "
          f"reason: {out / 'clean' / 'quarantine.jsonl'}")
    prepare_base(params.model, out / "clean" / "train.jsonl", out / "base")
    tokenizer = load_tokenizer(out / "base", trust_remote_code=params.model.trust_remote_code)
    _, quarantine, stats = write_tokenized(out / "clean", tokenizer, params.tokenize,
                                           out / "tokenized")
    write_json(out / "tokenize.json", stats)
    print(f"tokenize: {len(quarantine)} conversations quarantined, with reason: "
          f"{out / 'tokenized' / 'quarantine.jsonl'}")
    for warning in stats["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)


def train_prepared(out: Path) -> dict:
    """The train stage on a directory `prepare` filled (in each process of a launch)."""
    params = load_params(out / PARAMS_FILE)
    tokenizer = load_tokenizer(out / "base", trust_remote_code=params.model.trust_remote_code)
    summary = run_training(params, out / "base", load_splits(out / "tokenized"), tokenizer,
                           out / "model", out / "checkpoints", out / "logs")
    if os.environ.get("RANK", "0") == "0":
        write_json(out / "train.json", summary)
    return summary
