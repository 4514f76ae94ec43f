"""benchmarks/gpu_check.sh: the dry run builds every part and runs one tiny step of each on
CPU where a CPU can; without a GPU the real run stops at once, naming what is missing."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
PARTS = ["loss auto", "memory model", "loss model", "sdpa_varlen vs sdpa", "fp16", "lora",
         "qlora", "zero2", "generation (batch 32)"]


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHON=str(ROOT / ".venv" / "bin" / "python"))
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_dry_run_runs_every_part(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = _run("--dry-run", "--out", str(out), "--work", str(tmp_path / "work"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["part"]: r for r in result["parts"]}
    assert list(rows) == PARTS and result["dry_run"] is True
    statuses = {name: r["status"] for name, r in rows.items()}
    assert statuses["fp16"] == statuses["qlora"] == "skipped: needs a CUDA GPU"
    assert statuses["zero2"].startswith("skipped: DeepSpeed needs a GPU")
    assert all(s == "ok" for name, s in statuses.items()
               if name not in ("fp16", "qlora", "zero2")), statuses
    for name in ("loss auto", "loss model", "lora", "zero2"):
        assert rows[name]["steps"] == 1 and rows[name]["tokens_per_s"] > 0
    # chatsft's per-sample SDPA and SDPA with a block mask: the same loss and gradients.
    assert rows["sdpa_varlen vs sdpa"]["grad_rel_diff"] < 1e-4
    assert rows["generation (batch 32)"]["tokens"] > 0
    assert rows["memory model"]["estimate_gb"] > 0
    assert "part" in proc.stdout and "tokens_per_s" in proc.stdout  # the table


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU machine")
def test_real_run_without_gpu_names_what_is_missing(tmp_path):
    proc = _run("--out", str(tmp_path / "x.json"))
    assert proc.returncode == 2
    assert "no CUDA GPU visible to torch" in proc.stderr
    assert not (tmp_path / "x.json").exists()
