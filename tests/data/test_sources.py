"""Reading sources: JSON arrays, JSONL, single objects, globs, directories, broken files."""

from __future__ import annotations

import json

import pytest

from chatsft.data.clean import clean_records
from chatsft.data.sources import SourceError, expand, read_file
from chatsft.params import DataParams, Source
from tests.data.conftest import chat, line, write_lines

A, B = chat("q1", "a1"), chat("q2", "a2")


def _values(path):
    return [(r.locator, r.value) for r in read_file(path)]


def test_json_array_jsonl_single_object_bom_and_crlf(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([A, B], indent=2))
    assert _values(tmp_path / "a.json") == [("index 0", A), ("index 1", B)]
    (tmp_path / "one.json").write_text(json.dumps(A, indent=2))
    assert _values(tmp_path / "one.json") == [("index 0", A)]
    (tmp_path / "b.jsonl").write_bytes(b"\xef\xbb\xbf" + line(A) + b"\r\n\r\n  \n" + line(B))
    assert _values(tmp_path / "b.jsonl") == [("line 1", A), ("line 4", B)]
    # JSON lines in a .json file are read as JSONL.
    (tmp_path / "c.json").write_bytes(line(A) + b"\n" + line(B) + b"\n")
    assert _values(tmp_path / "c.json") == [("line 1", A), ("line 2", B)]


@pytest.mark.parametrize(("content", "where"), [
    (b'[\n{"messages": []},\n{"messages": [}\n]', "line 3"),  # broken array
    (b"name,text\nx,y\n", "line 1"),  # CSV
    (b"data:\n  - messages: []\n", "line 1"),  # YAML
    (b"\xff\xfe{\x00}\x00\n", "line 1"),  # UTF-16
])
def test_a_file_that_is_not_json_or_jsonl_stops_naming_file_and_line(tmp_path, content, where):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=rf"bad.jsonl: {where}"):
        list(read_file(path))


def test_globs_and_directories_expand_in_sorted_order(tmp_path):
    for name in ("b.jsonl", "a.json", "sub/c.jsonl", "notes.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("[]")
    assert [p.name for p in expand(str(tmp_path))] == ["a.json", "b.jsonl", "c.jsonl"]
    assert [p.name for p in expand(str(tmp_path / "*.json*"))] == ["a.json", "b.jsonl"]
    for missing in (str(tmp_path / "nope.jsonl"), str(tmp_path / "*.parquet")):
        with pytest.raises(SourceError, match="nope|no files match"):
            expand(missing)


def test_sources_declare_format_weight_and_sample_count(tmp_path):
    write_lines(tmp_path / "chat.jsonl", [line(chat(f"q{i}", f"a{i}")) for i in range(40)])
    (tmp_path / "alp.json").write_text(json.dumps(
        [{"instruction": f"i{i}", "input": "", "output": f"o{i}"} for i in range(30)]))
    write_lines(tmp_path / "half.jsonl", [line(chat(f"h{i}", f"a{i}")) for i in range(200)])
    params = DataParams(raw=[
        Source(path=str(tmp_path / "chat.jsonl"), format="chatml", weight=2.5),
        Source(path=str(tmp_path / "alp.json"), format="alpaca", max_samples=10),
        Source(path=str(tmp_path / "half.jsonl"), weight=0.5),
    ], validation_fraction=0.2, test_fraction=0.2, seed=1)
    result = clean_records(params)
    report = result.report()
    chat_src, alp_src, half = report["by_source"].values()
    half_train = 200 - half["written"]["validation"] - half["written"]["test"]
    assert half["unsampled"] == half_train - half["written"]["train"]
    assert half["kept"] + half["unsampled"] == half["read"] == 200
    assert 0.35 * half_train < half["written"]["train"] < 0.65 * half_train
    assert chat_src["kept"] == 40 and chat_src["formats"] == {"chatml": 40}
    assert alp_src["kept"] == 10 and alp_src["unsampled"] == 20
    assert sum(alp_src["written"].values()) == 10
    train_chat = chat_src["written"]["train"]
    n_train = 40 - chat_src["written"]["validation"] - chat_src["written"]["test"]
    assert 2 * n_train <= train_chat <= 3 * n_train  # 2.5 copies: 2 or 3 of each
    assert report["splits"]["train"] == len(result.splits["train"]) == (
        train_chat + alp_src["written"]["train"] + half["written"]["train"])
    # The same params give the same bytes.
    again = clean_records(params)
    assert again.splits == result.splits


def test_a_file_listed_twice_is_an_error_not_a_flood_of_duplicates(tmp_path):
    write_lines(tmp_path / "x.jsonl", [line(A)])
    with pytest.raises(SourceError, match="listed twice"):
        clean_records(DataParams(raw=[str(tmp_path / "x.jsonl"), str(tmp_path / "*.jsonl")]))
