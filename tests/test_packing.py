"""Packing: first-fit-decreasing rows, isolation between packed samples, collation."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from chatsft.batching.collate import Collator, varlen_offsets
from chatsft.batching.packing import (
    IGNORE,
    first_fit_decreasing,
    layout_stats,
    pack_rows,
    pack_stats,
)
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.model import attention  # also registers sdpa_varlen


def naive_ffd(lengths: list[int], capacity: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    space: list[int] = []
    for i in order:
        for b, free in enumerate(space):
            if lengths[i] <= free:
                bins[b].append(i)
                space[b] -= lengths[i]
                break
        else:
            bins.append([i])
            space.append(capacity - lengths[i])
    return bins


def test_first_fit_decreasing_matches_the_textbook_algorithm():
    rng = random.Random(0)
    for trial in range(200):
        capacity = rng.choice([8, 64, 256])
        lengths = [rng.randint(1, capacity) for _ in range(rng.randint(0, 300))]
        bins = first_fit_decreasing(lengths, capacity)
        assert bins == naive_ffd(lengths, capacity), trial
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    with pytest.raises(ValueError, match="sample 1 has 9 tokens > capacity 8"):
        first_fit_decreasing([3, 9], 8)


def test_pack_rows_restart_positions_and_never_train_a_first_token():
    ids = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    labels = [[IGNORE, 6, 7], [8, 9], [IGNORE, IGNORE, 12, 13]]
    rows = pack_rows(ids, labels, capacity=7)
    assert rows == [
        {"input_ids": [5, 6, 7, 10, 11, 12, 13], "labels": [IGNORE, 6, 7, IGNORE, IGNORE, 12, 13],
         "position_ids": [0, 1, 2, 0, 1, 2, 3]},
        {"input_ids": [8, 9], "labels": [IGNORE, 9], "position_ids": [0, 1]},
    ]
    supervised = sum(v != IGNORE for lab in labels for v in lab[1:])
    stats = pack_stats([len(x) for x in ids], supervised, 7)
    assert stats == layout_stats([r["labels"] for r in rows], len(rows), 7)
    assert stats == {"rows": 2, "real_tokens": 9, "padding_fraction": round(1 - 9 / 14, 6),
                     "supervised_fraction": round(5 / 9, 6)}


def test_collator_pads_or_packs_and_keeps_labels_equal_to_the_pad_id():
    pad = 0  # also a supervised token below, as with pad == eos
    collate = Collator(pad)
    batch = collate([{"input_ids": [3, 0], "labels": [IGNORE, 0]},
                     {"input_ids": [4], "labels": [IGNORE]}])
    assert batch["labels"].tolist() == [[IGNORE, 0], [IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1], [1, 0]]
    assert "position_ids" not in batch and batch["use_cache"] is False
    rows = pack_rows([[3, 0], [4, 5]], [[IGNORE, 0], [IGNORE, 5]], 4)
    batch = collate(rows + [{"input_ids": [7], "labels": [IGNORE], "position_ids": [0]}])
    assert "attention_mask" not in batch
    # The padding tail restarts at 0: a sample of its own, attended by no real token.
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1], [0, 0, 1, 2]]
    assert batch["labels"].tolist() == [[IGNORE, 0, IGNORE, 5], [IGNORE] * 4]


def test_varlen_offsets_are_the_samples_starts_in_the_flattened_batch():
    rows = pack_rows([[3, 0, 9], [4, 5], [6], [8, 8, 8, 8]],
                     [[IGNORE, 0, 9], [IGNORE, 5], [6], [8] * 4], 5)
    # Hand layout: row 0 = [6 | 8 8 8 8] (1 + 4 tokens), row 1 = [3 0 9 | 4 5] (3 + 2).
    assert [r["position_ids"] for r in rows] == [[0, 0, 1, 2, 3], [0, 1, 2, 0, 1]]
    batch = Collator(0, varlen_kwargs=True)(rows)
    assert batch["cu_seq_lens_q"].tolist() == [0, 1, 5, 8, 10]
    assert batch["cu_seq_lens_q"].dtype == torch.int32 and batch["cu_seq_lens_k"] is \
        batch["cu_seq_lens_q"]
    assert batch["max_length_q"] == batch["max_length_k"] == 4
    # Rows of unequal length: the short row's padding tail is one more sample of its own.
    rows = pack_rows([[1] * 6, [2] * 2, [3] * 3], [[1] * 6, [2] * 2, [3] * 3], 7)
    assert [len(r["input_ids"]) for r in rows] == [6, 5]
    batch = Collator(0, varlen_kwargs=True)(rows)
    # Width 6. Row 0: [1 x6] -> 0..6; row 1: [2 2 | 3 3 3 | pad] -> 6..8, 8..11, 11..12.
    assert batch["cu_seq_lens_q"].tolist() == [0, 6, 8, 11, 12]
    assert batch["max_length_q"] == 6
    single = varlen_offsets(torch.tensor([[0, 1, 2]]))
    assert single["cu_seq_lens_q"].tolist() == [0, 3] and single["max_length_q"] == 3


@pytest.fixture(scope="module")
def encoded(demo_records, chatml_tokenizer):
    enc = ChatEncoder(chatml_tokenizer)
    out = [enc.encode(r["messages"]) for r in demo_records[:80]]
    return [(e.input_ids, e.labels) for e in out]


# sdpa_varlen runs SDPA once per sample unless the batch averages under MIN_MEAN_SAMPLE (64)
# tokens per sample (padding tails count as samples), where it makes one masked call. Long
# samples in wide rows land on the first side, short ones in narrow rows on the other; the
# test checks the arithmetic and which path really ran.
LAYOUTS = {"per-sample": (100, 10**6, 320), "masked": (0, 50, 160)}  # min, max length; row


def _layout(encoded, name):
    shortest, longest, capacity = LAYOUTS[name]
    picked = [(i, lab) for i, lab in encoded if shortest <= len(i) <= longest][:16]
    assert len(picked) >= 12
    return [i for i, _ in picked], [lab for _, lab in picked], capacity


def _count_paths(monkeypatch) -> dict:
    """Counts sdpa_varlen's calls of each kind, calling through to the real kernels."""
    calls = {"per-sample": 0, "masked": 0}
    sdpa, masked = attention.F.scaled_dot_product_attention, attention.sdpa_attention_forward

    def per_sample(*args, **kwargs):
        calls["per-sample"] += 1
        return sdpa(*args, **kwargs)

    def fallback(module, query, key, value, mask, *args, **kwargs):
        calls["masked"] += mask is not None
        return masked(module, query, key, value, mask, *args, **kwargs)

    monkeypatch.setattr(attention, "F", SimpleNamespace(scaled_dot_product_attention=per_sample))
    monkeypatch.setattr(attention, "sdpa_attention_forward", fallback)
    return calls


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(("attn", "offsets"), [
    ("sdpa", False), ("eager", False), ("sdpa_varlen", False), ("sdpa_varlen", True)])
