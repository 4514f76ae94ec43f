"""The hardest-samples pass: per-conversation losses against a hand computation, the report."""

from __future__ import annotations

import json

import pytest
import torch

from chatsft.batching.packing import IGNORE
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.cli import main
from chatsft.data.ids import read_exclusions, record_id
from chatsft.errors import UserError
from chatsft.evaluation.hardest import conversation_losses, hardest, hardest_markdown
from chatsft.params import GenerationParams


def _with_ids(records: list[dict]) -> list[dict]:
    return [{"id": record_id(json.dumps(r).encode()), **r} for r in records]


def by_hand(model, encoder: ChatEncoder, record: dict) -> float:
    """Mean -log p of the supervised tokens, the conversation alone, full logits."""
    enc = encoder.encode(record["messages"])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([enc.input_ids])).logits[0]
                                 .double(), -1)
    losses = [-logp[t - 1, enc.labels[t]].item() for t in range(1, len(enc.labels))
              if enc.labels[t] != IGNORE]
    return sum(losses) / len(losses)


@pytest.mark.parametrize("capacity", [160, 512])
def test_conversation_losses_match_each_conversation_alone(tiny_model, chatml_tokenizer,
                                                           demo_records, capacity):
    """Packed several to a row (and several rows to a batch), every conversation's loss is
    the one it has alone: no attention or label crosses a sample boundary."""
    encoder = ChatEncoder(chatml_tokenizer, max_length=capacity)
    records = _with_ids(demo_records[:12])
    scored, failed = conversation_losses(tiny_model, encoder, list(enumerate(records)),
                                         capacity, batch_tokens=2 * capacity)
    assert failed == 0 and [s.index for s in scored] == list(range(12))
    for s in scored:
        assert s.loss == pytest.approx(by_hand(tiny_model, encoder, records[s.index]), rel=1e-4)


def test_hardest_ranks_by_loss_once_per_id_and_reports_replies(tiny_model, chatml_tokenizer,
                                                               demo_records):
    encoder = ChatEncoder(chatml_tokenizer, max_length=512)
    records = _with_ids(demo_records[:10])
    records = records + records[:3]  # repeated by a weight: scored once
    gen = GenerationParams(max_new_tokens=4)
    rows, summary = hardest(tiny_model, chatml_tokenizer, encoder, records, 512, 4, gen)
    assert summary["conversations"] == summary["scored"] == 10
    losses = {r["id"]: by_hand(tiny_model, encoder, r) for r in records}
    expected = sorted(losses, key=lambda i: -losses[i])[:4]
    assert [r["id"] for r in rows] == expected
    assert [r["loss"] for r in rows] == sorted((r["loss"] for r in rows), reverse=True)
    top = next(r for r in records if r["id"] == rows[0]["id"])
    assert rows[0]["reference"] == top["messages"][-1]["content"]
    assert rows[0]["prompt"] == top["messages"][:-1]
    assert all(isinstance(r["reply"], str) for r in rows)
    text = hardest_markdown(rows, summary)
    assert f"## 1. `{rows[0]['id']}`: loss {rows[0]['loss']:.3f}" in text
    assert "**reference**" in text and "**model reply**" in text


def test_hardest_jsonl_feeds_data_exclude(tmp_path, capsys):
    rows = [{"rank": 1, "id": "0123456789abcdef", "loss": 3.0},
            {"rank": 2, "id": "fedcba9876543210", "loss": 2.0}]
    path = tmp_path / "hardest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    listing = tmp_path / "exclude.txt"
    assert main(["data", "exclude", "--file", str(path), "--list", str(listing)]) == 0
    assert read_exclusions(listing) == {r["id"] for r in rows}


def test_records_without_ids_are_an_error_naming_the_line(tiny_model, chatml_tokenizer,
                                                          demo_records):
    encoder = ChatEncoder(chatml_tokenizer, max_length=512)
    with pytest.raises(UserError, match="train.jsonl: line 1 has no id"):
        hardest(tiny_model, chatml_tokenizer, encoder, demo_records[:2], 512, 1,
                GenerationParams(), "data/clean/train.jsonl")
