"""Two DDP processes on CPU (gloo), launched the way users launch GPUs: `train.distributed:
ddp` makes the stage relaunch itself with `accelerate launch --config_file
configs/accelerate/ddp.yaml`. Same global batch, same per-step losses as one process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

STEPS = {"max_steps": 4, "eval_steps": 2, "save_steps": 2, "logging_steps": 1}


def _run_stage(ws: Path, **train) -> str:
    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["train"].update(STEPS | train)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, "-m", "stages.train"], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _series(ws: Path, name: str) -> list[tuple[int, float]]:
    path = ws / "metrics" / "train" / "plots" / "metrics" / f"{name}.tsv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    key = name.rsplit("/", 1)[1]
    return [(int(r["step"]), float(r[key])) for r in rows]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(workspace, tmp_path):
    import shutil

    single = tmp_path / "single"
    shutil.copytree(workspace, single)
    _run_stage(single, per_device_batch_size=8)
    out = _run_stage(workspace, per_device_batch_size=4, distributed="ddp", num_processes=2)
    assert "accelerate.commands.launch --config_file" in out
    assert "configs/accelerate/ddp.yaml --num_processes 2 -m chatsft.pipeline.train" in out

    summary = yaml.safe_load((workspace / "metrics" / "train.json").read_text())
    assert summary["processes"] == 2
    one, two = _series(single, "train/loss"), _series(workspace, "train/loss")
    assert [s for s, _ in one] == [s for s, _ in two] == [1, 2, 3, 4]
    for (step, a), (_, b) in zip(one, two, strict=True):
        assert abs(a - b) < 1e-5, f"step {step}: {a} vs {b}"
    for (_, a), (_, b) in zip(_series(single, "eval/loss"), _series(workspace, "eval/loss"),
                              strict=True):
        assert abs(a - b) < 1e-5
    # Tokens are counted over both processes.
    single_summary = yaml.safe_load((single / "metrics" / "train.json").read_text())
    assert summary["supervised_tokens"] == single_summary["supervised_tokens"]
    assert summary["real_tokens"] == single_summary["real_tokens"]
