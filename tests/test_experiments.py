"""Experiments the DVC way: precise dependencies, reproducible outputs, queued sweeps."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.pipeline_clone import ROOT, run

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def imported_library_files(stage: str) -> set[str]:
    """chatsft source files a stage imports (transitively), relative to the repo root."""
    code = (
        f"import stages.{stage}, sys\n"
        "for m in list(sys.modules.values()):\n"
        "    f = getattr(m, '__file__', None) or ''\n"
        "    if '/chatsft/' in f: print(f)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return {str(Path(f).resolve().relative_to(ROOT)) for f in out.split()}


def declared(stage: str) -> list[str]:
    return [d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage]["deps"]]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_declares_exactly_the_library_files_it_imports(stage):
    deps = declared(stage)
    lib_deps = [d for d in deps if d.startswith("chatsft")]
    # Empty package markers change nothing; an __init__ with code is a dependency like any.
    used = {f for f in imported_library_files(stage) if (ROOT / f).stat().st_size}
    missing = {f for f in used if not any(f == d or f.startswith(d.rstrip("/") + "/")
                                          for d in lib_deps)}
    assert not missing, f"{stage} imports {sorted(missing)} but dvc.yaml does not list them"
    unused = {d for d in lib_deps if not any(f == d or f.startswith(d.rstrip("/") + "/")
                                             for f in used)}
    assert not unused, f"{stage} lists {sorted(unused)} in dvc.yaml but does not import them"
    assert f"stages/{stage}.py" in deps


def lock_outs(repo: Path) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {o["path"]: o["md5"] for s in lock.values() for o in s.get("outs", [])}


# Measurements of wall time (train seconds, tokens/s) cannot repeat; everything else must.
TIMED = {"metrics/train.json", "metrics/train/metrics.json", "metrics/train/plots"}


@pytest.mark.ci  # make test-ci: about 80 s (every stage again); kept out of make test (15 min)
def test_force_repro_gives_identical_outputs(pipeline_repo):
    before = lock_outs(pipeline_repo)
    run(["dvc", "repro", "--force"], pipeline_repo)
    after = lock_outs(pipeline_repo)
    assert {"data/clean", "models/base", "data/tokenized", "models/sft"} <= set(before)
    changed = {p for p in before if before[p] != after[p]} - TIMED
    assert not changed, f"outputs differ between two runs: {sorted(changed)}"


@pytest.mark.ci  # make test-ci: about 130 s; kept out of make test (15 min)
def test_queued_sweep_runs_every_grid_point(pipeline_repo):
    repo = pipeline_repo
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "add", "-A"], repo)
    run([*git, "commit", "-qm", "baseline", "--allow-empty"], repo)
    run(["dvc", "exp", "run", "--queue", "-S", "train.learning_rate=0.001,0.002"], repo)
    run(["dvc", "queue", "start", "-j", "1"], repo)
    deadline = time.time() + 300
    while time.time() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    assert status.count("Success") == 2, status
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    rates, perplexities = set(), set()
    for commit in shown:
        for exp in commit.get("experiments") or []:
            data = exp["revs"][0]["data"]
            rates.add(data["params"]["params.yaml"]["data"]["train"]["learning_rate"])
            ppl = data["metrics"]["metrics/eval.json"]["data"]["sft"]["test"]["perplexity"]
            perplexities.add(ppl)
    assert rates == {0.001, 0.002}
    assert len(perplexities) == 2  # two real, different runs
