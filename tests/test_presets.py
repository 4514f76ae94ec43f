"""Presets: valid params, parameter counts of the real models, estimates within the stated
GPU budget, and a `dvc exp run -S` command that DVC applies to exactly the preset's values."""

from __future__ import annotations

import shlex

import pytest
import yaml

from chatsft.params import Params, load_params
from chatsft.presets import ARCHITECTURES, PRESETS, dvc_command, estimate_memory, get_preset
from tests.conftest import ROOT

# Published sizes (model cards / safetensors metadata), in billions of parameters.
PUBLISHED = {"qwen2.5-0.5b": 0.494, "qwen2.5-1.5b": 1.544, "qwen2.5-7b": 7.616,
             "qwen2.5-14b": 14.77, "qwen2.5-32b": 32.76, "qwen2.5-72b": 72.71,
             "llama-3-8b": 8.030, "llama-3-70b": 70.55}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_parameter_counts_match_the_published_sizes(name):
    assert ARCHITECTURES[name].parameters() / 1e9 == pytest.approx(PUBLISHED[name], rel=0.005)


def test_every_size_the_issue_names_has_a_preset():
    sizes = {"qwen2.5-" + s for s in ("0.5b", "1.5b", "7b", "14b", "32b", "72b")}
    assert sizes | {"llama-3-8b", "llama-3-70b"} == set(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_fits_its_gpu_budget(name):
    p = PRESETS[name]
    mem = estimate_memory(p)
    assert 0 < mem["total"] <= 0.9 * p.gpu_memory_gb, mem
    # A full fine-tune without sharding would not fit the big ones: the recipe matters.
    if p.arch.parameters() > 7e9:
        assert p.method != "full" or p.distributed != "none"


def test_memory_model_by_hand():
    """Qwen2.5-0.5B full fine-tuning, one GPU: 16 bytes per parameter plus activations."""
    p = PRESETS["qwen2.5-0.5b"]
    a, tokens = p.arch, p.batch * p.max_length
    weights = 16 * a.parameters()
    activations = 2 * tokens * a.hidden * a.layers + 34 * tokens * a.hidden
    loss = 12 * 2**25
    expected = (1.1 * (weights + activations + loss) + 1e9) / 1e9
    assert estimate_memory(p)["total"] == pytest.approx(expected, abs=0.06)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dvc_command_sets_exactly_the_preset_values(name, tmp_path):
    from dvc.utils.hydra import apply_overrides

    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    cmd = dvc_command(PRESETS[name])
    assert cmd[:3] == ["dvc", "exp", "run"]
    sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-S"]
    apply_overrides(path, sets)  # what `dvc exp run -S` does to params.yaml
    applied = load_params(path)
    model, data, training = get_preset(name)
    assert applied.model.name_or_path == model.name_or_path
    assert applied.model.dtype == model.dtype
    assert applied.tokenize.max_length == data.tokenize.max_length
    assert applied.train == training.model_copy(update={
        k: getattr(applied.train, k) for k in type(training).model_fields
        if k not in PRESETS[name].overrides()["train"]})
    assert shlex.split(shlex.join(cmd)) == cmd


def test_preset_sections_build_valid_params():
    model, data, training = get_preset("qwen2.5-72b", data_path="my.jsonl")
    assert data.raw == ["my.jsonl"] and training.method == "qlora"
    params = Params(model=model, tokenize=data.tokenize, train=training)
    assert params.train.lora.target_modules == "all-linear"


def test_cli_prints_the_preset(capsys):
    from chatsft.cli import main

    assert main(["preset", "qwen2.5-7b"]) == 0
    out = capsys.readouterr().out
    assert "estimated peak memory per GPU" in out and "-S train.distributed=zero2" in out
    assert main(["preset", "qwen2.5-7b", "--format", "yaml"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["learning_rate"] == 1e-5
    assert main(["preset"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(PRESETS)
    with pytest.raises(SystemExit):
        main(["preset", "gpt-5"])
    assert "unknown preset 'gpt-5'" in capsys.readouterr().err
