"""Running a stage or command as a real process, in a folder laid out like the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def run_in(cwd: Path, *args: str, pythonpath: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(pythonpath),
               HF_HUB_OFFLINE="1")
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env)


def run_stage(name: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m stages.<name>` with this checkout's code, in `cwd`."""
    return run_in(cwd, sys.executable, "-m", f"stages.{name}")
