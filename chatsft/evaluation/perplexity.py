"""Perplexity and token accuracy over supervised (assistant) tokens only.

Token-weighted over the split: perplexity = exp(sum of the NLL of every supervised token /
number of supervised tokens), not a mean of per-conversation perplexities, so a long answer
weighs by its length, as in the training loss. The tokens are those of `data/tokenized` (the
training masks), so the figure is the training objective on held-out data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel

from chatsft.batching.collate import Collator
from chatsft.batching.packing import IGNORE
from chatsft.training.sources import by_source, source_names

# fp32 logits of one batch stay under 256 MB: a 151k vocabulary gets ~440 tokens per batch.
LOGITS_BUDGET = 2**26


def length_batches(lengths: list[int], max_tokens: int) -> Iterator[list[int]]:
    """Indices sorted by length, grouped so that rows x longest row <= max_tokens."""
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (lengths[i], i)):
        if batch and (len(batch) + 1) * lengths[i] > max_tokens:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


@torch.inference_mode()
def supervised_nll(
    model: PreTrainedModel,
    ds: Dataset,
    pad_id: int,
    max_batch_tokens: int | None = None,
) -> dict[str, float | None]:
    """perplexity, loss (mean NLL), token_accuracy (argmax == label) and supervised_tokens;
    None (valid JSON, unlike NaN) for the first three when nothing is supervised."""
    collate = Collator(pad_id)
    device = next(model.parameters()).device
    model.eval()
    max_tokens = max_batch_tokens or max(1, LOGITS_BUDGET // model.config.get_text_config()
                                         .vocab_size)
    rows = ds.with_format(None)
    lengths = [len(x) for x in rows["input_ids"]]
    nll, correct, count = 0.0, 0, 0
    for idx in length_batches(lengths, max_tokens):
        batch = collate([rows[i] for i in idx])  # right-padded, pad labels IGNORE
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            use_cache=False,
        ).logits[:, :-1]
        targets = batch["labels"][:, 1:].to(device)
        keep = targets != IGNORE
        picked = logits[keep].float()
        nll += F.cross_entropy(picked, targets[keep], reduction="sum").item()
        correct += int((picked.argmax(-1) == targets[keep]).sum())
        count += int(keep.sum())
    if not count:
        return {"perplexity": None, "loss": None, "token_accuracy": None, "supervised_tokens": 0}
    return {
        "perplexity": math.exp(nll / count),
        "loss": nll / count,
        "token_accuracy": correct / count,
        "supervised_tokens": count,
    }


def nll_by_source(
    model: PreTrainedModel, ds: Dataset, pad_id: int, overall: dict | None = None,
) -> dict[str, dict]:
    """{source: `supervised_nll` of its rows} for data tokenized with sources (each
    `data.raw` entry, `chatsft.training.sources`); a single source's figures are the split's
    (`overall`, when given, is not computed again). Empty without sources."""
    names = source_names(ds)
    if len(names) == 1 and overall is not None:
        return {names[0]: overall}
    return {names[k]: supervised_nll(model, part, pad_id)
            for k, part in by_source(ds)} if names else {}
