"""LoRA with peft on a tiny model: adapters only are trained, saved, and merged on request;
QLoRA without CUDA stops with a clear message."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from chatsft.training.run import run_training
from tests.training.helpers import tiny_params


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.fixture(scope="module")
def probe():
    return torch.randint(3, 500, (2, 24), generator=torch.Generator().manual_seed(0))


def test_lora_trains_adapters_and_merges_them(tmp_path, tiny_model_dir, tiny_splits,
                                              chatml_tokenizer, probe):
    from peft import PeftModel

    from chatsft.modeling import load_model

    params = tiny_params(method="lora", max_steps=8, learning_rate=0.01,
                         gradient_checkpointing=True,
                         lora={"r": 4, "alpha": 8, "dropout": 0.0,
                               "target_modules": ["q_proj", "v_proj"]})
    out = tmp_path / "sft"
    summary = run_training(params, tiny_model_dir, tiny_splits, chatml_tokenizer, out,
                           tmp_path / "ckpt")
    assert summary["method"] == "lora" and summary["steps"] == 8
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert set(config["target_modules"]) == {"q_proj", "v_proj"}
    assert (config["r"], config["lora_alpha"]) == (4, 8)
    adapter = load_file(out / "adapter" / "adapter_model.safetensors")
    assert adapter and all("lora_" in k and ("q_proj" in k or "v_proj" in k) for k in adapter)
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in adapter.items())

    base, merged = load_model(tiny_model_dir), load_model(out)
    base_w, merged_w = base.state_dict(), merged.state_dict()
    changed = {k for k in base_w if not torch.equal(base_w[k], merged_w[k])}
    assert changed and all("q_proj.weight" in k or "v_proj.weight" in k for k in changed)
    with_adapter = PeftModel.from_pretrained(load_model(tiny_model_dir), str(out / "adapter"))
    torch.testing.assert_close(_logits(merged, probe), _logits(with_adapter, probe),
                               atol=1e-5, rtol=1e-4)


def test_unmerged_adapter_loads_like_a_model(tmp_path, tiny_model_dir, tiny_splits,
                                             chatml_tokenizer, probe):
    from peft import PeftModel

    from chatsft.modeling import load_model

    params = tiny_params(method="lora", max_steps=4, learning_rate=0.01,
                         lora={"r": 4, "merge": False})
    out = tmp_path / "sft"
    run_training(params, tiny_model_dir, tiny_splits, chatml_tokenizer, out, tmp_path / "ckpt")
    assert (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()  # adapters only: a few KB, not the model
    loaded = load_model(out)  # what the evaluate and predict stages do
    reference = PeftModel.from_pretrained(load_model(tiny_model_dir), str(out))
    torch.testing.assert_close(_logits(loaded, probe), _logits(reference, probe))
    assert not torch.allclose(_logits(loaded, probe), _logits(load_model(tiny_model_dir), probe))


def test_qlora_without_cuda_says_so(tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer):
    from chatsft.training.lora import LoraError

    with pytest.raises(LoraError, match="needs a CUDA GPU.*train.method=lora"):
        run_training(tiny_params(method="qlora"), tiny_model_dir, tiny_splits,
                     chatml_tokenizer, tmp_path / "sft", tmp_path / "ckpt")


def test_unknown_target_module_is_a_clear_error(tmp_path, tiny_model_dir, tiny_splits,
                                                chatml_tokenizer):
    from chatsft.training.lora import LoraError

    params = tiny_params(method="lora", lora={"target_modules": ["qkv_proj"]})
    with pytest.raises(LoraError, match="train.lora.target_modules"):
        run_training(params, tiny_model_dir, tiny_splits, chatml_tokenizer, tmp_path / "sft",
                     tmp_path / "ckpt")
