"""The clean stage's core: accounting, duplicates, grouped splits, failures, outputs."""

from __future__ import annotations

import json
import random
import unicodedata

import pytest

from chatsft.data.clean import CleanError, clean_records, write_clean
from chatsft.params import DataParams
from tests.data.conftest import chat, line, write_lines


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()


def _prompts(record: dict) -> set[tuple]:
    """Every prompt of a conversation: the messages before each assistant turn, normalized."""
    msgs = record["messages"]
    return {tuple((m["role"], _norm(m["content"])) for m in msgs[:k])
            for k, m in enumerate(msgs) if m["role"] == "assistant"}


def test_no_validation_or_test_prompt_appears_in_train(tmp_path):
    rng = random.Random(0)
    questions = [f"Question {i}: what is {i} squared?" for i in range(300)]
    records = []
    for i in range(1500):
        q = rng.choice(questions)
        q = rng.choice([q, q.upper(), "  " + q.replace(" ", "  "), q.replace("?", "？")])
        turns = [q, f"Answer {i}."]
        if rng.random() < 0.5:
            turns += [rng.choice(["Why?", "And cubed?", questions[i % 300]]), f"Because {i}."]
        records.append(chat(*turns, system=rng.choice([None, "Be brief.", "Be kind."])))
    path = write_lines(tmp_path / "r.jsonl", [line(r) for r in records])
    result = clean_records(DataParams(raw=[str(path)], validation_fraction=0.1,
                                      test_fraction=0.1, seed=3))
    train = set().union(*(_prompts(r) for r in result.records("train")))
    for split in ("validation", "test"):
        held_out = result.records(split)
        assert len(held_out) > 50
        for r in held_out:
            assert not _prompts(r) & train, r
    sizes = result.report()["splits"]
    assert sum(sizes.values()) == result.report()["kept"]


def test_split_is_deterministic_and_depends_on_seed(tmp_path, demo_records):
    path = write_lines(tmp_path / "d.jsonl", [line(r) for r in demo_records])
    a = clean_records(DataParams(raw=[str(path)], seed=1))
    b = clean_records(DataParams(raw=[str(path)], seed=1))
    c = clean_records(DataParams(raw=[str(path)], seed=2))
    assert a.splits == b.splits and a.splits["test"] != c.splits["test"]
    n = len(demo_records)
    assert 0.01 * n < len(a.splits["test"]) < 0.12 * n


def test_duplicates_exact_and_near_across_sources_name_the_first_copy(clean, tmp_path):
    first = write_lines(tmp_path / "first.jsonl", [line(chat("Hello World", "Hi."))])
    second = write_lines(tmp_path / "second.jsonl", [
        line(chat("Hello World", "Hi.")),
        b'{"messages":[{"role":"user","content":"Hello World"},'
        b'{"role":"assistant","content":"Hi."}]}',
        line(chat("  hello\tWORLD ", "HI.")),
        line(chat("Ｈｅｌｌｏ World", "Hi.")),  # full-width letters: NFKC
        line(chat("Hello World", "Hi!")),
    ])
    result = clean_records(DataParams(raw=[str(first), str(second)]), strict=False)
    reasons = [(q["where"], q["reason"], q["detail"]) for q in result.quarantine]
    origin = f"{first} line 1"
    assert reasons == [
        ("line 1", "duplicate", f"same as {origin}"),
        ("line 2", "duplicate", f"same as {origin}"),
        ("line 3", "near duplicate", f"same as {origin} after normalization"),
        ("line 4", "near duplicate", f"same as {origin} after normalization"),
    ]
    assert result.report()["by_source"][str(second)]["kept"] == 1
    relaxed = clean_records(DataParams(raw=[str(first), str(second)], near_duplicates=False))
    assert [q["reason"] for q in relaxed.quarantine] == ["duplicate", "duplicate"]


