"""`Layout` is the one place the pipeline's paths live: dvc.yaml names the same ones."""

from __future__ import annotations

import importlib
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from chatsft.config import Layout
from chatsft.params import Params
from tests.conftest import ROOT

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
CODE = ("chatsft/", "stages/", "configs/")


def _paths(entries: list) -> set[str]:
    return {e if isinstance(e, str) else next(iter(e)) for e in entries}


def _stage_paths(stage: dict) -> tuple[set[str], set[str]]:
    """A stage's data dependencies, and its outputs (outs, metrics and plots)."""
    deps = {d for d in _paths(stage.get("deps", [])) if not d.startswith(CODE)}
    outs = set().union(*(_paths(stage.get(k, [])) for k in ("outs", "metrics", "plots")))
    return deps, outs


def test_dvc_yaml_names_exactly_the_layouts_paths():
    layout = Layout()
    expected = {str(getattr(layout, f.name)) for f in fields(Layout)} - {
        str(layout.params), str(layout.live)}
    expected |= {str(layout.split("train")), str(layout.split("test")),
                 str(layout.live / "metrics.json"), str(layout.live / "plots"),
                 Params().predict.input}
    named = set().union(*(d | o for d, o in map(_stage_paths, DVC["stages"].values())))
    assert named == expected
    for plot in DVC["plots"]:
        for path in next(iter(plot.values()))["y"]:
            assert Path(path).is_relative_to(layout.live / "plots")


@pytest.mark.parametrize("name", sorted(DVC["stages"]))
def test_each_stage_writes_what_dvc_yaml_says(name):
    stage = importlib.import_module(f"chatsft.pipeline.{name}")
    _, outs = _stage_paths(DVC["stages"][name])
    assert {str(p) for p in stage.outputs(Layout())} <= outs
    assert DVC["stages"][name]["cmd"] == f"python -m stages.{name}"


def test_every_metrics_file_is_kept_in_git():
    """Metrics live in git (`cache: false`): a clean clone then has the committed values that
    CI compares a reproduction with, and `dvc metrics diff` / `dvc exp show` read them from any
    commit. metrics/eval_base.json was cached only, so CI could not compare it (issue 13)."""
    cached = [(name, path) for name, stage in DVC["stages"].items()
              for entry in stage.get("metrics", [])
              for path, opts in ([(entry, {})] if isinstance(entry, str) else entry.items())
              if (opts or {}).get("cache", True)]
    assert cached == []
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "metrics/eval_base.json"],
                             cwd=ROOT, capture_output=True, text=True)
    assert ignored.returncode == 1, ignored.stdout


def test_layout_survives_the_relaunch_argument(tmp_path):
    layout = Layout.in_dir(tmp_path)
    assert Layout.from_arg(layout.to_arg()) == layout
    assert layout.sft == tmp_path / "model" and layout.clean == tmp_path / "clean"
