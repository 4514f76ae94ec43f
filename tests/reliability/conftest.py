"""Fixtures for the reliability tests: real processes over tiny pipeline workspaces."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.training.conftest import tiny_splits  # noqa: F401  (a fixture)

# Small, but a real run: evaluation and a checkpoint every 4 steps, a log at every step.
RUN = {"max_steps": 12, "save_steps": 4, "eval_steps": 4, "logging_steps": 1}

# Runs the train stage, pausing for good right after checkpoint-N is marked complete: a
# deterministic moment for SIGKILL (only the timing changes, nothing of what is written).
PAUSE_AFTER_CHECKPOINT = """
import sys, time, runpy
from pathlib import Path
from chatsft.training import checkpoints
step, flag = int(sys.argv[1]), Path(sys.argv[2])
on_save = checkpoints.CompleteCheckpoints.on_save
def paused(self, args, state, control, **kwargs):
    out = on_save(self, args, state, control, **kwargs)
    if state.global_step == step:
        flag.write_text("saved")
        time.sleep(600)
    return out
checkpoints.CompleteCheckpoints.on_save = paused
runpy.run_module("stages.train", run_name="__main__")
"""


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), TOKENIZERS_PARALLELISM="false",
                HF_HUB_OFFLINE="1")


def run(args: list[str], cwd: Path, env_extra: dict | None = None,
        **kwargs) -> subprocess.CompletedProcess:
    """A real process: `python ARGS` in `cwd`, output captured."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env() | (env_extra or {}),
                          capture_output=True, text=True, timeout=600, **kwargs)


def errors_of(proc: subprocess.CompletedProcess) -> list[str]:
    """The non-empty stderr lines (warnings from libraries aside)."""
    return [line for line in proc.stderr.splitlines()
            if line.strip() and "warn" not in line.lower()]


def set_params(ws: Path, section: str, **values) -> None:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params.setdefault(section, {}).update(values)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_workspace(dst: Path, tiny_model_dir: Path, splits) -> Path:
    """Laid out like the pipeline before the train stage: models/base, data/tokenized,
    params.yaml."""
    from tests.training.helpers import tiny_params

    shutil.copytree(tiny_model_dir, dst / "models" / "base")
    splits.save_to_disk(str(dst / "data" / "tokenized"))
    params = tiny_params(**RUN).model_dump()
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dst


@pytest.fixture()
def train_workspace(tmp_path, tiny_model_dir, tiny_splits) -> Path:  # noqa: F811
    return make_workspace(tmp_path / "ws", tiny_model_dir, tiny_splits)


@pytest.fixture(scope="session")
def _killed_after_checkpoint_8(tmp_path_factory, tiny_model_dir, tiny_splits) -> Path:  # noqa: F811
    ws = make_workspace(tmp_path_factory.mktemp("killed") / "ws", tiny_model_dir, tiny_splits)
    flag = ws.parent / "saved"
    proc = subprocess.Popen([sys.executable, "-c", PAUSE_AFTER_CHECKPOINT, "8", str(flag)],
                            cwd=ws, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not flag.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before checkpoint-8:\n{proc.stdout.read()[-3000:]}")
        assert time.time() < deadline, "timeout waiting for checkpoint-8"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    return ws


@pytest.fixture()
def killed_workspace(_killed_after_checkpoint_8, tmp_path) -> Path:
    """A train stage SIGKILLed after checkpoint-8 (of 12 steps) was complete, as `dvc repro`
    leaves it: DVC deletes the stage's outputs, metrics/train included, before rerunning."""
    ws = tmp_path / "ws"
    shutil.copytree(_killed_after_checkpoint_8, ws)
    shutil.rmtree(ws / "metrics" / "train")
    return ws
