"""Training and evaluation rows from the tokenized splits: packed or padded, with statistics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from datasets import Dataset, DatasetDict, load_from_disk

from chatsft.attention import VARLEN_KERNELS
from chatsft.batching.collate import Collator
from chatsft.batching.packing import layout_stats, pack_rows
from chatsft.chat_template.render import attention_implementation
from chatsft.errors import UserError
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
    train = make_rows(splits["train"], params.packing, tok_params)
    if not train:
        raise UserError("the training split is empty: nothing to train on")
    evals = []
    if "validation" in splits and len(splits["validation"]):
        # one source per row, so that the eval loss adds up per source (training/sources.py)
        evals = [row | {"source_index": k} for k, part in by_source(splits["validation"])
                 for row in make_rows(part, params.packing, tok_params)]
    return train, evals


def row_stats(rows: list[dict], params: TrainParams, max_length: int) -> dict:
    """The training rows' `layout_stats` (packed rows, or one padded row per sample)."""
    stats = layout_stats([r["labels"] for r in rows], len(rows),
                         None if params.packing == "pad" else max_length)
    stats["tokens_per_epoch"] = stats.pop("real_tokens")
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
