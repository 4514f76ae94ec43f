"""Training and evaluation rows from the tokenized splits: packed or padded, with statistics."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict, load_from_disk
from torch.utils.data import Sampler

from chatsft.batching.collate import Collator
from chatsft.batching.packing import layout_stats, pack_rows
from chatsft.chat_template.render import attention_implementation
from chatsft.config import EPOCH
from chatsft.errors import UserError
from chatsft.model.attention import VARLEN_KERNELS
from chatsft.params import TokenizeParams, TrainParams
from chatsft.training.sources import by_source


def load_splits(tokenized_dir: str | Path) -> DatasetDict:
    try:
        return load_from_disk(str(tokenized_dir))
    except FileNotFoundError:
        raise UserError(f"{tokenized_dir}: no tokenized data (run the tokenize stage)") from None


def make_rows(ds: Dataset, packing: str, tok_params: TokenizeParams) -> list[dict]:
    """Packed rows of at most max_length tokens, or one row per conversation."""
    cols = ds[:]  # plain lists: indexing a datasets Column row by row is 100x slower
    if packing == "pack":
        return pack_rows(cols["input_ids"], cols["labels"], tok_params.max_length)
    return [
        {"input_ids": ids, "labels": labels, "length": len(ids)}
        for ids, labels in zip(cols["input_ids"], cols["labels"], strict=True)
    ]


def split_rows(
    splits: DatasetDict, params: TrainParams, tok_params: TokenizeParams
) -> tuple[list[dict], list[dict]]:
    """(train rows, validation rows), both packed or both padded.

    The eval loss is a sum over supervised tokens divided by their count, so it is the same
    for packed and padded rows; packing only makes it faster.
    """
    train = [row | {EPOCH: e} for e, part in by_epoch(splits["train"])
             for row in make_rows(part, params.packing, tok_params)]
    if not train:
        raise UserError("the training split is empty: nothing to train on")
    evals = []
    if "validation" in splits and len(splits["validation"]):
        # one source per row, so that the eval loss adds up per source (training/sources.py)
        evals = [row | {"source_index": k} for k, part in by_source(splits["validation"])
                 for row in make_rows(part, params.packing, tok_params)]
    return train, evals


def by_epoch(ds: Dataset) -> list[tuple[int, Dataset]]:
    """(epoch, its records) per epoch's draw (data.resample_each_epoch); one block, epoch 0,
    for a split drawn once. Rows are packed within an epoch, never across two."""
    if EPOCH not in ds.column_names:
        return [(0, ds)]
    indices: dict[int, list[int]] = {}
    for i, e in enumerate(ds[EPOCH]):
        indices.setdefault(e, []).append(i)
    return [(e, ds.select(indices[e])) for e in sorted(indices)]


def epoch_blocks(rows: list[dict]) -> list[int]:
    """The number of rows of each epoch's block (the rows are in epoch order)."""
    sizes: dict[int, int] = {}
    for r in rows:
        sizes[r.get(EPOCH, 0)] = sizes.get(r.get(EPOCH, 0), 0) + 1
    return [sizes[e] for e in sorted(sizes)]


class EpochBlockSampler(Sampler[int]):
    """Each epoch's block of rows in a random order of its own, the blocks one after the
    other: data.resample_each_epoch's draws, trained as one pass (Trainer's epochs would
    repeat a single draw). The order depends only on `seed`, so a resumed run skips to
    the same batches."""

    def __init__(self, sizes: list[int], seed: int) -> None:
        self.sizes, self.seed = sizes, seed

    def __len__(self) -> int:
        return sum(self.sizes)

    def __iter__(self) -> Iterator[int]:
        start = 0
        for e, size in enumerate(self.sizes):
            g = torch.Generator().manual_seed(self.seed * 1000 + e)
            yield from (start + i for i in torch.randperm(size, generator=g).tolist())
            start += size


def row_stats(rows: list[dict], params: TrainParams, max_length: int) -> dict:
    """The training rows' `layout_stats` (packed rows, or one padded row per sample); with
    one draw per epoch, tokens per epoch are their mean and `epoch_draws` says how many."""
    stats = layout_stats([r["labels"] for r in rows], len(rows),
                         None if params.packing == "pad" else max_length)
    draws = len(epoch_blocks(rows))
    stats["tokens_per_epoch"] = stats.pop("real_tokens") // draws
    if draws > 1:
        stats["epoch_draws"] = draws
    return stats


def rows_fingerprint(rows: list[dict]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(repr((r["input_ids"], r["labels"])).encode())
    return h.hexdigest()[:16]


class BatchCollator(Collator):
    """The packing Collator, plus the batch's real (non-padding) token count.

    Counted from the rows rather than from the batch, since a packed batch carries no
    attention mask and the pad id may also be a real token (pad == eos for many models).
    The trainer pops `num_real_tokens` before the forward pass.
    """

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        batch["num_real_tokens"] = torch.tensor(sum(len(f["input_ids"]) for f in features))
        if "source_index" in features[0]:  # evaluation rows: popped by SFTTrainer.evaluate
            batch["source_index"] = torch.tensor([f["source_index"] for f in features])
        return batch


def collator_for(model, pad_id: int) -> BatchCollator:
    """The batch collator, with sample offsets when the model's attention kernel reads them."""
    return BatchCollator(pad_id, varlen_kwargs=attention_implementation(model) in VARLEN_KERNELS)
