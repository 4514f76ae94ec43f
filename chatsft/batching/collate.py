"""Batches as tensors: samples padded to the longest, or packed rows (chatsft.batching.packing)
with their position_ids, and for variable-length kernels the samples' offsets."""

from __future__ import annotations

import torch
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

from chatsft.batching.packing import IGNORE


class Collator:
    """Pads a list of samples, or of packed rows (those carry position_ids), to the longest.

    Labels come from the rows, never from the pad id, so an end-of-turn token that is also
    the pad token (pad == eos) keeps its label. With `varlen_kwargs`, packed batches also
    carry the samples' offsets for variable-length attention kernels."""

    def __init__(self, pad_id: int, varlen_kwargs: bool = False) -> None:
        self.pad_id = pad_id
        self.varlen_kwargs = varlen_kwargs

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
            labels[r, :n] = torch.as_tensor(f["labels"])
            mask[r, :n] = 1
            if packed:
                pos[r, :n] = torch.as_tensor(f["position_ids"])
                # The padding tail becomes one more "sample" of its own, with no labels.
                pos[r, n:] = torch.arange(width - n)
        batch = {"input_ids": ids, "labels": labels, "use_cache": False}
        if packed:
            batch["position_ids"] = pos  # no attention_mask: transformers detects the packing
            if self.varlen_kwargs:
                batch |= varlen_offsets(pos)
        else:
            batch["attention_mask"] = mask
        return batch


def varlen_offsets(position_ids: torch.Tensor) -> dict:
    """FlashAttentionKwargs of packed rows: where each sample (a restart of position_ids at 0)
    begins in the flattened batch, from transformers' own helper; the longest sample as an int,
    which the flash-attn kernels take."""
    (cu, _), (longest, _) = prepare_fa_kwargs_from_position_ids(position_ids)
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu, "max_length_q": int(longest),
            "max_length_k": int(longest)}
