"""Batches: padded (grouped by length) or packed rows of max_length.

A packed row carries per-sample `position_ids` restarting at 0 and no attention mask, so
transformers builds a block-diagonal causal mask (SDPA/eager) or uses variable-length flash
attention: samples in a row never attend to each other. The first token of each sample gets
no label, so it is never trained to follow the previous sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE = -100  # what transformers' causal-LM loss ignores


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bin indices so each bin's total length <= capacity; deterministic for the same input."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    space: list[int] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"sample {i} has {n} tokens > capacity {capacity}")
        for b, free in enumerate(space):
            if n <= free:
                bins[b].append(i)
                space[b] -= n
                break
        else:
            bins.append([i])
            space.append(capacity - n)
    return bins


def pack_rows(
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    capacity: int,
    ignore_index: int = IGNORE,
) -> list[dict[str, list[int]]]:
    """Concatenate samples into rows of at most `capacity` tokens."""
    rows = []
    for group in first_fit_decreasing([len(x) for x in input_ids], capacity):
        ids, labs, pos = [], [], []
        for i in sorted(group):
            lab = [IGNORE if v == ignore_index else v for v in labels[i]]
            lab[0] = IGNORE
            ids += input_ids[i]
            labs += lab
            pos += range(len(input_ids[i]))
        rows.append({"input_ids": ids, "labels": labs, "position_ids": pos})
    return rows


class Collator:
    """Pads a list of samples, or of packed rows (those carry position_ids), to the longest."""

    def __init__(self, pad_id: int, ignore_index: int = IGNORE) -> None:
        self.pad_id = pad_id
        self.ignore_index = ignore_index

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        packed = "position_ids" in features[0]
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        pos = torch.zeros((len(features), width), dtype=torch.long)
        for r, f in enumerate(features):
            n = len(f["input_ids"])
            ids[r, :n] = torch.as_tensor(f["input_ids"])
            lab = torch.as_tensor(f["labels"])
            labels[r, :n] = torch.where(lab == self.ignore_index, IGNORE, lab)
            mask[r, :n] = 1
            if packed:
                pos[r, :n] = torch.as_tensor(f["position_ids"])
                # The padding tail becomes one more "sample" of its own, with no labels.
                pos[r, n:] = torch.arange(width - n)
        batch = {"input_ids": ids, "labels": labels, "use_cache": False}
        if packed:
            batch["position_ids"] = pos  # no attention_mask: transformers detects the packing
        else:
            batch["attention_mask"] = mask
        return batch
