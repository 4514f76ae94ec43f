"""sdpa_varlen: SDPA per packed sample gives transformers' SDPA results, packed or not."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from chatsft.batching.collate import Collator
from chatsft.batching.packing import pack_rows
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.model import attention
from chatsft.model.attention import NAME, supports_varlen_sdpa, varlen_sdpa_attention
from chatsft.model.load import attention_implementation


@pytest.fixture(scope="module")
def rows(demo_records, chatml_tokenizer):
    enc = ChatEncoder(chatml_tokenizer)
    out = [enc.encode(r["messages"]) for r in demo_records[20:40]]
    return pack_rows([e.input_ids for e in out], [e.labels for e in out], capacity=200)


def widened(model):
    """Wider weights than the default init, so outputs depend on the context."""
    torch.manual_seed(0)
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0.0, 0.2)
    return model


def loss_and_grads(model, batch, attn: str):
    model.set_attn_implementation(attn)
    model.zero_grad()
    out = model(**batch)
    out.loss.backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("offsets", [True, False])
def test_packed_rows_match_sdpa_in_loss_logits_and_gradients(tiny_model, chatml_tokenizer,
                                                             rows, offsets, per_sample,
                                                             monkeypatch):
    """Both ways of running a batch: one SDPA call per sample, or (short samples) one masked
    call."""
    monkeypatch.setattr(attention, "MIN_MEAN_SAMPLE", 0 if per_sample else 10**6)
    model = widened(tiny_model).train()
    batch = Collator(chatml_tokenizer.pad_token_id, varlen_kwargs=offsets)(rows[:4])
    samples = (batch["position_ids"] == 0).sum().item()
    assert samples >= 8  # several samples per row, and a padding tail
    ref, ref_grads = loss_and_grads(model, batch, "sdpa")
    out, grads = loss_and_grads(model, batch, NAME)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=0)
    assert out.loss.item() == pytest.approx(ref.loss.item(), abs=1e-6)
    for name, g in grads.items():  # measured: 1.2e-7 at most, largest entry 0.56
        torch.testing.assert_close(g, ref_grads[name], atol=1e-6, rtol=0, msg=name)


def test_padding_masks_and_cached_decoding_use_transformers_sdpa(tiny_model, chatml_tokenizer,
                                                                  demo_records):
    model = widened(tiny_model).eval()
    texts = [chatml_tokenizer.apply_chat_template(r["messages"][:2], tokenize=False,
                                                  add_generation_prompt=True)
             for r in demo_records[:3]]
    prompts = [chatml_tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])  # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    assert mask.min() == 0
    results = {}
    for attn in ("sdpa", NAME):
        model.set_attn_implementation(attn)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        tokens = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12,
                                do_sample=False, pad_token_id=0)
        results[attn] = (logits, tokens)
    assert torch.equal(results["sdpa"][0], results[NAME][0])  # the very same kernel call
    assert torch.equal(results["sdpa"][1], results[NAME][1])


def test_sliding_window_layers_are_left_to_sdpa(chatml_tokenizer, rows):
    config = Qwen2Config(vocab_size=len(chatml_tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         use_sliding_window=True, sliding_window=16, max_window_layers=1)
    assert set(config.layer_types) == {"full_attention", "sliding_attention"}
    assert not supports_varlen_sdpa(config)
    assert attention_implementation("auto", config) == "sdpa"
    torch.manual_seed(0)
    model = widened(Qwen2ForCausalLM(config)).eval()
    batch = Collator(chatml_tokenizer.pad_token_id, varlen_kwargs=True)(rows[:2])
    outs = {}
    for attn in ("sdpa", NAME):  # chosen explicitly, it still respects the windows
        model.set_attn_implementation(attn)
        with torch.no_grad():
            outs[attn] = model(**batch).logits
    torch.testing.assert_close(outs[NAME], outs["sdpa"], atol=1e-5, rtol=0)


def test_auto_picks_varlen_sdpa_on_cpu_for_full_attention_models(tiny_model):
    if torch.cuda.is_available():
        pytest.skip("auto picks a CUDA kernel here")
    assert supports_varlen_sdpa(tiny_model.config)
    assert attention_implementation("auto", tiny_model.config) == NAME
    assert attention_implementation("auto") == "sdpa"  # no config: nothing to check against
    assert tiny_model.config._attn_implementation == NAME  # load_model's auto


def test_unknown_sample_bounds_are_an_error_not_a_leak(monkeypatch):
    q = torch.randn(2, 4, 6, 8)
    kv = torch.randn(2, 2, 6, 8)
    module = torch.nn.Module()
    with pytest.raises(ValueError, match="no position_ids"):
        varlen_sdpa_attention(module, q, kv, kv, None)
    crossing = torch.tensor([0, 4, 12], dtype=torch.int32)  # 4..12 spans both rows
    with pytest.raises(ValueError, match="crosses a row"):
        varlen_sdpa_attention(module, q, kv, kv, None, cu_seq_lens_q=crossing)
    ref = torch.nn.functional.scaled_dot_product_attention(q, kv, kv, is_causal=True,
                                                           enable_gqa=True)
    module.num_key_value_groups = 2
    for shortest in (0, 10**6):  # per sample, then one masked call
        monkeypatch.setattr(attention, "MIN_MEAN_SAMPLE", shortest)
        out, _ = varlen_sdpa_attention(module, q, kv, kv, None,
                                       position_ids=torch.arange(6)[None])
        torch.testing.assert_close(out, ref.transpose(1, 2), atol=1e-6, rtol=0)
