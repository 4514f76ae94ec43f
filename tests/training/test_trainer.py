"""The loss is sum over supervised tokens / supervised tokens of the whole optimizer step,
whatever the batch shape: accumulation, padding vs packing, chunked vs the model's loss."""

from __future__ import annotations

import pytest
import torch

from chatsft.batching.packing import IGNORE, pack_rows
from chatsft.params import TokenizeParams
from chatsft.training.data import make_rows
from tests.training.helpers import losses, one_step_trainer


@pytest.fixture(scope="module")
def eight(tiny_splits):
    """Eight conversations of clearly different lengths."""
    ds = tiny_splits["train"]
    order = sorted(range(len(ds)), key=lambda i: len(ds[i]["input_ids"]))
    picked = [order[k * (len(order) - 1) // 7] for k in range(8)]
    return ds.select(picked)


def _step(model, rows, tmp_path, pad_id, chunked, **train):
    trainer, capture = one_step_trainer(model, rows, tmp_path, pad_id, chunked, **train)
    trainer.train()
    assert trainer.state.global_step == 1
    return trainer, losses(trainer)[0], capture.grads[0]


def _assert_same_grads(a: dict, b: dict) -> None:
    """Equal within 1e-6, absolute (measured: 5e-8 at most, largest entry 0.15)."""
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)


def _mean_loss(model, batch) -> float:
    """The per-micro-batch mean a naive loop would average."""
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k not in ("num_real_tokens",)}
        return model(**inputs, use_cache=False).loss.item()


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "model-loss"])
def test_accumulated_micro_batches_equal_one_batch(
    eight, tiny_model_dir, chatml_tokenizer, tmp_path, chunked
):
    from chatsft.model.load import load_model

    rows = make_rows(eight, "pad", TokenizeParams(max_length=128))
    pad = chatml_tokenizer.pad_token_id
    one, loss_one, grads_one = _step(load_model(tiny_model_dir), rows, tmp_path / "a", pad,
                                     chunked, per_device_batch_size=8)
    two, loss_two, grads_two = _step(load_model(tiny_model_dir), rows, tmp_path / "b", pad,
                                     chunked, per_device_batch_size=4,
                                     gradient_accumulation_steps=2)
    assert len(one.micro_batches) == 1 and len(two.micro_batches) == 2
    first, second = two.micro_batches
    # Different lengths and different supervised counts: the case a mean of means gets wrong.
    assert first["input_ids"].shape[1] != second["input_ids"].shape[1]
    counts = [int((b["labels"][:, 1:] != IGNORE).sum()) for b in two.micro_batches]
    assert counts[0] != counts[1]
    assert abs(loss_one - loss_two) < 1e-5
    _assert_same_grads(grads_one, grads_two)
    base = load_model(tiny_model_dir)
    naive = sum(_mean_loss(base, b) for b in two.micro_batches) / 2
    # The test would catch per-micro-batch averaging (10x the tolerance above).
    assert abs(naive - loss_one) > 1e-4


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "model-loss"])
def test_packed_rows_equal_padded_rows(eight, tiny_model_dir, chatml_tokenizer, tmp_path,
                                       chunked):
    from chatsft.model.load import load_model

    tok = TokenizeParams(max_length=128)
    padded = make_rows(eight, "pad", tok)
    packed = pack_rows(eight["input_ids"][:], eight["labels"][:], 256)
    assert len(packed) < len(padded) and any(len(set(r["position_ids"])) < len(r["position_ids"])
                                             for r in packed)  # rows do hold several samples
    pad = chatml_tokenizer.pad_token_id
    _, loss_pad, grads_pad = _step(load_model(tiny_model_dir), padded, tmp_path / "a", pad,
                                   chunked, per_device_batch_size=len(padded))
    _, loss_pack, grads_pack = _step(load_model(tiny_model_dir), packed, tmp_path / "b", pad,
                                     chunked, per_device_batch_size=len(packed),
                                     packing="pack")
    assert abs(loss_pad - loss_pack) < 1e-5
    _assert_same_grads(grads_pad, grads_pack)


def test_chunked_loss_equals_the_model_loss(eight, tiny_model_dir, chatml_tokenizer, tmp_path):
    from chatsft.model.load import load_model

    rows = make_rows(eight, "pad", TokenizeParams(max_length=128))
    pad = chatml_tokenizer.pad_token_id
    chunk, loss_chunk, grads_chunk = _step(load_model(tiny_model_dir), rows, tmp_path / "a",
                                           pad, True, per_device_batch_size=4,
                                           gradient_accumulation_steps=2)
    model, loss_model, grads_model = _step(load_model(tiny_model_dir), rows, tmp_path / "b",
                                           pad, False, per_device_batch_size=4,
                                           gradient_accumulation_steps=2)
    assert chunk.chunked_loss and not model.chunked_loss
    assert abs(loss_chunk - loss_model) < 1e-5
    _assert_same_grads(grads_chunk, grads_model)


def test_eval_loss_is_per_token_over_the_whole_set(eight, tiny_model_dir, chatml_tokenizer,
                                                   tmp_path):
    """Packed or padded, any batch size: the same eval loss, equal to a direct computation."""
    from chatsft.model.load import load_model

    tok = TokenizeParams(max_length=128)
    padded = make_rows(eight, "pad", tok)
    packed = pack_rows(eight["input_ids"][:], eight["labels"][:], 256)
    pad = chatml_tokenizer.pad_token_id
    results = []
    for rows, batch, chunked in [(padded, 3, True), (padded, 8, False), (packed, 2, True)]:
        trainer, _ = one_step_trainer(load_model(tiny_model_dir), padded, tmp_path, pad,
                                      chunked, eval_rows=rows, per_device_batch_size=batch)
        results.append(trainer.evaluate())
    model = load_model(tiny_model_dir)
    total, count = 0.0, 0
    with torch.no_grad():
        for r in padded:
            ids = torch.tensor([r["input_ids"]])
            labels = torch.tensor([r["labels"]])
            n = int((labels[:, 1:] != IGNORE).sum())
            total += model(input_ids=ids, labels=labels).loss.item() * n
            count += n
    for metrics in results:
        assert metrics["eval_supervised_tokens"] == count
        assert abs(metrics["eval_loss"] - total / count) < 1e-5
