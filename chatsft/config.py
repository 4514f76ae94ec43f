"""Where the pipeline reads and writes: the params schema (`chatsft.params`) and `Layout`.

`Layout` is the one place the stages' paths live. `Layout()` is the DVC pipeline's (the paths
in dvc.yaml, relative to the repository; a test checks that they agree); `Layout.in_dir(out)`
is the one `chatsft train` and `chatsft.api` write into, everything under one directory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from chatsft.params import Params, load_params, parse_params

__all__ = ["EPOCH", "SPLITS", "Layout", "Params", "load_params", "parse_params"]

SPLITS = ("train", "validation", "test")  # what clean writes, besides its quarantine
# A training record's field and tokenized column: which epoch's draw it belongs to (from 0),
# present only when clean drew each epoch apart (data.resample_each_epoch).
EPOCH = "epoch"


@dataclass(frozen=True)
class Layout:
    params: Path = Path("params.yaml")
    sources: Path = Path("data/sources.json")  # data.raw's files and hashes (validate)
    clean: Path = Path("data/clean")
    clean_report: Path = Path("metrics/clean.json")
    base: Path = Path("models/base")
    tokenized: Path = Path("data/tokenized")
    tokenize_stats: Path = Path("metrics/tokenize.json")
    mask_audit: Path = Path("metrics/mask_audit.html")
    sft: Path = Path("models/sft")
    checkpoints: Path = Path("models/checkpoints")
    live: Path = Path("metrics/train")  # dvclive's directory (curves and its own summary)
    train_summary: Path = Path("metrics/train.json")
    base_eval: Path = Path("metrics/eval_base.json")  # the untrained base's scores
    eval_metrics: Path = Path("metrics/eval.json")
    eval_predictions: Path = Path("metrics/eval_predictions.jsonl")
    eval_worst: Path = Path("metrics/eval_worst.md")
    predictions: Path = Path("models/predictions.jsonl")
    exclude: Path = Path("data/exclude.txt")  # record ids to quarantine (`chatsft data exclude`)
    hardest_md: Path = Path("metrics/hardest.md")  # the highest-loss training conversations
    hardest_rows: Path = Path("metrics/hardest.jsonl")

    def __post_init__(self) -> None:
        for f in fields(self):  # accept strings (from JSON or a caller) as paths
            object.__setattr__(self, f.name, Path(getattr(self, f.name)))

    @classmethod
    def in_dir(cls, out: str | Path) -> Layout:
        """Everything under `out`, named flat: `model/` is the fine-tuned model."""
        out = Path(out)
        return cls(**{f.name: out / name for f, name in zip(fields(cls), _FLAT, strict=True)})

    def split(self, name: str) -> Path:
        """A clean split's file (train, validation, test or quarantine)."""
        return self.clean / f"{name}.jsonl"

    def to_arg(self) -> str:
        """One command-line argument from which `from_arg` rebuilds this layout (the relaunch
        of a distributed training)."""
        return json.dumps({k: str(v) for k, v in asdict(self).items()})

    @classmethod
    def from_arg(cls, arg: str) -> Layout:
        return cls(**json.loads(arg))


# Layout.in_dir's names, in the order of Layout's fields.
_FLAT = ("params.yaml", "sources.json", "clean", "clean.json", "base", "tokenized",
         "tokenize.json", "mask_audit.html", "model", "checkpoints", "logs", "train.json",
         "eval_base.json", "eval.json", "eval_predictions.jsonl", "eval_worst.md",
         "predictions.jsonl", "exclude.txt", "hardest.md", "hardest.jsonl")
