"""The tokenize stage's output does not depend on the day it runs (issue 13, item 4).

A template that writes today's date (Llama-3.2 calls `strftime_now`) renders with
`tokenize.template_date`; two `dvc repro --force -s tokenize` runs under different clocks give
the same `data/tokenized` hash. The control, `template_date: null`, shows the clock would
otherwise change it. The clock is faked in the stage processes by a `sitecustomize` module.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from chatsft.model.scratch import CHATML_TEMPLATE
from tests.pipeline_clone import BIN, SMALL, clone_repo, set_params

pytestmark = pytest.mark.slow

# The clock of chatsft.template_kwargs (what strftime_now reads when no date is pinned) set to
# one day, in every process of the stage. Replacing datetime.datetime itself would break C
# extensions (pyarrow), so the module's `dt` is swapped once it has been imported.
FAKE_CLOCK = """import builtins, datetime, sys, types

class _Clock(datetime.datetime):
    @classmethod
    def now(cls, tz=None):
        return datetime.datetime.fromisoformat("{day}T12:00")

_import = builtins.__import__

def _patched(name, *args, **kwargs):
    module = _import(name, *args, **kwargs)
    target = sys.modules.get("chatsft.template_kwargs")
    if isinstance(getattr(target, "dt", None), types.ModuleType):  # imported, not yet faked
        target.dt = types.SimpleNamespace(datetime=_Clock)
    return module

builtins.__import__ = _patched
"""
DATED = "{{- '<|im_start|>system\\nToday is ' + strftime_now('%d %b %Y') + '<|im_end|>\\n' }}"


def tokenize_on(repo: Path, day: str, tmp: Path) -> str:
    """`dvc repro --force -s tokenize` with the clock at `day`; the output's hash."""
    fake = tmp / day
    fake.mkdir(exist_ok=True)
    (fake / "sitecustomize.py").write_text(FAKE_CLOCK.format(day=day))
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=f"{fake}:{repo}")
    proc = subprocess.run(["dvc", "repro", "--force", "-s", "tokenize"], cwd=repo, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return next(o["md5"] for o in lock["stages"]["tokenize"]["outs"]
                if o["path"] == "data/tokenized")


def test_tokenize_output_is_the_same_on_any_day(tmp_path):
    repo = clone_repo(tmp_path / "repo", SMALL)
    (repo / "data" / "dated.jinja").write_text(DATED + CHATML_TEMPLATE)
    set_params(repo, {"model": {"chat_template": "data/dated.jinja"}})
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(repo))
    subprocess.run(["dvc", "repro", "tokenize"], cwd=repo, env=env, check=True,
                   capture_output=True)
    assert tokenize_on(repo, "2026-03-01", tmp_path) == tokenize_on(repo, "2026-07-15",
                                                                    tmp_path)
    set_params(repo, {"tokenize": {"template_date": None}})
    assert tokenize_on(repo, "2026-03-01", tmp_path) != tokenize_on(repo, "2026-07-15",
                                                                    tmp_path)