def test_kept_plus_quarantined_equals_read_for_every_source(tmp_path):
    rng = random.Random(5)
    pool = [line(chat(f"q{i}", f"a{i}")) for i in range(50)] + [
        b"not json", line(chat("", "x")), line({"messages": []}), line([1])]
    paths = []
    for k in range(3):
        lines = [line(chat(f"first {k}", "ok"))] + [rng.choice(pool) for _ in range(80)]
        paths.append(str(write_lines(tmp_path / f"s{k}.jsonl", lines)))
    report = clean_records(DataParams(raw=paths)).report()
    for name in paths:
        s = report["by_source"][name]
        assert s["read"] == 81 and s["kept"] + s["quarantined"] == s["read"]
        assert sum(s["by_reason"].values()) == s["quarantined"]
    assert report["kept"] + report["quarantined"] == report["read"] == 243


def test_a_source_that_loses_every_record_stops_the_stage_with_top_reasons(clean):
    bad = [line(chat("", "a")), line(chat("q", "")), line({"text": "x"}), line(chat("q"))]
    with pytest.raises(CleanError, match=r"every one of its 4 records was rejected; top "
                                         r"reasons: empty content \(2\)"):
        clean(bad, strict=True)
    result = clean(bad)  # data check: reported, not raised
    assert result.errors and result.report()["quarantined"] == 4


def test_an_empty_source_stops_the_stage(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    with pytest.raises(CleanError, match="no records"):
        clean_records(DataParams(raw=[str(path)]))


def test_written_files_are_the_splits_and_quarantine_and_read_back(clean, tmp_path):
    records = [chat(f"q{i}", f"a{i}", system="系统") for i in range(20)]
    result = clean(records + [b"{oops"], validation_fraction=0.2, test_fraction=0.2)
    out = tmp_path / "out"
    write_clean(result, out)
    back = []
    for split in ("train", "validation", "test"):
        rows = [json.loads(x) for x in (out / f"{split}.jsonl").read_text("utf-8").splitlines()]
        # each record names its data.raw entry (for the loss per source), after its content
        assert all(list(r)[-1] == "source" and r.pop("source") == str(tmp_path / "raw.jsonl")
                   for r in rows)
        assert rows == result.records(split, ids=True)
        back += result.records(split)
    assert sorted(map(json.dumps, back)) == sorted(map(json.dumps, records))
    q = [json.loads(x) for x in (out / "quarantine.jsonl").read_text().splitlines()]
    assert q == [{"source": str(tmp_path / "raw.jsonl"), "where": "line 21",
                  "reason": "not JSON", "detail": q[0]["detail"], "text": "{oops"}]


def test_tool_records_are_kept_with_tools_or_rejected_by_param(clean):
    call = json.dumps({"name": "f", "arguments": {"x": 1}})
    rec = {"conversations": [{"from": "human", "value": "q"},
                             {"from": "function_call", "value": call},
                             {"from": "observation", "value": "r"},
                             {"from": "gpt", "value": "a"}],
           "tools": json.dumps([{"name": "f", "parameters": {"type": "object"}}])}
    kept = clean([chat("x", "y"), rec]).records("train")
    assert kept[1]["tools"] == [{"type": "function",
                                 "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert [m["role"] for m in kept[1]["messages"]] == ["user", "assistant", "tool", "assistant"]
    rejected = clean([chat("x", "y"), rec], tool_calls="reject")
    assert [q["reason"] for q in rejected.quarantine] == ["unsupported role"]


@pytest.mark.parametrize(("data", "key"), [
    ({"tool_calls": "maybe"}, "data.tool_calls"),
    ({"extra_special_tokens": ["x"]}, "data.extra_special_tokens"),
    ({"raw": [{"path": "a.jsonl", "weight": 0}]}, "data.raw.0.Source.weight"),
    ({"raw": [{"path": "a.jsonl", "format": "csv"}]}, "data.raw.0.Source.format"),
    ({"raw": [{"path": "a.jsonl", "max_samples": 0}]}, "data.raw.0.Source.max_samples"),
])
def test_data_params_reject_bad_values_naming_the_key(data, key):
    from chatsft.params import ParamsError, parse_params

    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_params({"data": data})
