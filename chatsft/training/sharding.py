"""Which sharded launches can run on this machine (and FSDP on CPU, for verification).

accelerate (1.16) runs FSDP and DeepSpeed only on accelerators. On a CPU-only machine a
launch of configs/accelerate/fsdp.yaml, zero2.yaml or zero3_offload.yaml does not fail: the
processes train as plain data parallel (DDP over gloo) without sharding anything, which a
user would take for a working FSDP or ZeRO run (measured: torch's DDP reducer warning, no
FSDP module, full optimizer state in every process). Here that is refused with the reason,
except FSDP with CHATSFT_CPU_FSDP=1, which the tests use to run the real FSDP path on CPU.

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
# Verification mode: FSDP on CPU processes (gloo), for the tests of the sharded path.
CPU_FSDP_ENV = "CHATSFT_CPU_FSDP"


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
    if asked == "fsdp" and os.environ.get(CPU_FSDP_ENV) == "1":
        if launched_sharding() == "fsdp":
            fsdp_on_cpu()
        return
    raise UserError(
        f"train.distributed={asked}: FSDP and DeepSpeed need GPUs, and none was found; on CPU "
        "accelerate would silently train plain data parallel with nothing sharded. Use "
        "train.distributed: ddp (with train.num_processes) to train on several CPU processes")


def fsdp_on_cpu() -> None:
    """Make accelerate's state FSDP in this CPU process (verification mode, CHATSFT_CPU_FSDP=1).

    accelerate leaves a CPU launch of fsdp.yaml as MULTI_CPU; torch's FSDP2 shards on CPU
    with gloo all the same. After every (re)initialization of the shared AcceleratorState
    (TrainingArguments resets it), the state is switched to FSDP with the plugin the launch
    configured (FSDP_* environment); everything after that is accelerate's, transformers'
    and torch's own FSDP code: fully_shard, the sharded optimizer, FSDP checkpoints, the
    gathered full state dict for models/sft.
    """
    import accelerate.state as state
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    init = state.AcceleratorState.__init__
    if getattr(init, "_chatsft_cpu_fsdp", False):
        return

    def switched(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        if self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            if getattr(self, "fsdp_plugin", None) is None:
                self.fsdp_plugin = (kwargs.get("fsdp_plugin")
                                    or FullyShardedDataParallelPlugin())

    switched._chatsft_cpu_fsdp = True
    state.AcceleratorState.__init__ = switched


def drop_tied_copies(state_dict: dict | None, model) -> dict | None:
    """A state dict gathered from shards (FSDP, ZeRO-3) holds tied weights (the output layer
    tied to the embeddings) as separate full tensors, which `save_pretrained` no longer
    recognizes as one (it compares storages) and would write twice: drop the tied keys, as
    it does for an unsharded model."""
    tied = getattr(model, "all_tied_weights_keys", None) or ()
    if not state_dict or not tied:
        return state_dict
    return {k: v for k, v in state_dict.items() if k not in tied}
