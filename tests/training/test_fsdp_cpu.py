"""FSDP (configs/accelerate/fsdp.yaml, FSDP2 full shard) in 2 CPU processes over gloo, in the
verification mode CHATSFT_CPU_FSDP=1 (accelerate itself runs FSDP only on GPUs; see
chatsft/training/sharding.py): the same losses as one process with the same global batch,
FSDP's checkpoint files, and a normal full safetensors model in models/sft."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from chatsft.training import checkpoints
from tests.pipeline_clone import BIN, run, set_params
from tests.training.test_distributed import _run_stage, _series
from tests.training.test_dvc_resume import _uninterrupted


@pytest.mark.ci
def test_fsdp_two_processes_match_one_process(workspace, tmp_path, monkeypatch):
    single = tmp_path / "single"
    shutil.copytree(workspace, single)
    _run_stage(single, per_device_batch_size=8, loss="model")
    monkeypatch.setenv("CHATSFT_CPU_FSDP", "1")
    out = _run_stage(workspace, per_device_batch_size=4, distributed="fsdp", num_processes=2,
                     keep_checkpoints=True)
    assert "configs/accelerate/fsdp.yaml --num_processes 2" in out
    assert "find_unused_parameters" not in out  # no DDP reducer: the model is not DDP
    # Losses within 1e-5 (fp32): FSDP reduce-scatters the gradients, summing the two
    # processes' halves in another order than one process sums the batch; that moves the
    # loss in the 7th digit (measured: at most 5e-7 over these 4 steps).
    a, b = _series(single, "train/loss"), _series(workspace, "train/loss")
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    for (step, x), (_, y) in zip(a + _series(single, "eval/loss"),
                                 b + _series(workspace, "eval/loss"), strict=True):
        assert abs(x - y) < 1e-5, f"step {step}: {x} vs {y}"
    # accelerate's FSDP checkpoint (FULL_STATE_DICT, as fsdp.yaml sets), not Trainer's own.
    ckpt = workspace / "models" / "checkpoints" / "checkpoint-4"
    assert (ckpt / "pytorch_model_fsdp.bin").is_file() and (ckpt / "optimizer.bin").is_file()
    assert not (ckpt / "optimizer.pt").exists()
    # models/sft: one full safetensors file, every weight of the base model at full shape,
    # equal to the single-process model's.
    base = load_file(workspace / "models" / "base" / "model.safetensors")
    sft = load_file(workspace / "models" / "sft" / "model.safetensors")
    ref = load_file(single / "models" / "sft" / "model.safetensors")
    assert sft.keys() == base.keys() == ref.keys()
    for key, tensor in sft.items():
        assert type(tensor) is torch.Tensor and tensor.shape == base[key].shape
        assert torch.allclose(tensor, ref[key], atol=1e-5), key
    assert not any(p.name.startswith("pytorch_model_fsdp")
                   for p in (workspace / "models" / "sft").iterdir())
    summary = yaml.safe_load((workspace / "metrics" / "train.json").read_text())
    assert summary["processes"] == 2 and os.environ["CHATSFT_CPU_FSDP"] == "1"


@pytest.mark.ci
def test_dvc_repro_resumes_a_killed_fsdp_run(pipeline_repo, tmp_path, monkeypatch):
    """SIGKILL after FSDP's checkpoint-10; `dvc repro` resumes from it (accelerate loads
    the FSDP model and optimizer state into the shards) and ends like an uninterrupted FSDP run."""
    repo, ckpt = pipeline_repo, pipeline_repo / "models" / "checkpoints"
    original = (repo / "params.yaml").read_text()
    monkeypatch.setenv("CHATSFT_CPU_FSDP", "1")
    try:
        set_params(repo, {"train": {"max_steps": 30, "eval_steps": 5, "distributed": "fsdp",
                                    "num_processes": 2}})
        reference = _uninterrupted(repo, tmp_path)
        env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(repo))
        proc = subprocess.Popen(["dvc", "repro", "train"], cwd=repo, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        deadline = time.time() + 300
        while not checkpoints.is_complete(ckpt / "checkpoint-10"):
            assert proc.poll() is None and time.time() < deadline, "no checkpoint-10"
            time.sleep(0.05)
        assert (ckpt / "checkpoint-10" / "pytorch_model_fsdp.bin").is_file()
        # dvc, the stage and accelerate; the ranks (each in a session of its own, started by
        # torch's elastic agent) die with the agent: chatsft.training.launch.die_with_launcher.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        out = run(["dvc", "repro", "train"], repo).stdout
        assert "train: resuming from models/checkpoints/checkpoint-" in out
        summary = yaml.safe_load((repo / "metrics" / "train.json").read_text())
        assert summary["steps"] == reference["steps"] == 30
        assert summary["resumed_from_step"] >= 10 and summary["processes"] == 2
        assert abs(summary["final_loss"] - reference["final_loss"]) < 1e-4
        assert abs(summary["final_eval_loss"] - reference["final_eval_loss"]) < 1e-4
        assert summary["supervised_tokens"] == reference["supervised_tokens"]
        a = load_file(tmp_path / "models" / "sft" / "model.safetensors")
        b = load_file(repo / "models" / "sft" / "model.safetensors")
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    finally:
        (repo / "params.yaml").write_text(original)
        monkeypatch.delenv("CHATSFT_CPU_FSDP")
        run(["dvc", "repro", "train"], repo)  # the original models/sft for the other tests
