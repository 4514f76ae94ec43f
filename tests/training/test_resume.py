"""Kill the train stage with SIGKILL (after a checkpoint, and while one is being written);
the next run resumes from the last complete checkpoint and ends where an uninterrupted run
ends."""

from __future__ import annotations

import csv
import json
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
from tests.conftest import ROOT

RUN = {"max_steps": 24, "save_steps": 4, "eval_steps": 4, "logging_steps": 1}

# Runs the stage with Trainer's RNG-state save (the step after weights, optimizer and
# scheduler are written, before the trainer state and our COMPLETE marker) paused at one
# step: a deterministic moment to kill a run in the middle of writing a checkpoint. Only
# the timing changes; what is written is Trainer's own.
PAUSE_IN_SAVE = """
import sys, time, runpy
from pathlib import Path
import transformers.trainer as t
step, flag = int(sys.argv[1]), Path(sys.argv[2])
save = t.Trainer._save_rng_state
def paused(self, output_dir):
    save(self, output_dir)
    if self.state.global_step == step:
        flag.write_text(output_dir)
        time.sleep(600)
t.Trainer._save_rng_state = paused
runpy.run_module("stages.train", run_name="__main__")
"""


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false")


def _start(ws: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, *args] if args else [sys.executable, "-m", "stages.train"]
    return subprocess.Popen(cmd, cwd=ws, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def _wait_until(proc: subprocess.Popen, done, what: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not done():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {what}:\n{proc.stdout.read()[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"timeout waiting for {what}")
        time.sleep(0.02)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _set_train(ws: Path, **train) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["train"].update(train)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_killed_runs_resume_to_the_same_result(workspace, tmp_path):
    _set_train(workspace, **RUN)
    other = tmp_path / "uninterrupted"
    shutil.copytree(workspace, other)
    _finish(_start(other))
    reference = json.loads((other / "metrics" / "train.json").read_text())

    ckpt = workspace / "models" / "checkpoints"
    # 1. Killed after checkpoint-8 is complete (somewhere in the steps after it).
    proc = _start(workspace)
    _wait_until(proc, lambda: checkpoints.is_complete(ckpt / "checkpoint-8"), "checkpoint-8")
    _kill(proc)
    # 2. Resumed, then killed while writing checkpoint-16.
    flag = tmp_path / "in_save"
    proc = _start(workspace, "-c", PAUSE_IN_SAVE, "16", str(flag))
    _wait_until(proc, flag.exists, "the save of checkpoint-16")
    _kill(proc)
    half = ckpt / "checkpoint-16"
    assert (half / "model.safetensors").exists() and not checkpoints.is_complete(half)
    assert checkpoints.last_complete(ckpt) == ckpt / "checkpoint-12"
    # 3. The next run ignores the half-written checkpoint and resumes from checkpoint-12.
    out = _finish(_start(workspace))
    assert "resuming from models/checkpoints/checkpoint-12" in out

    resumed = json.loads((workspace / "metrics" / "train.json").read_text())
    assert resumed["resumed_from_step"] == 12 and resumed["steps"] == reference["steps"] == 24
    assert abs(resumed["final_loss"] - reference["final_loss"]) < 1e-4
    assert abs(resumed["final_eval_loss"] - reference["final_eval_loss"]) < 1e-4
    assert resumed["supervised_tokens"] == reference["supervised_tokens"]
    a = load_file(other / "models" / "sft" / "model.safetensors")
    b = load_file(workspace / "models" / "sft" / "model.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # The loss curve has each step once, as if the run had never stopped.
    with open(workspace / "metrics/train/plots/metrics/train/loss.tsv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f, delimiter="\t")]
    assert steps == list(range(1, 25))
    assert [p.name for p in ckpt.iterdir()] == [checkpoints.NOTE]  # no checkpoint left
