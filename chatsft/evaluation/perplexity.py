"""Perplexity and token accuracy over supervised (assistant) tokens only."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import PreTrainedModel

from chatsft.packing import IGNORE, Collator


@torch.inference_mode()
def supervised_nll(
    model: PreTrainedModel, ds: Dataset, pad_id: int, batch_size: int = 16,
    ignore_index: int = IGNORE,
) -> dict[str, float]:
    """Token-weighted over the split: exp(sum of NLL / number of supervised tokens)."""
    collate = Collator(pad_id, ignore_index)
    device = next(model.parameters()).device
    model.eval()
    order = sorted(range(len(ds)), key=lambda i: len(ds[i]["input_ids"]))
    nll, correct, count = 0.0, 0, 0
    for b in range(0, len(order), batch_size):
        batch = collate([ds[i] for i in order[b : b + batch_size]])
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            use_cache=False,
        ).logits.float()
        targets = batch["labels"][:, 1:].to(device)
        logits = logits[:, :-1]
        keep = targets != IGNORE
        nll += F.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
        correct += int((logits[keep].argmax(-1) == targets[keep]).sum())
        count += int(keep.sum())
    mean = nll / max(count, 1)
    return {
        "perplexity": math.exp(mean) if count else math.nan,
        "loss": mean,
        "token_accuracy": correct / max(count, 1),
        "supervised_tokens": count,
    }
