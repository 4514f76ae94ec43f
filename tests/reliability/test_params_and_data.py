"""Reliability of params and data (issue 14, items 8-11 and 15): each test runs the real
stage or command as a process, on real files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chatsft.params import Params
from tests.conftest import ROOT
from tests.data.conftest import chat, line
from tests.reliability.stage_runs import run_in, run_stage

SHIPPED = yaml.safe_load((ROOT / "params.yaml").read_text())


def write_params(repo: Path, **sections: dict) -> None:
    params = {**SHIPPED, **sections}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_item8_schema_defaults_are_the_shipped_params_and_missing_sections_are_named(tmp_path):
    # One source of truth: a key left out of params.yaml means what the shipped file says.
    assert Params().model_dump() == SHIPPED
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "data" / "demo.jsonl", tmp_path / "data" / "demo.jsonl")
    (tmp_path / "params.yaml").write_text("")
    proc = run_stage("clean", tmp_path)
    assert proc.returncode == 1, proc.stdout
    assert "params.yaml: missing section data" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data" / "clean").exists()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tokenize": SHIPPED["tokenize"]}))
    proc = run_stage("train", tmp_path)
    assert proc.returncode == 1
    assert "params.yaml: missing sections train, model" in proc.stderr


def _conversations(prefix: str, n: int) -> list[bytes]:
    return [line(chat(f"{prefix} question {i}?", f"{prefix} answer {i}.")) for i in range(n)]


def test_item9_kept_quarantined_and_unsampled_add_up_to_read(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"\n".join(
        [*_conversations("alpha", 60), b"not json", line({"x": 1})]) + b"\n")
    (tmp_path / "b.jsonl").write_bytes(b"\n".join(_conversations("beta", 80)) + b"\n")
    write_params(tmp_path, data={**SHIPPED["data"], "raw": [
        {"path": "a.jsonl", "max_samples": 20}, {"path": "b.jsonl", "weight": 0.5}]})
    proc = run_stage("clean", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "metrics" / "clean.json").read_text())
    a, b = report["by_source"]["a.jsonl"], report["by_source"]["b.jsonl"]
    assert (a["read"], a["kept"], a["quarantined"], a["unsampled"]) == (62, 20, 2, 40)
    assert b["unsampled"] > 0 and b["quarantined"] == 0
    for counts in (a, b, report):
        assert counts["kept"] + counts["quarantined"] + counts["unsampled"] == counts["read"]
    written = {x for split in ("train", "validation", "test")
               for x in (tmp_path / "data" / "clean" / f"{split}.jsonl").read_bytes().splitlines()}
    assert len(written) == report["kept"]  # kept = the distinct records written


def test_item10_quarantine_keeps_each_rejected_record_byte_for_byte(tmp_path):
    valid = line(chat("hello?", "hi."))
    # A duplicate key (a parser keeps the last), 1.0e2, escapes and spacing a re-serialization
    # would normalize, a CRLF line end.
    dup = b'{"messages": [{"role": "user", "content": "a"}], "messages": []}'
    number = b'{"messages":  [{"role": "user", "content": 1.0e2}], "n": "caf\\u00e9"}'
    crlf = b'{"messages": [{"role": "user",   "content": "only a question"}]}'
    (tmp_path / "chats.jsonl").write_bytes(valid + b"\n" + dup + b"\n" + number + b"\n"
                                           + crlf + b"\r\n")
    elements = [b'{"messages": [{"role": "user", "content": 1.0E+2}]}', b'{"a": 1, "a": 2}',
                b'[1, 2.50]']
    (tmp_path / "array.json").write_bytes(
        b"[\n  " + line(chat("bonjour ?", "salut.")) + b" ,\n  " + b",\n\t".join(elements)
        + b"\n]\n")
    write_params(tmp_path, data={**SHIPPED["data"], "raw": ["chats.jsonl", "array.json"]})
    proc = run_stage("clean", tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(x) for x in
            (tmp_path / "data" / "clean" / "quarantine.jsonl").read_text().splitlines()]
    got = {(r["source"], r["where"]): r["text"].encode("utf-8", "surrogateescape")
           for r in rows}
    assert got == {("chats.jsonl", "line 2"): dup, ("chats.jsonl", "line 3"): number,
                   ("chats.jsonl", "line 4"): crlf, ("array.json", "index 1"): elements[0],
                   ("array.json", "index 2"): elements[1], ("array.json", "index 3"): elements[2]}


def test_item11_temporaries_left_by_a_kill_are_removed_at_the_next_start(tmp_path):
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "data" / "demo.jsonl", tmp_path / "data" / "demo.jsonl")
    write_params(tmp_path)
    # A real SIGKILL inside atomic_path, while it writes the clean stage's output folder.
    killed = run_in(tmp_path, sys.executable, "-c", (
        "import os, signal\n"
        "from chatsft.io import atomic_path\n"
        "with atomic_path('data/clean', is_dir=True) as tmp:\n"
        "    (tmp / 'train.jsonl').write_text('half written')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"))
    assert killed.returncode == -signal.SIGKILL
    (stale,) = (tmp_path / "data").glob(".clean.*")
    # What is not ours stays: names atomic_path never makes, and other outputs' temporaries.
    mine = [tmp_path / "data" / ".clean.my-notes", tmp_path / "data" / ".cleaner.abcd1234",
            tmp_path / "data" / ".clean.abcd12345"]
    for path in mine:
        path.mkdir()
    proc = run_stage("clean", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()
    assert f"removed {Path('data') / stale.name}" in proc.stderr
    assert all(path.is_dir() for path in mine)
    assert (tmp_path / "data" / "clean" / "train.jsonl").stat().st_size > 1000


def _long_record(i: int) -> dict:
    words = " ".join(f"w{(i * 7 + k) % 50}" for k in range(40 + 25 * i))
    return chat(f"Long question {i}: {words}?", f"Long answer {i}.")


@pytest.mark.slow
def test_item15_a_large_loss_to_max_length_warns_with_the_length_that_keeps_99pct(
        tmp_path, tiny_model_dir, demo_records):
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "base")
    clean = tmp_path / "data" / "clean"
    clean.mkdir(parents=True)
    train = demo_records[:90] + [_long_record(i) for i in range(10)]
    for split, records in (("train", train), ("validation", demo_records[90:95]),
                           ("test", demo_records[95:100])):
        (clean / f"{split}.jsonl").write_bytes(b"".join(line(r) + b"\n" for r in records))

    def tokenize(max_length: int) -> tuple[subprocess.CompletedProcess, dict]:
        write_params(tmp_path, tokenize={**SHIPPED["tokenize"], "max_length": max_length})
        proc = run_stage("tokenize", tmp_path)
        assert proc.returncode == 0, proc.stderr
        return proc, json.loads((tmp_path / "metrics" / "tokenize.json").read_text())["train"]

    proc, stats = tokenize(128)
    assert stats["too_long_fraction"] > 0.05
    best = stats["max_length_keeping_99pct"]
    assert best > 128
    assert (f"warning: train: {stats['quarantined']['too long']} of 100 conversations"
            in proc.stderr)
    assert f"tokenize.max_length {best} would keep 99%" in proc.stderr
    # The suggestion is right, and the smallest that is.
    _, at_best = tokenize(best)
    assert at_best["kept"] >= 99
    _, below = tokenize(best - 1)
    assert below["kept"] < 99 and at_best["max_length_keeping_99pct"] is None


@pytest.mark.slow
def test_item15_chatsft_train_says_how_many_records_were_quarantined_and_where(
        tmp_path, demo_records):
    data = tmp_path / "chats.jsonl"
    records = demo_records[:60] + [_long_record(i) for i in range(10)]
    data.write_bytes(b"".join(line(r) + b"\n" for r in records) + b"not json\n")
    out = tmp_path / "run"
    proc = run_in(tmp_path, sys.executable, "-m", "chatsft.cli", "train", "--model-name",
                  "scratch", "--data-path", str(data), "--output-dir", str(out),
                  "--max-steps", "1", "--max-length", "128", "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    clean_q = (out / "clean" / "quarantine.jsonl").read_text().splitlines()
    token_q = (out / "tokenized" / "quarantine.jsonl").read_text().splitlines()
    assert len(clean_q) == 1 and len(token_q) >= 4
    assert (f"clean: 1 of {len(records) + 1} records quarantined, with reason: "
            f"{out / 'clean' / 'quarantine.jsonl'}") in proc.stdout
    assert (f"tokenize: {len(token_q)} conversations quarantined, with reason: "
            f"{out / 'tokenized' / 'quarantine.jsonl'}") in proc.stdout
    assert "would keep 99%" in proc.stderr


def test_item13_data_raw_accepts_a_single_path(tmp_path):
    """`-S data.raw=chats.jsonl` sets a string: the clean stage takes it as a list of one."""
    (tmp_path / "chats.jsonl").write_bytes(b"\n".join(_conversations("solo", 30)) + b"\n")
    write_params(tmp_path, data={**SHIPPED["data"], "raw": "chats.jsonl"})
    proc = run_stage("clean", tmp_path)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "metrics" / "clean.json").read_text())
    assert list(report["by_source"]) == ["chats.jsonl"] and report["kept"] == 30


assert os.sep == "/"  # paths in messages below are POSIX
