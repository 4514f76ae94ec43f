"""The README's runnable code blocks run as written, and CI lints before it tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from tests.conftest import ROOT

# A fenced block whose info string is `python runnable` (GitHub still highlights it).
RUNNABLE = re.compile(r"^```python runnable\n(.*?)^```$", re.S | re.M)


def runnable_blocks() -> list[str]:
    return RUNNABLE.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def test_readme_runnable_blocks_run_as_written(tmp_path):
    blocks = runnable_blocks()
    assert blocks, "the README has no block marked runnable"
    # A temporary copy of what the blocks read, so that they write nothing in the checkout.
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "data" / "demo.jsonl", tmp_path / "data" / "demo.jsonl")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    printed = ""
    for i, code in enumerate(blocks):
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                              capture_output=True, text=True)
        assert proc.returncode == 0, f"README block {i}:\n{code}\n{proc.stderr[-3000:]}"
        printed += proc.stdout
    assert "10 steps, final loss" in printed  # the training example trained


def test_ci_lints_before_it_tests():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make lint" in lines and lines.index("make lint") < lines.index("make test")
    assert "ruff check" in (ROOT / "Makefile").read_text()
