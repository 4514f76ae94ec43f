"""Reliability of the DVC pipeline (issue 14, items 12-14 and 16), with real `dvc` commands in
a reproduced clone of the repository."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.pipeline_clone import ran, run
from tests.reliability.stage_runs import run_in, run_stage

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]


@pytest.fixture(scope="module")
def repo(pipeline_repo, tmp_path_factory) -> Path:
    """A copy of the reproduced clone, with its dvc.lock and metrics committed."""
    dst = tmp_path_factory.mktemp("dvc_safety") / "repo"
    shutil.copytree(pipeline_repo, dst, symlinks=True)
    run(["git", "add", "-A"], dst)
    run([*GIT, "commit", "-qm", "reproduced", "--allow-empty"], dst)
    return dst


def dvc(repo: Path, *args: str):
    return run_in(repo, "dvc", *args, pythonpath=repo)


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(f.relative_to(folder)): (hashlib.sha256(f.read_bytes()).hexdigest(),
                                          f.stat().st_mtime_ns)
            for f in sorted(folder.rglob("*")) if f.is_file()}


def test_item12_a_broken_dvc_lock_is_detected_with_the_command_that_restores_it(repo):
    lock = repo / "dvc.lock"
    good = lock.read_bytes()
    assert run_in(repo, sys.executable, "-m", "chatsft.stage", pythonpath=repo).returncode == 0
    try:
        # DVC writes dvc.lock in place (open "w+"), so a kill can cut it anywhere.
        dvc_failed = 0
        for cut in [0, *range(97, len(good), len(good) // 7)]:
            lock.write_bytes(good[:cut])
            if dvc(repo, "status").returncode == 0:
                continue
            dvc_failed += 1
            check = run_in(repo, sys.executable, "-m", "chatsft.stage", pythonpath=repo)
            assert check.returncode == 1, (cut, check.stderr)
            assert "dvc.lock is broken" in check.stderr and "git checkout dvc.lock" in check.stderr
            assert "Traceback" not in check.stderr
        assert dvc_failed >= 1  # how many cuts DVC itself tolerates depends on the lock
        # `make repro` stops before dvc with that message; a stage's entry says it too.
        lock.write_bytes(b"")
        clean_before = snapshot(repo / "data" / "clean")
        venv = Path(sys.executable).parent.parent
        make = run_in(repo, "make", "-o", str(venv / ".installed"), "repro", f"VENV={venv}",
                      pythonpath=repo)
        assert make.returncode != 0
        assert "dvc.lock is broken: it is empty" in make.stderr
        assert "Running stage" not in make.stdout and lock.read_bytes() == b""
        stage = run_in(repo, sys.executable, "-m", "stages.clean", pythonpath=repo)
        assert stage.returncode == 1 and "git checkout dvc.lock" in stage.stderr
        assert snapshot(repo / "data" / "clean") == clean_before
        # The command it names restores a working pipeline.
        run(["git", "checkout", "dvc.lock"], repo)
        assert ran(dvc(repo, "repro", "--dry").stdout) == []
    finally:
        lock.write_bytes(good)


def test_item13_clean_reruns_when_a_user_data_file_changes(repo):
    chats = repo / "mydata" / "chats.jsonl"
    chats.parent.mkdir()
    chats.write_bytes(b"".join((repo / "data" / "demo.jsonl").read_bytes().splitlines(True)[:200]))
    try:
        # data.raw as a single path, the way `dvc exp run -S` sets it.
        proc = dvc(repo, "exp", "run", "-S", "data.raw=mydata/chats.jsonl", "clean")
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert "clean" in ran(proc.stdout)
        report = json.loads((repo / "metrics" / "clean.json").read_text())
        assert list(report["by_source"]) == ["mydata/chats.jsonl"] and report["read"] == 200
        assert ran(dvc(repo, "repro", "clean").stdout) == []  # nothing changed: no rerun
        with open(chats, "ab") as f:
            f.write(b'{"messages": [{"role": "user", "content": "A new question?"}, '
                    b'{"role": "assistant", "content": "A new answer."}]}\n')
        proc = dvc(repo, "repro", "clean")
        assert proc.returncode == 0 and ran(proc.stdout) == ["clean"], proc.stdout
        assert json.loads((repo / "metrics" / "clean.json").read_text())["read"] == 201
        sources = json.loads((repo / "data" / "sources.json").read_text())
        assert [s["path"] for s in sources] == ["mydata/chats.jsonl"]
        assert sources[0]["sha256"] == hashlib.sha256(chats.read_bytes()).hexdigest()
    finally:
        shutil.rmtree(chats.parent)
        run(["git", "checkout", "params.yaml", "metrics"], repo)
        run(["dvc", "repro", "clean"], repo)


def test_item14_a_bad_key_stops_the_pipeline_before_any_output_is_removed(repo):
    sft = snapshot(repo / "models" / "sft")
    metrics = snapshot(repo / "metrics")
    assert sft and (repo / "metrics" / "train.json").exists()
    try:
        proc = dvc(repo, "exp", "run", "-S", "+train.learning_rat=0.1")
        assert proc.returncode != 0
        assert "train.learning_rat: unknown key" in proc.stdout + proc.stderr
        assert snapshot(repo / "models" / "sft") == sft
        assert snapshot(repo / "metrics") == metrics
        run(["git", "checkout", "params.yaml"], repo)
        # The same with `dvc repro` and a typo in a section name.
        params = (repo / "params.yaml").read_text()
        (repo / "params.yaml").write_text(params.replace("evaluate:", "evalute:", 1))
        proc = dvc(repo, "repro")
        assert proc.returncode != 0 and "evalute: unknown key" in proc.stdout + proc.stderr
        assert ran(proc.stdout) == []
        assert snapshot(repo / "models" / "sft") == sft
        assert snapshot(repo / "metrics") == metrics
    finally:
        run(["git", "checkout", "params.yaml"], repo)


def test_item16_ci_compares_reproduced_metrics_with_the_committed_ones(repo):
    assert ".ci/compare_metrics.py" in (ROOT / ".ci" / "run").read_text()
    script = [sys.executable, str(ROOT / ".ci" / "compare_metrics.py")]
    path = repo / "metrics" / "eval.json"
    committed = path.read_text()

    def compare(edit) -> object:
        metrics = json.loads(committed)
        edit(metrics)
        path.write_text(json.dumps(metrics))
        return run_in(repo, *script, pythonpath=repo)

    try:
        same = compare(lambda m: None)
        assert same.returncode == 0, same.stderr
        within = compare(lambda m: m["sft"]["test"].update(
            perplexity=m["sft"]["test"]["perplexity"] * 1.05))
        assert within.returncode == 0, within.stderr
        worse = compare(lambda m: m["sft"]["test"].update(
            perplexity=m["sft"]["test"]["perplexity"] * 1.5))
        assert worse.returncode == 1
        assert "metrics/eval.json sft.test.perplexity" in worse.stderr
        count = compare(lambda m: m["sft"]["test"].update(samples=m["sft"]["test"]["samples"] + 1))
        assert count.returncode == 1 and "sft.test.samples" in count.stderr
    finally:
        path.write_text(committed)


def test_item16_tool_call_scores_and_the_base_scores_have_tolerances():
    """Fractions of tool-call turns move across CPUs like the other scores (0.760 committed,
    0.793 reproduced on another CPU, which the exact rule failed), and the untrained base's
    scores (metrics/eval_base.json) follow the eval rules, not the exact one."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_metrics",
                                                  ROOT / ".ci" / "compare_metrics.py")
    cm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cm)
    for key in ("sft.test.tool_call_arguments_exact", "sft.test.tool_call_name_accuracy"):
        assert cm.check("metrics/eval.json", key, 0.7603, 0.7934) is None
        assert cm.check("metrics/eval.json", key, 0.7603, 0.60) is not None
    assert cm.check("metrics/eval.json", "sft.test.tool_call_turns", 121, 122) is not None
    assert cm.check("metrics/eval_base.json", "test.perplexity", 2954.6, 2960.0) is None
    assert cm.check("metrics/eval_base.json", "test.bleu4", 0.0103, 0.5) is None
    assert cm.check("metrics/eval_base.json", "test.perplexity", 2954.6, 4000.0) is not None


def test_item12_stage_entry_runs_with_a_sound_lock(repo):
    """The check does not refuse a good lock (the pipeline's own, just reproduced)."""
    assert run_stage("validate", repo).returncode == 0
