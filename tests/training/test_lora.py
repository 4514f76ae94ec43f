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

    from chatsft.model.load import load_model

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

    from chatsft.model.load import load_model

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


def test_lora_trains_the_rows_of_tokens_the_chat_template_added(tmp_path, chatml_tokenizer):
    """A base checkpoint given ChatML (model.chat_template): the new special tokens' rows start
    at the mean of the others and train under LoRA too (they would stay frozen otherwise)."""
    import copy

    from chatsft.model.load import apply_chat_template_choice
    from chatsft.model.scratch import build_scratch_model
    from chatsft.params import ScratchModel, TrainParams
    from chatsft.training.lora import prepare_model

    tok = copy.deepcopy(chatml_tokenizer)
    before = len(tok)
    model = build_scratch_model(tok, ScratchModel(hidden_size=32, num_hidden_layers=1,
                                                  num_attention_heads=4, num_key_value_heads=2,
                                                  intermediate_size=64))
    model.save_pretrained(tmp_path / "hub")
    added = apply_chat_template_choice(tok, "llama3", "test")
    assert added == list(range(before, len(tok)))
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "base.json").write_text(json.dumps({
        "weights_from": str(tmp_path / "hub"), "revision": None, "added_token_ids": added,
        "vocab_before_template": before}))
    peft_model = prepare_model(tmp_path / "base", TrainParams(method="lora"), "float32", None,
                               "fp32")
    emb = peft_model.get_input_embeddings()
    weight = emb.get_base_layer().weight if hasattr(emb, "get_base_layer") else emb.weight
    assert weight.shape[0] == len(tok)
    torch.testing.assert_close(weight[added[0]], weight[:before].mean(0))
    ids = torch.tensor([[added[0], 5, added[1], 7, added[-1]]])
    optim = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(3):
        loss = peft_model(input_ids=ids, labels=ids).loss
        loss.backward()
        optim.step()
        optim.zero_grad()
    deltas = [p for n, p in peft_model.named_parameters() if "trainable_tokens_delta" in n]
    assert deltas and all(d.shape[0] == len(added) and d.abs().sum(-1).gt(0).all()
                          for d in deltas)
