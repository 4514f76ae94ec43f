"""Two "nodes" on 127.0.0.1, launched with the README's multi-node command (one process
each), train like one process with the same global batch; and across processes the model's
own loss (what `loss: auto` falls back to under FSDP/ZeRO-3) stays per supervised token of
the whole optimizer step."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.training.test_distributed import STEPS, _run_stage, _series


def readme_multinode_command() -> list[str]:
    """The README's several-nodes `accelerate launch` command, as an argument list."""
    text = (ROOT / "README.md").read_text()
    commands = [m.group(0) for m in re.finditer(
        r"^accelerate launch [^\n]*\\\n(?:[^\n]*\\\n)*[^\n]*$", text, re.M)]
    commands = [c for c in commands if "--num_machines" in c]
    assert len(commands) == 1, commands
    return shlex.split(commands[0].replace("\\\n", " "))


def _node_command(readme: list[str], rank: int, port: int) -> list[str]:
    values = {"--machine_rank": str(rank), "--num_processes": "2",
              "--main_process_ip": "127.0.0.1", "--main_process_port": str(port)}
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    args = readme[2:]
    for i, arg in enumerate(args):
        cmd.append(values[args[i - 1]] if i and args[i - 1] in values else arg)
    return cmd


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_readme_multinode_command_is_parsed():
    cmd = readme_multinode_command()
    assert cmd[:4] == ["accelerate", "launch", "--config_file", "configs/accelerate/ddp.yaml"]
    node = _node_command(cmd, 1, 29999)
    assert node[node.index("--machine_rank") + 1] == "1"
    assert node[node.index("--num_machines") + 1] == "2"
    assert node[-2:] == ["-m", "stages.train"]


@pytest.mark.ci
def test_two_nodes_on_localhost_match_one_process(workspace, tmp_path):
    single = tmp_path / "single"
    shutil.copytree(workspace, single)
    _run_stage(single, per_device_batch_size=8)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"].update(STEPS | {"per_device_batch_size": 4})
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    shutil.copytree(ROOT / "configs", workspace / "configs")  # the command runs in a checkout
    readme, port = readme_multinode_command(), _free_port()
    nodes = [subprocess.Popen(_node_command(readme, rank, port), cwd=workspace, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    outs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [n.returncode for n in nodes] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    summary = yaml.safe_load((workspace / "metrics" / "train.json").read_text())
    assert summary["processes"] == 2
    _assert_same_run(single, workspace)


@pytest.mark.ci
def test_model_loss_is_per_token_of_the_optimizer_step_across_processes(workspace, tmp_path):
    """2 processes x 2 accumulated micro-batches of 2 rows, with the model's own loss, train
    like one process with batches of 8: each micro-batch holds a different number of
    supervised tokens, so a per-micro-batch or per-process mean would change the gradients
    (and the losses from step 2 on)."""
    single = tmp_path / "single"
    shutil.copytree(workspace, single)
    _run_stage(single, per_device_batch_size=8, loss="model")
    _run_stage(workspace, per_device_batch_size=2, gradient_accumulation_steps=2,
               loss="model", distributed="ddp", num_processes=2)
    _assert_same_run(single, workspace)


def _assert_same_run(one: Path, two: Path) -> None:
    """Losses within 1e-5 at every step (fp32; the gradient all-reduce sums in another order
    than one process does, which moves the loss in the 7th digit), eval losses, tokens."""
    a, b = _series(one, "train/loss"), _series(two, "train/loss")
    assert [s for s, _ in a] == [s for s, _ in b] == [1, 2, 3, 4]
    for (step, x), (_, y) in zip(a + _series(one, "eval/loss"), b + _series(two, "eval/loss"),
                                 strict=True):
        assert abs(x - y) < 1e-5, f"step {step}: {x} vs {y}"
    s1, s2 = (yaml.safe_load((d / "metrics" / "train.json").read_text()) for d in (one, two))
    assert s1["supervised_tokens"] == s2["supervised_tokens"]
