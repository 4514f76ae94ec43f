"""Optimizer, precision and gradient checkpointing as the train params set them."""

from __future__ import annotations

import pytest
import torch

from chatsft.params import TokenizeParams
from chatsft.training.args import PrecisionError, resolve_precision
from chatsft.training.data import make_rows
from tests.training.helpers import losses, one_step_trainer


@pytest.fixture(scope="module")
def rows(tiny_splits):
    return make_rows(tiny_splits["train"].select(range(8)), "pad", TokenizeParams(max_length=128))


def test_precision_on_cpu():
    assert resolve_precision("auto", cuda=False) == "fp32"
    assert resolve_precision("bf16", cuda=False) == "bf16"
    assert resolve_precision("fp32", cuda=False) == "fp32"
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", cuda=False)


def test_bf16_autocast_on_cpu_keeps_fp32_weights(rows, tiny_model_dir, chatml_tokenizer,
                                                 tmp_path):
    from chatsft.model.load import load_model

    results = {}
    for precision in ("fp32", "bf16"):
        trainer, _ = one_step_trainer(load_model(tiny_model_dir), rows, tmp_path / precision,
                                      chatml_tokenizer.pad_token_id, True, precision=precision)
        trainer.train()
        results[precision] = (trainer, losses(trainer)[0])
    bf16, loss16 = results["bf16"]
    assert bf16.accelerator.mixed_precision == "bf16"
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    loss32 = results["fp32"][1]
    assert loss16 != loss32 and abs(loss16 - loss32) < 0.05 * loss32  # autocast really ran


def test_adamw_is_fused_and_skips_decay_on_biases_and_norms(rows, tiny_model_dir,
                                                            chatml_tokenizer, tmp_path):
    from chatsft.model.load import load_model

    model = load_model(tiny_model_dir)
    trainer, _ = one_step_trainer(model, rows, tmp_path, chatml_tokenizer.pad_token_id, True)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["fused"]
    names = {id(p): n for n, p in model.named_parameters()}
    decayed, not_decayed = ({names[id(p)] for p in g["params"]} for g in optimizer.param_groups)
    assert optimizer.param_groups[0]["weight_decay"] == trainer.args.weight_decay > 0
    assert optimizer.param_groups[1]["weight_decay"] == 0
    biases = {n for n in names.values() if n.endswith(".bias")}
    norms = {n for n in names.values() if "norm" in n}
    assert biases and norms  # Qwen2 has q/k/v biases and RMSNorms
    assert not_decayed == biases | norms
    assert "model.embed_tokens.weight" in decayed
    assert any(n.endswith("q_proj.weight") for n in decayed)


def test_gradient_checkpointing_gives_the_same_step(rows, tiny_model_dir, chatml_tokenizer,
                                                    tmp_path):
    from chatsft.model.load import load_model

    pad = chatml_tokenizer.pad_token_id
    runs = {}
    for gc in (False, True):
        trainer, capture = one_step_trainer(load_model(tiny_model_dir), rows, tmp_path / str(gc),
                                            pad, True, gradient_checkpointing=gc)
        trainer.train()
        assert trainer.model.is_activation_checkpointing == gc
        runs[gc] = (losses(trainer)[0], capture.grads[0])
    assert abs(runs[False][0] - runs[True][0]) < 1e-6
    for name, grad in runs[False][1].items():
        torch.testing.assert_close(grad, runs[True][1][name], atol=1e-6, rtol=1e-5)


def test_gradients_are_clipped_to_max_grad_norm(rows, tiny_model_dir, chatml_tokenizer,
                                                tmp_path):
    from chatsft.model.load import load_model

    trainer, capture = one_step_trainer(load_model(tiny_model_dir), rows, tmp_path,
                                        chatml_tokenizer.pad_token_id, True, max_grad_norm=0.05)
    trainer.train()
    before = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h][0]
    after = torch.linalg.vector_norm(torch.stack([g.norm() for g in capture.grads[0].values()]))
    assert before > 0.5  # the raw norm is well above the limit
    assert abs(after.item() - 0.05) < 1e-4
