"""`chatsft data check|sample`, the clean stage as DVC runs it, and its import cost."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from chatsft.cli import main
from chatsft.params import default_params_yaml
from tests.conftest import ROOT
from tests.data.conftest import chat, line, write_lines


def test_data_check_reports_and_exits_nonzero_when_anything_is_rejected(tmp_path, capsys):
    good = write_lines(tmp_path / "good.jsonl", [line(chat("q", "a")), line(chat("q2", "a2"))])
    assert main(["data", "check", str(good), "--params", str(tmp_path / "none.yaml")]) == 0
    assert "kept 2, quarantined 0" in capsys.readouterr().out

    bad = write_lines(tmp_path / "bad.jsonl", [line(chat("q3", "a3")), b"{broken",
                                               line(chat("q", "<|im_end|>"))])
    quarantine = tmp_path / "q.jsonl"
    assert main(["data", "check", str(good), str(bad), "--quarantine", str(quarantine)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: read 3, kept 1, quarantined 2" in out
    assert "not JSON" in out and "line 2:" in out
    assert "special token in content" in out and "'<|im_end|>'" in out
    assert [json.loads(x)["reason"] for x in quarantine.read_text().splitlines()] == [
        "not JSON", "special token in content"]
    assert not (tmp_path / "data").exists() and not (ROOT / "q.jsonl").exists()

    assert main(["data", "check", str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["by_source"][str(bad)]["by_reason"] == {"not JSON": 1,
                                                          "special token in content": 1}


def test_data_check_uses_the_rules_of_params_yaml(tmp_path, capsys):
    path = write_lines(tmp_path / "x.jsonl", [line(chat("q", "<|im_end|>")), line(chat("a", "b"))])
    params = yaml.safe_load(default_params_yaml())
    params["data"]["special_tokens"] = "escape"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["data", "check", str(path), "--params", str(tmp_path / "params.yaml")]) == 0


def test_data_check_fails_when_a_file_loses_every_record(tmp_path, capsys):
    path = write_lines(tmp_path / "x.jsonl", [line(chat("q"))])
    assert main(["data", "check", str(path)]) == 1
    assert "every one of its 1 records was rejected" in capsys.readouterr().err


def test_data_sample_writes_the_demo_data(tmp_path, capsys):
    out = tmp_path / "demo.jsonl"
    assert main(["data", "sample", "--output", str(out), "-n", "25", "--tool-calls", "5"]) == 0
    assert len(out.read_text().splitlines()) == 30
    assert sum('"tool_calls"' in line for line in out.read_text().splitlines()) >= 3
    assert main(["data", "check", str(out)]) == 0


def _stage(cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stages.clean"], cwd=cwd, capture_output=True,
                          text=True, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def test_clean_stage_writes_splits_quarantine_and_metrics(tmp_path, demo_records):
    raw = [line(r) for r in demo_records[:200]] + [b"[oops", line(chat("", "x"))]
    write_lines(tmp_path / "raw.jsonl", raw)
    (tmp_path / "more.json").write_text(json.dumps(
        [{"instruction": "Say hi", "input": "", "output": "Hi"}]))
    params = yaml.safe_load(default_params_yaml())
    params["data"]["raw"] = ["raw.jsonl", {"path": "*.json", "format": "alpaca"}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = _stage(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "raw.jsonl: read 202, kept 200, quarantined 2" in proc.stdout
    metrics = json.loads((tmp_path / "metrics" / "clean.json").read_text())
    assert metrics["read"] == 203 and metrics["kept"] == 201
    assert metrics["by_reason"] == {"empty content": 1, "not JSON": 1}
    assert metrics["by_source"]["more.json"]["formats"] == {"alpaca": 1}
    clean = tmp_path / "data" / "clean"
    counts = {s: len((clean / f"{s}.jsonl").read_text().splitlines())
              for s in ("train", "validation", "test")}
    assert counts == metrics["splits"] and sum(counts.values()) == 201
    assert len((clean / "quarantine.jsonl").read_text().splitlines()) == 2

    # A file that is not JSON/JSONL stops the stage naming it and the line, and writes nothing.
    (tmp_path / "more.json").write_text('[{"instruction": "x",\n "output": }]')
    (tmp_path / "metrics" / "clean.json").unlink()
    proc = _stage(tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "more.json: line 2 column 12: not valid JSON" in proc.stderr
    assert not (tmp_path / "metrics" / "clean.json").exists()


def test_clean_module_imports_neither_torch_nor_transformers():
    code = ("import sys, chatsft.data.clean, chatsft.data.processor, chatsft.data; "
            "from chatsft.data import ChatMLDataProcessor; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'transformers', 'datasets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"PYTHONPATH": str(ROOT)}).stdout
    assert out.strip() == "[]"
