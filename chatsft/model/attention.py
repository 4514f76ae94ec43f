"""`sdpa_varlen`: variable-length attention over packed rows, where flash-attn can't run (CPU).

A packed row holds several samples. transformers' `sdpa` keeps them apart with a dense
(rows, 1, L, L) block-diagonal mask, so every pair of a row's tokens is scored and torch's CPU
flash kernel cannot skip the masked blocks. Here SDPA runs once per sample with `is_causal`:
the kernel skips everything above each sample's diagonal and everything between samples, and
no mask is built (profiled in benchmarks/README.md: the attention of a 4 x 512 step drops by
about a quarter). Batches of many short samples, where per-call overhead would dominate, run as
one SDPA call with the block-diagonal mask instead.

The semantics are flash_attention_2's. With no padding mask and no cache offset, a row's
samples are delimited by the collator's `cu_seq_lens_q` (transformers' FlashAttentionKwargs,
offsets into the flattened batch) or else where position_ids stop counting up, as
transformers' own packing detection does. Anything else (a padding mask, decoding with a
cache, sliding windows, bidirectional layers) goes to transformers' SDPA path unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PretrainedConfig
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "sdpa_varlen"
# Attention implementations that read cu_seq_lens_q/k and max_length_q/k (the collator emits them).
VARLEN_KERNELS = (NAME, "flash_attention_2", "flash_attention_3", "flash_attention_4")
# Below this mean sample length (tokens) a batch runs as one masked SDPA call instead.
MIN_MEAN_SAMPLE = 64


def supports_varlen_sdpa(config: PretrainedConfig) -> bool:
    """Full causal attention in every layer: no sliding windows, whose masks this skips."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    layer_types = getattr(text, "layer_types", None) or []
    return getattr(text, "sliding_window", None) is None and all(
        t == "full_attention" for t in layer_types)


def _zero(offset) -> bool:
    return isinstance(offset, int) and offset == 0


def varlen_mask(**kwargs) -> torch.Tensor | None:
    """No mask where the attention delimits the samples itself; else transformers' SDPA mask."""
    plain = (kwargs.get("attention_mask") is None
             and kwargs["q_length"] == kwargs["kv_length"]
             and _zero(kwargs.get("q_offset", 0)) and _zero(kwargs.get("kv_offset", 0))
             and kwargs.get("local_size") is None and not kwargs.get("use_vmap"))
    return None if plain else sdpa_mask(**kwargs)


def _sample_starts(batch: int, length: int, position_ids: torch.Tensor | None,
                   cu_seq_lens: torch.Tensor | None) -> torch.Tensor:
    """(batch, length) bool: True where a sample begins."""
    if cu_seq_lens is not None:
        flat = torch.zeros(batch * length, dtype=torch.bool)
        flat[cu_seq_lens[:-1].long().cpu()] = True
        starts = flat.view(batch, length)
        if not starts[:, 0].all():
            raise ValueError(f"{NAME}: a sample in cu_seq_lens crosses a row boundary")
        return starts
    pos = position_ids.expand(batch, -1).cpu()
    # transformers' find_packed_sequence_indices: a new sample wherever positions stop
    # counting up.
    starts = torch.diff(pos, dim=-1) != 1
    return torch.cat([torch.ones_like(starts[:, :1]), starts], dim=1)


def varlen_sdpa_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                          value: torch.Tensor, attention_mask: torch.Tensor | None,
                          dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """transformers attention interface: query (B, H, L, D), key/value (B, KV, L, D);
    returns (B, L, H, D) and no weights."""
    batch, heads, length, _ = query.shape
    causal = kwargs.get("is_causal")
    causal = getattr(module, "is_causal", True) if causal is None else causal
    if (attention_mask is not None or key.shape[2] != length or not causal
            or kwargs.get("sliding_window") is not None):
        return sdpa_attention_forward(module, query, key, value, attention_mask,
                                      dropout=dropout, scaling=scaling, **kwargs)
    position_ids, cu_seq_lens = kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q")
    if position_ids is None and cu_seq_lens is None:
        raise ValueError(f"{NAME}: this model passes no position_ids to its attention, so packed "
                         "samples can't be told apart; set model.attn_implementation: sdpa")
    starts = _sample_starts(batch, length, position_ids, cu_seq_lens)
    if batch * length < MIN_MEAN_SAMPLE * int(starts.sum()):
        # Many short samples: ~90 us of overhead per call costs more than the masked blocks
        # (measured: 4 rows of 256 with 60-token samples, 105 vs 117 ms a step).
        seq = starts.cumsum(-1).to(query.device)
        mask = (seq[:, :, None] == seq[:, None, :]).tril()[:, None]
        return sdpa_attention_forward(module, query, key, value, mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    gqa = key.shape[1] != heads
    parts = []
    for r, row in enumerate(starts):
        cuts = row.nonzero().view(-1).tolist() + [length]
        for s, e in zip(cuts, cuts[1:], strict=False):
            out = F.scaled_dot_product_attention(
                query[r:r + 1, :, s:e], key[r:r + 1, :, s:e], value[r:r + 1, :, s:e],
                dropout_p=dropout, is_causal=True, scale=scaling, enable_gqa=gqa)
            parts.append(out.transpose(1, 2))
    return torch.cat(parts, dim=1).view(batch, length, heads, -1), None


AttentionInterface.register(NAME, varlen_sdpa_attention)
AttentionMaskInterface.register(NAME, varlen_mask)
