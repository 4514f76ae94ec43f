"""Packing, pure Python: samples into rows of max_length (the tensors are
chatsft/batching/collate.py's).

A packed row carries per-sample `position_ids` restarting at 0 and no attention mask. From
those, transformers (masking_utils.find_packed_sequence_indices) builds a block-diagonal causal
mask for SDPA and eager attention. Variable-length kernels (flash attention, chatsft's
`sdpa_varlen`) get the samples' offsets as transformers' FlashAttentionKwargs
(`cu_seq_lens_q/k`, `max_length_q/k`): transformers' flash path infers them from position_ids
only for a batch of one row, so without them the samples of a 4-row batch would attend to each
other. Either way samples in a row never see each other (the loss equals the unpacked loss,
tested). The first token of each sample gets no label, so it is never trained to follow the
previous sample. This needs `use_cache=False` (a cache disables the detection), which the
batches carry.

transformers' DataCollatorWithFlattening packs a whole batch into one row instead; fixed rows
of max_length filled first-fit-decreasing keep batch shapes and memory steady.
"""

from __future__ import annotations

from collections.abc import Sequence

IGNORE = -100  # the label of unsupervised tokens: what PyTorch's cross-entropy ignores


def first_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bin indices so each bin's total length <= capacity: longest first, each into the first
    bin with room. A max-tree over the bins' free space finds that bin in O(log n), so a
    million samples pack in seconds; deterministic for the same input."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    size = 1
    while size < len(lengths):
        size *= 2
    free = [capacity] * (2 * size)  # leaves: bins (unopened ones empty); inner nodes: max
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"sample {i} has {n} tokens > capacity {capacity}")
        node = 1
        while node < size:  # leftmost leaf with room; unopened bins lie right of opened ones
            node = 2 * node if free[2 * node] >= n else 2 * node + 1
        b = node - size
        if b == len(bins):
            bins.append([])
        bins[b].append(i)
        free[node] -= n
        node //= 2
        while node:
            free[node] = max(free[2 * node], free[2 * node + 1])
            node //= 2
    return bins


def pack_rows(
    input_ids: Sequence[Sequence[int]],
    labels: Sequence[Sequence[int]],
    capacity: int,
) -> list[dict[str, list[int]]]:
    """Concatenate samples into rows of at most `capacity` tokens, with position_ids."""
    rows = []
    for group in first_fit_decreasing([len(x) for x in input_ids], capacity):
        ids, labs, pos = [], [], []
        for i in sorted(group):
            lab = list(labels[i])
            lab[0] = IGNORE  # never learn a sample's first token from the previous sample
            ids += input_ids[i]
            labs += lab
            pos += range(len(input_ids[i]))
        rows.append({"input_ids": ids, "labels": labs, "position_ids": pos})
    return rows


def layout_stats(labels: Sequence[Sequence[int]], rows: int, capacity: int | None) -> dict:
    """Rows, real tokens, padding fraction and supervised fraction of samples (their `labels`)
    laid out in `rows` rows of `capacity` tokens (None: padded per batch, no fixed padding).
    The first label of each sample never counts: packing masks it (`pack_rows`)."""
    real = sum(len(lab) for lab in labels)
    supervised = sum(sum(v != IGNORE for v in lab[1:]) for lab in labels)
    return _layout(rows, capacity, real, supervised)


def _layout(rows: int, capacity: int | None, real: int, supervised: int) -> dict:
    return {
        "rows": rows,
        "real_tokens": real,
        "padding_fraction": round(1 - real / (rows * capacity), 6) if rows and capacity
        else 0.0,
        "supervised_fraction": round(supervised / real, 6) if real else 0.0,
    }


def pack_stats(lengths: Sequence[int], supervised: int, capacity: int) -> dict:
    """`layout_stats` of `pack_rows`' layout of samples of these lengths, `supervised` of
    their tokens trained (not counting each sample's first), without building the rows."""
    rows = len(first_fit_decreasing(lengths, capacity)) if lengths else 0
    return _layout(rows, capacity, sum(lengths), supervised)
