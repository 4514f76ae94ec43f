"""Which sharded launches can run on this machine.

accelerate (1.16) runs FSDP and DeepSpeed only on accelerators. On a CPU-only machine a
launch of configs/accelerate/fsdp.yaml, zero2.yaml or zero3_offload.yaml does not fail: the
processes train as plain data parallel (DDP over gloo) without sharding anything, which a
user would take for a working FSDP or ZeRO run (measured: torch's DDP reducer warning, no
FSDP module, full optimizer state in every process). Here that is refused with the reason.

- FSDP: `AcceleratorState` switches to FSDP only from MULTI_GPU-like device types, never
  from MULTI_CPU.
- DeepSpeed: its branch requires `cpu=False`; with `use_cpu=False` on a machine without an
  accelerator, accelerate's process state resolves to one process while DeepSpeed's own
  communication (gloo through its CPU accelerator) sees all of them, and DeepSpeed stops on
  its batch-size check ("train_batch_size ... 4 != 4 * 1 * 2").
"""

from __future__ import annotations

import os

import torch

from chatsft.errors import UserError

SHARDED = ("fsdp", "zero2", "zero3_offload")


def launched_sharding() -> str | None:
    """The sharding an `accelerate launch` asked this process for (from its environment)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return "deepspeed zero-" + os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "?")
    return None


def check_sharding_device(distributed: str, cuda: bool | None = None) -> None:
    """Refuse FSDP/DeepSpeed without a GPU, whether asked by train.distributed or by a
    manual `accelerate launch --config_file ...`."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    asked = distributed if distributed in SHARDED else launched_sharding()
    if asked is None or cuda:
        return
    raise UserError(
        f"train.distributed={asked}: FSDP and DeepSpeed need GPUs, and none was found; on CPU "
        "accelerate would silently train plain data parallel with nothing sharded. Use "
        "train.distributed: ddp (with train.num_processes) to train on several CPU processes")
