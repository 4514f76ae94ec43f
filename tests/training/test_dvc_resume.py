"""Through DVC: `dvc repro` killed with SIGKILL mid-training; the next `dvc repro` keeps the
persisted checkpoints and resumes from the last complete one."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import yaml

from chatsft.training import checkpoints
from tests.conftest import ROOT  # noqa: F401  (the pipeline_repo fixture lives there)
from tests.pipeline_clone import BIN, run, set_params, stale


@pytest.mark.slow
def test_dvc_repro_resumes_a_killed_train_stage(pipeline_repo):
    repo = pipeline_repo
    assert yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]["train"]["outs"][1] == {
        "models/checkpoints": {"persist": True, "cache": False}}
    original = (repo / "params.yaml").read_text()
    ckpt = repo / "models" / "checkpoints"
    try:
        set_params(repo, {"train": {"max_steps": 30, "eval_steps": 5}})
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
        assert summary["steps"] == 30 and summary["resumed_from_step"] >= 10
        assert "train" not in stale(repo) and list(ckpt.iterdir()) == []
    finally:
        (repo / "params.yaml").write_text(original)
        # Training is deterministic: the original models/sft comes back, so the stages
        # after train stay up to date for the other tests.
        run(["dvc", "repro", "train"], repo)
    assert stale(repo) == set()
