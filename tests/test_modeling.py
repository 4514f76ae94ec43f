"""Loading models: safetensors only, the attention kernel chosen by model.attn_implementation,
and the base stage's starting point."""

from __future__ import annotations

import json

import pytest
import torch

from chatsft.model.load import load_model, load_tokenizer, prepare_base
from chatsft.params import ModelParams, ScratchModel


def test_loaded_model_runs_the_chosen_attention(tiny_model_dir):
    """eager materializes the attention probabilities (causal rows summing to 1), SDPA never
    does; both give the same logits."""
    ids = torch.arange(3, 15)[None]
    out = {}
    for choice in ("eager", "sdpa"):
        model = load_model(tiny_model_dir, attn_implementation=choice).eval()
        with torch.no_grad():
            out[choice] = model(input_ids=ids, output_attentions=True)
    probs = out["eager"].attentions[0][0]  # (heads, 12, 12)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:2]))
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    assert probs[:, ~causal].abs().max() == 0 and probs[:, causal].min() > 0
    assert all(a is None for a in out["sdpa"].attentions)
    torch.testing.assert_close(out["sdpa"].logits, out["eager"].logits, atol=1e-5, rtol=0)


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
    prepare_base(ModelParams(scratch=sizes), split, tmp_path / "base")
    base = tmp_path / "base"
    assert (base / "model.safetensors").is_file() and not list(base.glob("*.bin"))
    model, tok = load_model(base), load_tokenizer(base)
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (32, 1)
    # The record, against what a reader of the directory finds, counted here.
    record = json.loads((base / "base.json").read_text())
    assert record["name_or_path"] == "scratch"
    assert record["parameters"] == sum(p.numel() for p in model.parameters())
    assert record["vocab_size"] == len(tok) <= 300
    # The tokenizer was trained on the split: its texts round-trip, with the ChatML template.
    assert tok.decode(tok("你好，世界")["input_ids"]) == "你好，世界"
    assert tok.apply_chat_template([{"role": "user", "content": "hello there"}],
                                   tokenize=False) == "<|im_start|>user\nhello there<|im_end|>\n"
