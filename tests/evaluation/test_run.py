"""evaluate_model: references are the last assistant turns, prompts what precedes them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.evaluation.run import evaluate_model, worst_table
from chatsft.inference.generation import load_for_inference
from chatsft.model.load import load_tokenizer
from chatsft.params import EvaluateParams, GenerationParams


@pytest.fixture(scope="module")
def answering(two_word_model):
    """A model that answers every prompt with the same two words; and that answer."""
    path, answer = two_word_model
    return path, answer.strip()


def conversation(*turns: str) -> dict:
    roles = ["user", "assistant"] * len(turns)
    return {"messages": [{"role": r, "content": t} for r, t in zip(roles, turns, strict=False)]}


def test_scores_the_last_assistant_turn_of_each_test_conversation(answering):
    path, answer = answering
    model, tok = load_for_inference(str(path)), load_tokenizer(path)
    test = [
        conversation("First question?", answer),
        conversation("First question?", "Something else.", "Second question?", answer),
        conversation("First question?", answer, "Second question?", "Something else."),
    ]
    enc = ChatEncoder(tok)
    encoded = [enc.encode(r["messages"]) for r in test]
    split = Dataset.from_dict({"input_ids": [e.input_ids for e in encoded],
                               "labels": [e.labels for e in encoded]})
    tokenized = DatasetDict(validation=split, test=split)
    params = EvaluateParams(generation=GenerationParams(max_new_tokens=8), compare_base=False)

    metrics, rows = evaluate_model(model, tok, tokenized, test, params)

    assert [r["prediction"] for r in rows] == [answer] * 3
    assert [r["reference"] for r in rows] == [answer, answer, "Something else."]
    assert [len(r["prompt"]) for r in rows] == [1, 3, 3]
    assert [r["exact_match"] for r in rows] == [100.0, 100.0, 0.0]
    assert all(r["generated_tokens"] == 3 for r in rows)
    t = metrics["test"]
    assert t["exact_match"] == pytest.approx(200 / 3, abs=1e-3)
    assert t["samples"] == 3 and t["generated_tokens_mean"] == 3
    # Perplexity and token accuracy over the supervised tokens, from the model's logits here.
    nll, hits, supervised = 0.0, 0, 0
    with torch.no_grad():
        for e in encoded:
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0, :-1]
            targets = torch.tensor(e.labels[1:])
            keep = targets != -100
            nll += F.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            hits += int((logits[keep].argmax(-1) == targets[keep]).sum())
            supervised += int(keep.sum())
    assert t["supervised_tokens"] == metrics["validation"]["supervised_tokens"] == supervised
    assert t["perplexity"] == pytest.approx(math.exp(nll / supervised), rel=1e-5)
    assert t["token_accuracy"] == pytest.approx(hits / supervised, abs=1e-5)
    assert 0 < hits < supervised  # the model gets the answers right, "Something else." wrong

    table = worst_table(rows, n=2)
    assert table.splitlines()[4].startswith("| 2 |")  # the miss comes first
    assert len(table.splitlines()) == 4 + 2

    params.max_samples = 2
    metrics, rows = evaluate_model(model, tok, tokenized, test, params)
    assert len(rows) == 2 and metrics["test"]["exact_match"] == 100.0
    assert metrics["test"]["rouge1"] == 100.0  # (a 2-word answer has no 4-grams: BLEU-4 is 0)


def test_llamafactory_style_changes_bleu(answering):
    path, answer = answering
    model, tok = load_for_inference(str(path)), load_tokenizer(path)
    test = [conversation("Q?", answer + " and more words here")]
    empty = DatasetDict()
    scores = {}
    for style in ("corpus", "llamafactory"):
        params = EvaluateParams(generation=GenerationParams(max_new_tokens=8), bleu_style=style)
        scores[style] = evaluate_model(model, tok, empty, test, params)[0]["test"]["bleu4"]
    # Word BLEU of a 2-word prefix of a 6-word reference vs character BLEU (many char n-grams).
    assert scores["llamafactory"] > scores["corpus"]

