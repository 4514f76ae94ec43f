"""`chatsft compare` without a browser: pairs, votes, resume, summary, DPO export."""

from __future__ import annotations

import json

import pytest

from chatsft.errors import UserError
from chatsft.io import write_jsonl
from chatsft.serve.compare import (
    VoteLog,
    add_scores,
    build_pairs,
    export_preferences,
    load_references,
    read_predictions,
    read_votes,
    summarize,
    wilson,
)

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "你是一位耐心的老师。"},
     {"role": "user", "content": "日本位于哪个洲？"}],
    [{"role": "user", "content": "Write `print(1)` in Python."}],
]
REFS = ["The capital of France is Paris.", "日本位于亚洲。", "```python\nprint(1)\n```"]


def predictions(tmp_path, name, replies):
    """An evaluate-stage predictions file (metrics/eval_predictions.jsonl's fields)."""
    path = tmp_path / f"{name}.jsonl"
    write_jsonl(path, [{"index": i, "prompt": p, "reference": r, "prediction": x}
                       for i, (p, r, x) in enumerate(zip(PROMPTS, REFS, replies, strict=True))])
    return str(path)


def make_pairs(tmp_path):
    a = predictions(tmp_path, "a", ["The capital of France is Paris.", "日本位于欧洲。",
                                    "print(1)"])
    b = predictions(tmp_path, "b", ["Paris is nice.", "日本位于亚洲。", "```python\nprint(1)\n```"])
    pairs = build_pairs(read_predictions(a), read_predictions(b))
    add_scores(pairs)
    return pairs, {"a": a, "b": b}


def test_wilson_interval_matches_the_formula():
    low, high = wilson(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)  # textbook 95% Wilson, 8/10
    assert wilson(0, 0) == (0.0, 1.0)


def test_pairs_scores_and_summary(tmp_path):
    pairs, names = make_pairs(tmp_path)
    assert [p.prompt for p in pairs] == PROMPTS
    assert {p.left for p in pairs} <= {"a", "b"} and len({p.id for p in pairs}) == 3
    first = pairs[0].scores
    assert first["a"]["bleu4"] == 100.0 and first["a"]["rougeL"] > first["b"]["rougeL"]
    log = VoteLog(tmp_path / "votes.jsonl", names)
    log.add(pairs[0], "a")
    log.add(pairs[1], "b")
    log.add(pairs[2], "tie")
    s = summarize(pairs, log.votes, names)
    assert s["counts"] == {"a": 1, "b": 1, "tie": 1, "both_bad": 0} and s["voted"] == 3
    assert s["a_win_rate"] == 0.5 and s["a_win_rate_95"] == [round(x, 4) for x in wilson(1, 2)]
    assert s["metric_agreement"] == {"pairs": 2, "rougeL_agrees": 1.0}
    assert [r["choice"] for r in s["rows"]] == ["a", "b", "tie"]
    assert s["rows"][0]["delta"]["rougeL"] == round(
        first["a"]["rougeL"] - first["b"]["rougeL"], 2)


def test_votes_survive_a_torn_line_and_resume(tmp_path):
    pairs, names = make_pairs(tmp_path)
    path = tmp_path / "votes.jsonl"
    VoteLog(path, names).add(pairs[0], "a")
    with open(path, "a") as f:
        f.write('{"id": "x", "cho')  # a crash in the middle of a write
    log = VoteLog(path, names)
    assert list(log.votes) == [pairs[0].id]
    path.write_text(path.read_text() + "\n")
    log.add(pairs[1], "both_bad")
    with pytest.raises(UserError, match="line 2"):
        read_votes(path)  # a bad line that is not the last is an error, named


def test_exported_preferences_load_as_a_dpo_dataset(tmp_path):
    from datasets import load_dataset

    pairs, names = make_pairs(tmp_path)
    log = VoteLog(tmp_path / "votes.jsonl", names)
    log.add(pairs[0], "b")
    log.add(pairs[0], "a")  # changed its mind: the last vote counts
    log.add(pairs[1], "b")
    log.add(pairs[2], "tie")  # no preference: not exported
    out = tmp_path / "prefs.jsonl"
    assert export_preferences(log.path, out) == 2
    ds = load_dataset("json", data_files=str(out), split="train")
    assert set(ds.column_names) == {"prompt", "chosen", "rejected"}
    assert ds[0]["prompt"] == PROMPTS[0]
    assert ds[0]["chosen"] == [{"role": "assistant", "content": pairs[0].replies["a"]}]
    assert ds[1]["rejected"] == [{"role": "assistant", "content": pairs[1].replies["a"]}]


def test_a_model_side_answers_the_data_prompts(tmp_path, two_word_model):
    """--a a model directory: its replies are generated from --data's prompts."""
    from chatsft.cli import build_parser
    from chatsft.cli.compare import _side

    path, answer = two_word_model
    data_file = tmp_path / "test.jsonl"
    write_jsonl(data_file, [{"messages": p + [{"role": "assistant", "content": r}]}
                            for p, r in zip(PROMPTS, REFS, strict=True)])
    data = load_references(str(data_file))
    assert [r for _, r in data] == REFS
    args = build_parser().parse_args(["compare", "--a", str(path), "--data", str(data_file)])
    side = _side(str(path), data, args)
    other = predictions(tmp_path, "b", REFS)
    pairs = build_pairs(side, read_predictions(other), data)
    assert [p.replies["a"] for p in pairs] == [answer.strip()] * 3
    assert [p.reference for p in pairs] == REFS
    assert json.loads(json.dumps(pairs[0].prompt)) == PROMPTS[0]
