"""Loading models: safetensors only, the attention kernel chosen by model.attn_implementation,
and the base stage's starting point."""

from __future__ import annotations

import json

import pytest
import torch

from chatsft.modeling import attention_implementation, load_model, prepare_base
from chatsft.params import ModelParams, ScratchModel


def test_auto_attention_is_sdpa_without_cuda_and_explicit_choices_pass_through():
    if not torch.cuda.is_available():
        assert attention_implementation("auto") == "sdpa"
    assert attention_implementation("eager") == "eager"


@pytest.mark.parametrize("choice", ["sdpa", "eager"])
def test_loaded_model_uses_the_chosen_attention(tiny_model_dir, choice):
    model = load_model(tiny_model_dir, attn_implementation=choice)
    assert model.config._attn_implementation == choice


def test_pickled_weights_are_refused(tiny_model_dir, tmp_path):
    model = load_model(tiny_model_dir)
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # a pickle, loadable by torch
    with pytest.raises(Exception, match="cannot load the model"):
        load_model(tmp_path)


def test_scratch_base_is_written_with_its_record(tmp_path):
    split = tmp_path / "train.jsonl"
    texts = ["hello there", "你好，世界", "2 + 3 = 5"] * 20
    split.write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": t}, {"role": "assistant", "content": t[::-1]}]},
        ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    sizes = ScratchModel(vocab_size=300, hidden_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, intermediate_size=64)
    info = prepare_base(ModelParams(scratch=sizes), split, tmp_path / "base")
    assert info == json.loads((tmp_path / "base" / "base.json").read_text())
    assert info["name_or_path"] == "scratch" and info["parameters"] > 0
    assert (tmp_path / "base" / "model.safetensors").is_file()
    assert load_model(tmp_path / "base").num_parameters() == info["parameters"]
