"""The accelerate configs, loaded the way `accelerate launch` loads them, and the refusal of
FSDP/DeepSpeed on a machine without GPUs (where accelerate would silently run plain DDP)."""

from __future__ import annotations

import os
import subprocess
import sys
from unittest import mock

import pytest
import yaml

from chatsft.errors import UserError
from chatsft.params import TrainParams
from chatsft.training.launch import launch_command
from chatsft.training.run import use_chunked_loss
from chatsft.training.sharding import check_sharding_device
from tests.conftest import ROOT


def _launch_env(name: str) -> dict[str, str]:
    """The environment `accelerate launch --config_file configs/accelerate/<name>.yaml`
    gives each process (accelerate's own parser, validation and env builders)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(
        ["--config_file", str(ROOT / "configs" / "accelerate" / f"{name}.yaml"),
         "--num_processes", "2", "-m", "stages.train"])
    args, defaults, _ = _validate_launch_command(args)
    if not args.use_deepspeed:
        return prepare_multi_gpu_env(args)
    # What accelerate's launch_command sets before building a DeepSpeed launch.
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    return prepare_deepspeed_cmd_env(args)[1]


def test_fsdp_config_loads_as_fsdp2_full_shard():
    from accelerate.utils import FullyShardedDataParallelPlugin

    env = _launch_env("fsdp")
    assert env["ACCELERATE_USE_FSDP"] == "true"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
        assert not use_chunked_loss("auto", "none")  # the output layer is sharded
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)  # models/sft: a full model
    assert type(plugin.cpu_offload).__name__ == "OffloadPolicy"  # the base class: no offload
    assert not plugin.activation_checkpointing


@pytest.mark.parametrize(("name", "stage", "offload"),
                         [("zero2", 2, "none"), ("zero3_offload", 3, "cpu")])
def test_deepspeed_configs_load(name, stage, offload):
    from accelerate.utils import DeepSpeedPlugin

    env = _launch_env(name)
    with mock.patch.dict(os.environ, env):
        config = DeepSpeedPlugin().deepspeed_config
        chunked = use_chunked_loss("auto", "none")
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert zero["offload_optimizer"]["device"] == zero["offload_param"]["device"] == offload
    # Trainer fills these from train.* (a fixed value here would contradict params.yaml).
    assert config["train_micro_batch_size_per_gpu"] == config["gradient_accumulation_steps"] \
        == config["gradient_clipping"] == "auto"
    # ZeRO-3 shards the output layer: the model's own loss; ZeRO-2 keeps it whole.
    assert chunked == (stage == 2)
    if stage == 3:  # models/sft is gathered into one 16-bit model, not ZeRO shards
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


def test_ddp_config_loads_as_plain_data_parallel():
    env = _launch_env("ddp")
    assert "ACCELERATE_USE_FSDP" not in env and "ACCELERATE_USE_DEEPSPEED" not in env


@pytest.mark.parametrize("name", ["fsdp", "zero2", "zero3_offload"])
def test_sharded_launch_refused_without_gpus(name, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    params = TrainParams(distributed=name, num_processes=2)
    with pytest.raises(UserError, match=f"distributed={name}: .*silently .*plain data parallel"):
        launch_command(params, ["-m", "stages.train"])
    check_sharding_device(name, cuda=True)  # with GPUs the launch goes ahead
    # A manual `accelerate launch --config_file configs/accelerate/<name>.yaml` is caught in
    # the launched process, by the environment accelerate gives it.
    for key, value in _launch_env(name).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="silently"):
        launch_command(TrainParams(), ["-m", "stages.train"])


def test_ddp_launch_allowed_on_cpu(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cmd = launch_command(TrainParams(distributed="ddp", num_processes=2), ["-m", "x"])
    assert cmd is not None and cmd[-3:] == ["2", "-m", "x"]


def test_stage_names_the_problem_without_a_traceback(workspace):
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"].update(distributed="fsdp", num_processes=2)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "stages.train"], cwd=workspace,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0
    assert "train.distributed=fsdp: FSDP and DeepSpeed need GPUs" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