def test_packed_loss_equals_unpacked_loss(tiny_model, chatml_tokenizer, encoded, attn, offsets,
                                          layout, monkeypatch):
    """offsets: the batch carries cu_seq_lens (FlashAttentionKwargs); else sdpa_varlen finds
    the samples from position_ids, like transformers' mask for sdpa and eager."""
    model = tiny_model.eval()
    model.set_attn_implementation(attn)
    torch.manual_seed(0)
    with torch.no_grad():  # wider than the default init, so outputs depend on the context
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0.0, 0.2)
    ids, labels, capacity = _layout(encoded, layout)
    collate = Collator(chatml_tokenizer.pad_token_id)
    rows = pack_rows(ids, labels, capacity=capacity)
    assert len(rows) < len(ids) and any(len(set(r["position_ids"])) < len(r["position_ids"])
                                        for r in rows)
    unpacked = collate([{"input_ids": i, "labels": lab} for i, lab in zip(ids, labels,
                                                                          strict=True)])
    packed = Collator(chatml_tokenizer.pad_token_id, varlen_kwargs=offsets)(rows)
    assert ("cu_seq_lens_q" in packed) == offsets
    starts = int((packed["position_ids"] == 0).sum())  # samples and padding tails
    per_sample = packed["input_ids"].numel() >= attention.MIN_MEAN_SAMPLE * starts
    assert per_sample == (layout == "per-sample")
    calls = _count_paths(monkeypatch)
    with torch.no_grad():
        ref = model(**unpacked)
        calls.update(dict.fromkeys(calls, 0))
        out = model(**packed)
        ran = dict(calls)
        # Negative control: the same rows with one causal mask over each whole row.
        leaky = model(input_ids=packed["input_ids"], labels=packed["labels"],
                      attention_mask=torch.ones_like(packed["input_ids"]), use_cache=False)
    assert out.loss.item() == pytest.approx(ref.loss.item(), abs=1e-5)
    assert abs(leaky.loss.item() - ref.loss.item()) > 1e-4  # 10x the tolerance: a leak shows
    # Every sample's logits are the same packed or alone: nothing leaks between samples.
    row_of = {}
    for r, group in enumerate(first_fit_decreasing([len(x) for x in ids], capacity)):
        offset = 0
        for i in sorted(group):
            row_of[i] = (r, offset)
            offset += len(ids[i])
    assert sorted(row_of) == list(range(len(ids)))
    leaked = 0.0
    for i, x in enumerate(ids):
        r, offset = row_of[i]
        torch.testing.assert_close(out.logits[r, offset : offset + len(x)],
                                   ref.logits[i, : len(x)], atol=1e-5, rtol=0)
        leaked = max(leaked, (leaky.logits[r, offset : offset + len(x)]
                              - ref.logits[i, : len(x)]).abs().max().item())
    assert leaked > 0.1
    # The path this case is for is the one that ran, in every layer.
    layers = model.config.num_hidden_layers
    if attn == "sdpa_varlen":
        assert ran == ({"per-sample": layers * starts, "masked": 0} if per_sample
                       else {"per-sample": 0, "masked": layers})
    else:
        assert ran == {"per-sample": 0, "masked": 0}
