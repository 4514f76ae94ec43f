"""A temporary clone of the working tree with small params, reproduced once per session.

Shared by the end-to-end and experiment tests; `dvc` runs from this venv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

BIN = Path(sys.executable).parent

SMALL = {
    "model": {"scratch": {"vocab_size": 500, "hidden_size": 32, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "num_key_value_heads": 2,
                          "intermediate_size": 64, "max_position_embeddings": 512}},
    "train": {"max_steps": 12, "per_device_batch_size": 4, "eval_steps": 6, "logging_steps": 2},
    "evaluate": {"max_samples": 12, "generation": {"max_new_tokens": 8}},
    "predict": {"generation": {"max_new_tokens": 8}},
}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(cwd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def set_params(repo: Path, override: dict) -> None:
    from chatsft.params import deep_merge

    path = repo / "params.yaml"
    params = deep_merge(yaml.safe_load(path.read_text()), override)
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


# Runs at every repro by design (always_changed): it validates params.yaml and hashes the
# data.raw files, so it is never "up to date"; clean reruns only if those files changed.
ALWAYS = {"validate"}


def stale(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed (other than the always-changed ones)."""
    out = run(["dvc", "status", "--json"], repo).stdout
    status = json.loads(out or "{}")
    assert all(status[name] == ["always changed"] for name in ALWAYS & set(status)), status
    return set(status) - ALWAYS


def ran(output: str) -> list[str]:
    """Stages a `dvc repro` output says it ran (other than the always-changed ones)."""
    names = [line.split("'")[1] for line in output.splitlines() if "Running stage" in line]
    return [name for name in names if name not in ALWAYS]


def clone_repo(dst: Path, override: dict) -> Path:
    """A git clone of the working tree (tracked and new files) at `dst`, with `override` merged
    into its params, committed."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and f != "dvc.lock":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    set_params(dst, override)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], dst)
    run(["git", "add", "-A"], dst)
    run([*git, "commit", "-qm", "clone"], dst)
    return dst


# What the first `dvc repro` of each clone printed (stdout and stderr).
REPRO_OUTPUT: dict[Path, str] = {}


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory) -> Path:
    """A clone of the working tree with the small params, reproduced."""
    dst = clone_repo(tmp_path_factory.mktemp("clone"), SMALL)
    proc = run(["dvc", "repro"], dst)
    REPRO_OUTPUT[dst] = proc.stdout + proc.stderr
    return dst
