"""Evaluation loss per data source (each `data.raw` entry) during training.

Clean writes each record's `data.raw` entry into its line and tokenize keeps it as the
`source` column. The validation rows are packed one source at a time (a row never mixes
sources, at the cost of at most one part-filled row per source) and carry the source's index,
so the trainer's per-row sums of token losses add up per source: the eval loss per source is
its supervised tokens' summed loss over their count, exactly like the overall one, which is
their token-weighted combination.

Trainer logs them as `eval_loss/<source>` (every tracker gets them: TensorBoard shows
`eval/loss/<source>`); `SourceCurves` writes them, with the overall eval loss as source
`all`, to one long-format TSV (step, source, loss) beside dvclive's curves, which the
`eval_loss_by_source` plot in dvc.yaml draws with one line per source.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from datasets import Dataset
from transformers import TrainerCallback

COLUMN = "source"
PREFIX = "eval_loss/"  # Trainer log key of a source's eval loss: eval_loss/<source>
CURVES = Path("plots") / "metrics" / "eval" / "loss_by_source.tsv"  # under the dvclive dir
OVERALL = "all"


def source_names(ds: Dataset) -> list[str]:
    """The split's sources, sorted; none for data tokenized without them (no column, or
    records that named none)."""
    if COLUMN not in ds.column_names or not len(ds):
        return []
    return sorted(set(ds[COLUMN]) - {""})


def by_source(ds: Dataset) -> list[tuple[int, Dataset]]:
    """(index in `source_names(ds)`, the rows of that source) per source; the whole split as
    source 0 when it names none."""
    names = source_names(ds)
    if len(names) <= 1:
        return [(0, ds)]
    indices: dict[str, list[int]] = {name: [] for name in names}
    for i, name in enumerate(ds[COLUMN]):
        indices[name].append(i)
    return [(k, ds.select(indices[name])) for k, name in enumerate(names)]


class SourceTotals:
    """Sums of token losses and supervised-token counts per source, over an evaluation."""

    def __init__(self, names: list[str], device: torch.device) -> None:
        self.names = names
        self.sums = torch.zeros(len(names), dtype=torch.float64, device=device)
        self.counts = torch.zeros(len(names), dtype=torch.long, device=device)

    def add(self, source_index: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor) -> None:
        self.sums.index_add_(0, source_index, sums.to(self.sums.dtype))
        self.counts.index_add_(0, source_index, counts.to(self.counts.dtype))

    def metrics(self, prefix: str) -> dict[str, float]:
        """`<prefix>_loss/<source>` for each source with supervised tokens."""
        return {f"{prefix}_loss/{name}": float(self.sums[k] / self.counts[k])
                for k, name in enumerate(self.names) if self.counts[k] > 0}


def last_by_source(history: list[dict]) -> dict:
    """The last logged eval loss of each source, for the run's summary (metrics/train.json)."""
    last: dict[str, float] = {}
    for entry in history:
        for key, value in entry.items():
            if key.startswith(PREFIX):
                last[key[len(PREFIX):]] = value
    return {"eval_loss_by_source": last} if last else {}


class SourceCurves(TrainerCallback):
    """Appends each evaluation's loss per source (and overall, as `all`) to
    `<live_dir>/plots/metrics/eval/loss_by_source.tsv`: step, source, loss (main process).

    It has a `step` column like dvclive's own files, so a resumed run's copy is cut back to the
    checkpoint's step with them (callbacks.truncate_live_history)."""

    def __init__(self, live_dir: str | Path) -> None:
        self.path = Path(live_dir) / CURVES

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        rows = [(name[len(PREFIX):], value) for name, value in metrics.items()
                if name.startswith(PREFIX)]
        if "eval_loss" in metrics:
            rows.append((OVERALL, metrics["eval_loss"]))
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, delimiter="\t", lineterminator="\n")
            if new:
                writer.writerow(["step", "source", "loss"])
            writer.writerows((state.global_step, name, value) for name, value in rows)
