"""params.yaml schema: every key typed and documented, bad keys named before any work."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from chatsft.params import Params, ParamsError, default_params_yaml, load_params, parse_params
from tests.conftest import ROOT


def test_shipped_params_are_valid_and_complete():
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    params = parse_params(shipped)
    # Every key of the schema is present in the shipped file, so users see every knob.
    assert set(shipped) == set(Params.model_fields)
    for section, value in params.model_dump().items():
        assert set(value) == set(shipped[section]), section
    # The shipped file is the schema's defaults, written by `python -m chatsft.params`.
    assert (ROOT / "params.yaml").read_text() == default_params_yaml()
    written = subprocess.run([sys.executable, "-m", "chatsft.params"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
    assert written == default_params_yaml()


def test_every_field_has_a_description():
    def walk(model):
        for name, field in model.model_fields.items():
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)
            else:
                assert field.description, f"{model.__name__}.{name} lacks a description"

    walk(Params)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"train": {"learning_rat": 0.1}}, "train.learning_rat: unknown key"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"train": {"learning_rate": -1}}, "train.learning_rate"),
        ({"tokenize": {"max_length": 4}}, "tokenize.max_length"),
        ({"evaluate": {"generation": {"top_p": 2}}}, "evaluate.generation.top_p"),
        ({"model": {"dtype": "float8"}}, "model.dtype"),
        ({"bogus": {}}, "bogus: unknown key"),
        # Removed: the label of unsupervised tokens is the constant -100.
        ({"tokenize": {"ignore_index": -100}}, "tokenize.ignore_index: removed: the label"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ParamsError) as err:
        parse_params(override)
    assert message in str(err.value)


def test_scratch_heads_must_divide():
    with pytest.raises(ParamsError, match="model.scratch"):
        parse_params({"model": {"scratch": {"hidden_size": 100, "num_attention_heads": 6}}})


def test_load_params_merges_overrides(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(default_params_yaml())
    params = load_params(path, {"train": {"epochs": 1.5}})
    assert params.train.epochs == 1.5
    assert params.train.learning_rate == Params().train.learning_rate


def test_stage_with_bad_key_stops_before_work(tmp_path):
    """A stage exits 1 with a message naming the key, no traceback, and writes nothing."""
    raw = yaml.safe_load(default_params_yaml())
    raw["data"]["seeed"] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "stages.clean"], cwd=tmp_path, capture_output=True, text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1
    assert "data.seeed: unknown key" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()
