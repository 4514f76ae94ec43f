"""What a Hugging Face user gets from models/base and models/sft, loaded from another working
directory in plain transformers and peft: the KV cache on, the tokenizer's length limit equal
to the model's context, files readable by others, LoRA adapters that name their base model
in a way that works anywhere, and no false "missing keys" warning for tied weights."""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

from chatsft.io import write_jsonl
from chatsft.model.load import prepare_base
from chatsft.params import ModelParams
from chatsft.training.lora import base_reference
from chatsft.training.run import run_training
from tests.training.helpers import tiny_params


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode)
            for p in [folder, *folder.rglob("*")]}


def assert_shared(folder: Path) -> None:
    """Readable (and folders listable) by everyone, as a plain write gives with umask 022."""
    for name, mode in modes(folder).items():
        expected = 0o755 if (folder / name).is_dir() else 0o644
        assert mode == expected, f"{name}: {oct(mode)}"


def in_pipeline_dir(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> Path:
    """A pipeline folder with models/base, made the working directory (paths relative to it,
    as the stages use them)."""
    root = tmp_path / "pipeline"
    shutil.copytree(tiny_model_dir, root / "models" / "base")
    monkeypatch.chdir(root)
    return root


def test_scratch_base_is_shared_and_its_tokenizer_knows_the_context(
        tmp_path, demo_records, tiny_sizes, monkeypatch, umask_022):
    write_jsonl(tmp_path / "train.jsonl", demo_records[:200])
    params = ModelParams(scratch=tiny_sizes.model_copy(update={"vocab_size": 500}))
    prepare_base(params, tmp_path / "train.jsonl", tmp_path / "base")
    assert_shared(tmp_path / "base")
    monkeypatch.chdir(tmp_path / "base")  # another working directory than the pipeline's
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "base"))
    assert tok.model_max_length == tiny_sizes.max_position_embeddings == 512


def test_full_model_loads_with_the_cache_on_and_no_missing_key_warning(
        tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer, monkeypatch, umask_022,
        caplog):
    root = in_pipeline_dir(tmp_path, tiny_model_dir, monkeypatch)
    params = tiny_params(max_steps=4, eval_steps=2, save_steps=2, keep_checkpoints=True)
    transformers.logging.enable_propagation()
    try:
        run_training(params, Path("models/base"), tiny_splits, chatml_tokenizer,
                     Path("models/sft"), Path("models/checkpoints"))
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            # Same run again: resumes from the last complete checkpoint.
            summary = run_training(params, Path("models/base"), tiny_splits, chatml_tokenizer,
                                   Path("models/sft"), Path("models/checkpoints"))
    finally:
        transformers.logging.disable_propagation()
    assert summary["resumed_from_step"] > 0
    assert "missing keys" not in caplog.text

    sft = root / "models" / "sft"
    assert_shared(sft)
    monkeypatch.chdir(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(str(sft))
    tok = AutoTokenizer.from_pretrained(str(sft))
    assert model.config.use_cache is True
    assert json.loads((sft / "config.json").read_text())["use_cache"] is True
    assert model.config.tie_word_embeddings  # the case that warned
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = tok.apply_chat_template([{"role": "user", "content": "Hi"}],
                                  add_generation_prompt=True, return_tensors="pt",
                                  return_dict=True)
    out = model.generate(**ids, max_new_tokens=3, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


@pytest.mark.parametrize("merge", [False, True])
def test_lora_adapter_names_a_base_that_loads_from_anywhere(
        tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer, monkeypatch, umask_022, merge):
    from peft import AutoPeftModelForCausalLM, PeftModel

    root = in_pipeline_dir(tmp_path, tiny_model_dir, monkeypatch)
    params = tiny_params(method="lora", max_steps=2, learning_rate=0.01,
                         lora={"r": 4, "merge": merge})
    run_training(params, Path("models/base"), tiny_splits, chatml_tokenizer,
                 Path("models/sft"), Path("models/checkpoints"))
    sft = root / "models" / "sft"
    adapter = sft / "adapter" if merge else sft
    assert_shared(sft)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((root / "models" / "base").resolve())

    monkeypatch.chdir(tmp_path)  # models/base means nothing here
    probe = torch.tensor([[5, 9, 14, 20]])
    peft_model = AutoPeftModelForCausalLM.from_pretrained(str(adapter))
    by_hand = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(root / "models" / "base")), str(adapter))
    with torch.no_grad():
        torch.testing.assert_close(peft_model(probe).logits, by_hand(probe).logits)
        if merge:
            merged = AutoModelForCausalLM.from_pretrained(str(sft))
            assert merged.config.use_cache is True
            torch.testing.assert_close(merged(probe).logits, by_hand(probe).logits,
                                       atol=1e-5, rtol=1e-4)


def test_base_reference_is_the_pinned_hub_id_or_an_absolute_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hub = tmp_path / "hub_base"
    hub.mkdir()
    commit = "7ae557604adf67be50417f59c2c2f167def9a775"
    (hub / "base.json").write_text(json.dumps(
        {"weights_from": "Qwen/Qwen2.5-0.5B-Instruct", "revision": commit}))
    assert base_reference("hub_base") == ("Qwen/Qwen2.5-0.5B-Instruct", commit)
    local = tmp_path / "local_base"
    (tmp_path / "weights").mkdir()
    local.mkdir()
    (local / "base.json").write_text(json.dumps({"weights_from": "weights", "revision": "main"}))
    assert base_reference("local_base") == (str(tmp_path / "weights"), None)
    (tmp_path / "scratch").mkdir()
    assert base_reference("scratch") == (str(tmp_path / "scratch"), None)
