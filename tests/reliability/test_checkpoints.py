"""Items 3, 4 and 5 of issue 14: what a resumed run starts from is verified, a diverged or
corrupted run never becomes models/sft, and resuming keeps the whole loss curve.

Each test resumes a train stage really killed (SIGKILL) after checkpoint-8 of 12, with the
checkpoint's files really overwritten or cut short on disk."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.reliability.conftest import run

CKPT = Path("models/checkpoints")


def _data_start(path: Path) -> int:
    """Offset of a safetensors file's tensor bytes (after the 8-byte length and header)."""
    with open(path, "rb") as f:
        return 8 + struct.unpack("<Q", f.read(8))[0]


def _finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(path).values())


def _summary(ws: Path) -> dict:
    return json.loads((ws / "metrics" / "train.json").read_text())


@pytest.mark.slow
def test_item3_corrupted_checkpoint_is_not_resumed(killed_workspace):
    """Item 3: bytes overwritten inside checkpoint-8/model.safetensors (same size, as NaN)
    are detected by the checksums recorded with the COMPLETE marker; the run falls back to
    checkpoint-4, says so, and models/sft holds finite weights."""
    ws = killed_workspace
    weights = ws / CKPT / "checkpoint-8" / "model.safetensors"
    size = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.seek(_data_start(weights))
        f.write(b"\xff" * 4096)  # float32 NaN
    assert weights.stat().st_size == size
    proc = run(["-m", "stages.train"], ws)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("not resuming from models/checkpoints/checkpoint-8: model.safetensors does not "
            "match its recorded SHA-256") in proc.stdout
    assert "resuming from models/checkpoints/checkpoint-4" in proc.stdout
    assert _summary(ws)["resumed_from_step"] == 4 and _summary(ws)["steps"] == 12
    assert _finite(ws / "models" / "sft" / "model.safetensors")


@pytest.mark.slow
def test_item3_non_finite_loss_stops_training_and_writes_no_model(train_workspace):
    """Item 3: a NaN weight in the base model makes the loss NaN at the first step; the stage
    stops with one clear line and exit status 1, and writes no models/sft."""
    ws = train_workspace
    base = ws / "models" / "base" / "model.safetensors"
    tensors = load_file(base)
    tensors["model.norm.weight"][0] = float("nan")
    save_file(tensors, base, metadata={"format": "pt"})
    proc = run(["-m", "stages.train"], ws)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "error: train: loss is nan at step 1: training diverged" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (ws / "models" / "sft").exists()
    assert not any((ws / "models").glob(".sft*"))


@pytest.mark.slow
def test_item4_truncated_checkpoint_is_skipped(killed_workspace):
    """Item 4: checkpoint-8's optimizer state cut short on disk gives a message and a resume
    from checkpoint-4, not a traceback on every later run."""
    ws = killed_workspace
    optimizer = ws / CKPT / "checkpoint-8" / "optimizer.pt"
    size = optimizer.stat().st_size
    with open(optimizer, "r+b") as f:
        f.truncate(size // 2)
    proc = run(["-m", "stages.train"], ws)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (f"not resuming from models/checkpoints/checkpoint-8: optimizer.pt has {size // 2} "
            f"bytes, {size} were written (truncated)") in proc.stdout
    assert _summary(ws)["resumed_from_step"] == 4
    assert not (ws / CKPT / "checkpoint-8").exists() or not list((ws / CKPT).iterdir())


@pytest.mark.slow
def test_item5_resume_keeps_the_whole_loss_curve(killed_workspace):
    """Item 5: DVC deleted metrics/train before the rerun; the curve is restored from the
    checkpoint's copy, so loss.tsv has every step once, 1 to 12."""
    ws = killed_workspace
    assert not (ws / "metrics" / "train").exists()
    proc = run(["-m", "stages.train"], ws)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from models/checkpoints/checkpoint-8" in proc.stdout
    for name, steps in (("train/loss", list(range(1, 13))), ("eval/loss", [4, 8, 12])):
        with open(ws / f"metrics/train/plots/metrics/{name}.tsv", newline="") as f:
            assert [int(r["step"]) for r in csv.DictReader(f, delimiter="\t")] == steps
