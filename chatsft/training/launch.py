"""Multi-process training: relaunch the current command under `accelerate launch`.

`train.distributed` names a config in configs/accelerate/ (ddp, fsdp, zero2, zero3_offload).
A stage started by `dvc repro` as a single process re-executes itself through accelerate,
which starts one process per GPU; a process that is already part of a launch (WORLD_SIZE
set by accelerate or torchrun) just trains.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

from chatsft.errors import UserError
from chatsft.params import TrainParams
from chatsft.training.sharding import check_sharding_device

CONFIG_DIR = Path("configs/accelerate")
_REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "accelerate"


def config_file(name: str) -> Path:
    for directory in (CONFIG_DIR, _REPO_CONFIGS):
        path = directory / f"{name}.yaml"
        if path.is_file():
            return path
    raise UserError(f"train.distributed={name}: no {CONFIG_DIR / (name + '.yaml')}")


def in_launched_process() -> bool:
    return "WORLD_SIZE" in os.environ


def launch_command(params: TrainParams, argv: list[str]) -> list[str] | None:
    """The `accelerate launch` command that reruns `argv` (a `-m module ...` list), or None
    when this process should train itself."""
    check_sharding_device(params.distributed)
    if params.distributed == "none" or in_launched_process():
        return None
    # One process per GPU; on CPU (gloo) only as many as asked for, which is for testing.
    processes = params.num_processes or torch.cuda.device_count()
    if processes < 1:
        raise UserError(f"train.distributed={params.distributed} needs GPUs (none found); "
                        "set train.distributed: none to train on CPU, or train.num_processes")
    return [sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(config_file(params.distributed)),
            "--num_processes", str(processes), *argv]


def relaunch(cmd: list[str]) -> None:
    """Run the launch and exit with its status."""
    print("train: launching " + " ".join(cmd), flush=True)
    raise SystemExit(subprocess.call(cmd))


def die_with_launcher() -> None:
    """In a launched process: be killed when the launcher dies (Linux).

    torch's elastic agent starts each rank in a session of its own, so a SIGKILL of the
    launching command's process group (a user's `kill -9`, a killed `dvc repro`) leaves the
    ranks running as orphans: measured, they trained to the end and then emptied
    models/checkpoints while the next `dvc repro` was starting to resume from it. With the
    parent-death signal, the ranks die with the agent, as they would with a node.
    """
    if not in_launched_process() or not sys.platform.startswith("linux"):
        return
    launcher = os.getppid()
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != launcher:  # the launcher died before the signal was set
        os._exit(1)
