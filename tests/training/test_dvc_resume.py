"""Through DVC: `dvc repro` killed with SIGKILL mid-training; the next `dvc repro` keeps the
persisted checkpoints, resumes from the last complete one and ends where an uninterrupted run
ends."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from chatsft.training import checkpoints
from tests.conftest import ROOT  # noqa: F401  (the pipeline_repo fixture lives there)
from tests.pipeline_clone import BIN, run, set_params, stale


def _uninterrupted(repo: Path, out: Path) -> dict:
    """The train stage's own command, never killed, on a copy of its inputs and params."""
    for rel in ("params.yaml", "models/base", "data/tokenized"):
        if (repo / rel).is_dir():
            shutil.copytree(repo / rel, out / rel)
        else:
            shutil.copy2(repo / rel, out / rel)
    env = dict(os.environ, PYTHONPATH=str(repo))
    proc = subprocess.run([sys.executable, "-m", "stages.train"], cwd=out, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return yaml.safe_load((out / "metrics" / "train.json").read_text())


@pytest.mark.slow
def test_dvc_repro_resumes_a_killed_train_stage(pipeline_repo, tmp_path):
    repo = pipeline_repo
    assert yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["outs"][1] == {
        "models/checkpoints": {"persist": True, "cache": False}}
    original = (repo / "params.yaml").read_text()
    ckpt = repo / "models" / "checkpoints"
    try:
        set_params(repo, {"train": {"max_steps": 30, "eval_steps": 5}})
        reference = _uninterrupted(repo, tmp_path)
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(repo))
        proc = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 120
        while not checkpoints.is_complete(ckpt / "checkpoint-10"):
            assert proc.poll() is None and time.time() < deadline, "no checkpoint-10"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs
        proc.wait()
        assert "train" in stale(repo)
        out = run(["dvc", "repro", "train"], repo).stdout
        assert "train: resuming from models/checkpoints/checkpoint-" in out
        summary = yaml.safe_load((repo / "metrics" / "train.json").read_text())
        assert summary["steps"] == reference["steps"] == 30 and summary["resumed_from_step"] >= 10
        assert reference["resumed_from_step"] == 0
        # The README's claim: the resumed run ends with the uninterrupted run's loss.
        assert abs(summary["final_loss"] - reference["final_loss"]) < 1e-4
        assert abs(summary["final_eval_loss"] - reference["final_eval_loss"]) < 1e-4
        assert summary["supervised_tokens"] == reference["supervised_tokens"]
        a = load_file(tmp_path / "models" / "sft" / "model.safetensors")
        b = load_file(repo / "models" / "sft" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
        # Each step trained once: the loss curve continues, it does not start over.
        with open(repo / "metrics/train/plots/metrics/train/loss.tsv", newline="") as f:
            steps = [int(r["step"]) for r in csv.DictReader(f, delimiter="\t")]
        assert steps == list(range(2, 31, 2))  # logging_steps 2 in the clone's params
        assert "train" not in stale(repo)
        assert [p.name for p in ckpt.iterdir()] == [checkpoints.NOTE]  # no checkpoint left
    finally:
        (repo / "params.yaml").write_text(original)
        # Training is deterministic: the original models/sft comes back, so the stages
        # after train stay up to date for the other tests.
        run(["dvc", "repro", "train"], repo)
    assert stale(repo) == set()
