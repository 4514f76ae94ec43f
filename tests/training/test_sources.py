"""Eval loss per source (each data.raw entry): from clean's `source` through tokenize's column
to the trainer's per-step curves, metrics/train.json and the evaluate stage's figures."""

from __future__ import annotations

import csv
import math

import pytest
from datasets import DatasetDict

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.evaluation.perplexity import nll_by_source, supervised_nll
from chatsft.tokenize_data import to_dataset, tokenize_split
from chatsft.training.data import split_rows
from chatsft.training.run import run_training
from chatsft.training.sources import CURVES, by_source, source_names
from tests.training.helpers import tiny_params

SOURCES = ("data/a.jsonl", "data/b.jsonl")


@pytest.fixture(scope="module")
def two_source_splits(demo_records, chatml_tokenizer):
    """Demo splits whose records come from two sources, the second's conversations being
    the longer ones (so the two losses differ and packing mixes lengths)."""
    encoder = ChatEncoder(chatml_tokenizer, train_on="all", max_length=128)

    def tagged(records):
        return [r | {"source": SOURCES[i % 3 == 0]} for i, r in enumerate(records)]

    parts = {"train": demo_records[:240], "validation": demo_records[240:300],
             "test": demo_records[300:330]}
    return DatasetDict({name: to_dataset(tokenize_split(tagged(recs), encoder, name)[0])
                        for name, recs in parts.items()})


def test_eval_rows_are_packed_one_source_at_a_time(two_source_splits):
    params = tiny_params()
    _, evals = split_rows(two_source_splits, params.train, params.tokenize)
    names = source_names(two_source_splits["validation"])
    assert names == sorted(SOURCES)
    ds = two_source_splits["validation"]
    for k, part in by_source(ds):
        rows = [r for r in evals if r["source_index"] == k]
        # every token of the source's samples, and nothing else, is in its rows
        assert sorted(t for r in rows for t in r["input_ids"]) == sorted(
            t for ids in part["input_ids"] for t in ids)
        assert set(part["source"]) == {names[k]}


def test_training_logs_the_eval_loss_per_source(tmp_path, tiny_model_dir, two_source_splits,
                                                chatml_tokenizer):
    """The per-source eval losses logged during training are each source's token-weighted
    loss (the evaluate stage's computation on that source's rows alone, unpacked), combine
    to the overall eval loss, and land in the dvc plots TSV and metrics/train.json."""
    from chatsft.model.load import load_model

    params = tiny_params(max_steps=4, eval_steps=2, save_steps=2, select_best=False)
    live = tmp_path / "live"
    summary = run_training(params, tiny_model_dir, two_source_splits, chatml_tokenizer,
                           tmp_path / "sft", tmp_path / "ckpt", live_dir=live)
    logged = summary["eval_loss_by_source"]
    assert sorted(logged) == sorted(SOURCES)
    val = two_source_splits["validation"]
    model = load_model(tmp_path / "sft")
    expected = nll_by_source(model, val, chatml_tokenizer.pad_token_id)
    total_tokens = 0
    weighted = 0.0
    for name in SOURCES:
        assert logged[name] == pytest.approx(expected[name]["loss"], abs=1e-5)
        weighted += expected[name]["loss"] * expected[name]["supervised_tokens"]
        total_tokens += expected[name]["supervised_tokens"]
    assert abs(logged[SOURCES[0]] - logged[SOURCES[1]]) > 1e-3  # really two figures
    assert summary["final_eval_loss"] == pytest.approx(weighted / total_tokens, abs=1e-5)
    overall = supervised_nll(model, val, chatml_tokenizer.pad_token_id)
    assert summary["final_eval_loss"] == pytest.approx(overall["loss"], abs=1e-5)

    with open(live / CURVES, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert [(r["step"], r["source"]) for r in rows] == [
        (step, name) for step in ("2", "4") for name in (*sorted(SOURCES), "all")]
    last = {r["source"]: float(r["loss"]) for r in rows if r["step"] == "4"}
    assert last["all"] == pytest.approx(summary["final_eval_loss"], abs=1e-9)
    assert last[SOURCES[1]] == pytest.approx(logged[SOURCES[1]], abs=1e-9)


def test_evaluate_reports_perplexity_per_source(tiny_model, two_source_splits,
                                                chatml_tokenizer):
    from chatsft.evaluation.run import evaluate_model
    from chatsft.params import EvaluateParams

    metrics, _ = evaluate_model(tiny_model, chatml_tokenizer, two_source_splits, [],
                                EvaluateParams())
    for split in ("validation", "test"):
        by = metrics[split]["by_source"]
        assert sorted(by) == sorted(SOURCES)
        tokens = sum(v["supervised_tokens"] for v in by.values())
        assert tokens == metrics[split]["supervised_tokens"]
        mean = sum(v["loss"] * v["supervised_tokens"] for v in by.values()) / tokens
        assert mean == pytest.approx(metrics[split]["loss"], abs=1e-5)
        for v in by.values():
            assert v["perplexity"] == pytest.approx(math.exp(v["loss"]), rel=1e-5)


def test_data_without_sources_has_no_per_source_figures(tiny_model, tiny_splits,
                                                        chatml_tokenizer):
    ds = tiny_splits["validation"]  # demo records with no `source` (not through clean)
    assert source_names(ds) == []
    assert nll_by_source(tiny_model, ds, chatml_tokenizer.pad_token_id) == {}
    one = ds.map(lambda r: {"source": "data/demo.jsonl"})
    overall = supervised_nll(tiny_model, one, chatml_tokenizer.pad_token_id)
    assert nll_by_source(tiny_model, one, chatml_tokenizer.pad_token_id, overall=overall) == {
        "data/demo.jsonl": overall}
