"""Perplexity and token accuracy against a hand computation, one conversation at a time."""

from __future__ import annotations

import math

import pytest
import torch
from datasets import Dataset

from chatsft.batching.packing import IGNORE
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.evaluation.perplexity import length_batches, supervised_nll


def by_hand(model, input_ids: list[list[int]], labels: list[list[int]], ignore: int):
    """Sum of -log p(label) over labelled positions, correct argmaxes and their count, with
    each conversation alone (no padding) and plain Python loops."""
    nll, correct, count = 0.0, 0, 0
    for ids, labs in zip(input_ids, labels, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
        for t in range(1, len(ids)):
            if labs[t] != ignore:
                nll -= logp[t - 1, labs[t]].item()
                correct += int(logp[t - 1].argmax().item() == labs[t])
                count += 1
    return nll, correct, count


def test_perplexity_matches_a_hand_computation(tiny_model, chatml_tokenizer, demo_records):
    enc = ChatEncoder(chatml_tokenizer)
    encoded = [enc.encode(r["messages"]) for r in demo_records[:9]]
    ids, labels = [e.input_ids for e in encoded], [e.labels for e in encoded]
    assert len({len(x) for x in ids}) > 3  # batches are padded
    nll, correct, count = by_hand(tiny_model, ids, labels, IGNORE)
    assert 0 < correct < count
    ds = Dataset.from_dict({"input_ids": ids, "labels": labels})
    pad = chatml_tokenizer.pad_token_id
    # One conversation per batch, a few per batch, and the default budget (all in one).
    for budget in (1, 300, None):
        got = supervised_nll(tiny_model, ds, pad, max_batch_tokens=budget)
        assert got["supervised_tokens"] == count
        assert got["loss"] == pytest.approx(nll / count, rel=1e-5)
        assert got["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)
        assert got["token_accuracy"] == pytest.approx(correct / count)


def test_perplexity_is_token_weighted_not_a_mean_over_conversations(tiny_model,
                                                                      chatml_tokenizer,
                                                                      demo_records):
    enc = ChatEncoder(chatml_tokenizer)
    encoded = [enc.encode(r["messages"]) for r in demo_records[:2]]
    parts = [supervised_nll(tiny_model, Dataset.from_dict(
        {"input_ids": [e.input_ids], "labels": [e.labels]}), 0) for e in encoded]
    both = supervised_nll(tiny_model, Dataset.from_dict(
        {"input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded]}), 0)
    n = [p["supervised_tokens"] for p in parts]
    assert n[0] != n[1]
    weighted = (parts[0]["loss"] * n[0] + parts[1]["loss"] * n[1]) / sum(n)
    assert both["loss"] == pytest.approx(weighted, rel=1e-6)
    assert both["loss"] != pytest.approx((parts[0]["loss"] + parts[1]["loss"]) / 2, rel=1e-4)


def test_nothing_supervised_gives_none_not_nan(tiny_model):
    ds = Dataset.from_dict({"input_ids": [[5, 6, 7]], "labels": [[-100, -100, -100]]})
    got = supervised_nll(tiny_model, ds, 0)
    assert got == {"perplexity": None, "loss": None, "token_accuracy": None,
                   "supervised_tokens": 0}


def test_length_batches_respect_the_token_budget():
    lengths = [5, 50, 7, 20, 20, 3]
    batches = list(length_batches(lengths, 40))
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len(b) * max(lengths[i] for i in b) <= 40 or len(b) == 1 for b in batches)
    assert batches[-1] == [1]  # longer than the budget: alone
