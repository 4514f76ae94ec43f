"""NEFTune: noise on the input embeddings in training mode only, scaled per sample, also
under packing and LoRA; never in evaluation or generation."""

from __future__ import annotations

import math

import pytest
import torch

from chatsft.batching.collate import Collator
from chatsft.batching.packing import pack_rows
from chatsft.training.neftune import NEFTune, neftune, token_scales
from chatsft.training.run import run_training
from tests.training.helpers import tiny_params

ALPHA = 5.0


class EmbeddingCapture:
    """Records what the embedding layer hands to the decoder (after NEFTune's hook, which is
    registered first)."""

    def __init__(self, model) -> None:
        self.outputs: list[torch.Tensor] = []
        self.handle = model.get_input_embeddings().register_forward_hook(
            lambda module, args, out: self.outputs.append(out.detach().clone()))


def _samples(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 500, (n,), generator=g).tolist() for n in lengths]


def test_noise_only_in_training_mode_and_never_in_generation(tiny_model):
    ids = torch.tensor(_samples([12, 12]))
    plain = tiny_model.get_input_embeddings()(ids).detach()
    with neftune(tiny_model, ALPHA):
        capture = EmbeddingCapture(tiny_model)
        tiny_model.train()
        tiny_model(input_ids=ids)
        tiny_model(input_ids=ids)
        tiny_model.eval()
        tiny_model(input_ids=ids)
        tiny_model(input_ids=ids)
        generated = tiny_model.generate(ids[:1], max_new_tokens=4, do_sample=False)
    first, second, eval1, eval2, prompt = capture.outputs[:5]
    assert not torch.equal(first, second)  # fresh noise at every training step
    assert not torch.equal(first, plain)
    assert torch.equal(eval1, plain) and torch.equal(eval2, plain)
    assert torch.equal(prompt, plain[:1])
    capture.handle.remove()
    # Same greedy continuation as without NEFTune; and the hooks are gone after the block.
    assert torch.equal(generated, tiny_model.generate(ids[:1], max_new_tokens=4,
                                                      do_sample=False))
    tiny_model.train()
    assert torch.equal(tiny_model.get_input_embeddings()(ids), plain)


def test_noise_bound_is_alpha_over_sqrt_of_length_times_hidden(tiny_model):
    ids = torch.tensor(_samples([40]))
    d = tiny_model.config.hidden_size
    with neftune(tiny_model, ALPHA):
        capture = EmbeddingCapture(tiny_model)
        tiny_model.train()
        tiny_model(input_ids=ids)
    noise = capture.outputs[0] - tiny_model.get_input_embeddings()(ids).detach()
    bound = ALPHA / math.sqrt(40 * d)
    # Uniform in [-bound, bound]: all inside, and the extremes of 1,280 draws reach it.
    assert noise.abs().max() <= bound * (1 + 1e-5)
    assert noise.abs().max() > 0.95 * bound
    assert abs(noise.std().item() - bound / math.sqrt(3)) < 0.1 * bound


def test_packed_samples_get_their_unpacked_scale(tiny_model):
    """Three samples packed in one row are noised as each would be alone; transformers'
    own hook (row width) would give the short ones too little."""
    from transformers.integrations.neftune import neftune_post_forward_hook

    lengths = [30, 7, 19]
    samples = _samples(lengths)
    row = pack_rows(samples, samples, capacity=64)
    assert len(row) == 1
    batch = Collator(pad_id=0)([row[0]])
    d = tiny_model.config.hidden_size
    packed = token_scales(tuple(batch["input_ids"].shape), d, ALPHA,
                          position_ids=batch["position_ids"])
    # pack_rows keeps the samples in index order within a row
    alone = torch.cat([token_scales((1, n), d, ALPHA)[0] for n in lengths])
    torch.testing.assert_close(packed[0], alone, rtol=0, atol=0)
    # A padded batch (attention mask): each row's real length, no noise on padding.
    padded = Collator(pad_id=0)([{"input_ids": s, "labels": s} for s in samples])
    masked = token_scales(tuple(padded["input_ids"].shape), d, ALPHA,
                          attention_mask=padded["attention_mask"])
    for r, n in enumerate(lengths):
        torch.testing.assert_close(masked[r, :n], alone[sum(lengths[:r]):sum(lengths[:r + 1])])
        assert torch.all(masked[r, n:] == 0)

    # Through the real hooks, on the real packed batch: each sample's noise reaches its own
    # bound, which the transformers hook (bound alpha/sqrt(56 d)) never does for the 7-token one.
    with neftune(tiny_model, ALPHA):
        capture = EmbeddingCapture(tiny_model)
        tiny_model.train()
        tiny_model(**batch)
    noise = (capture.outputs[0] - tiny_model.get_input_embeddings()(batch["input_ids"]))[0]
    start = 0
    for n in lengths:
        part = noise[start:start + n].abs() / alone[start:start + n, None]
        assert part.max() <= 1 + 1e-5 and part.max() > 0.9, n
        start += n
    embeddings = tiny_model.get_input_embeddings()
    embeddings.neftune_noise_alpha = ALPHA
    out = embeddings(batch["input_ids"])
    hf_noise = neftune_post_forward_hook(embeddings, None, out) - out
    assert hf_noise[0, 30:37].abs().max() < 0.5 * alone[30]  # sqrt(7/56): far too small


def test_lora_model_gets_noise_in_training_only(tiny_model):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny_model, LoraConfig(r=4, target_modules=["q_proj"]))
    samples = _samples([20, 11])
    batch = Collator(pad_id=0)(pack_rows(samples, samples, capacity=64))
    with NEFTune(model, ALPHA) as hooks:
        capture = EmbeddingCapture(model)
        model.train()
        model(**batch)
        # peft calls the causal LM's forward directly: the decoder's hook still saw the layout
        model.eval()
        model(**batch)
    plain = model.get_input_embeddings()(batch["input_ids"]).detach()
    assert not torch.equal(capture.outputs[0], plain)
    assert torch.equal(capture.outputs[1], plain)
    assert hooks.handles == []


def test_bad_alpha_is_refused(tiny_model):
    with pytest.raises(ValueError, match="positive"), neftune(tiny_model, -1.0):
        pass


def test_training_with_neftune_changes_training_but_not_its_eval(
        tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer):
    """Same seed: the training loss differs with NEFTune; the eval loss logged during that
    training equals the saved model's loss on the validation split computed with no hooks at
    all (so evaluation inside training ran without noise)."""
    from chatsft.evaluation.perplexity import supervised_nll
    from chatsft.model.load import load_model

    runs = {}
    for alpha in (None, ALPHA):
        params = tiny_params(max_steps=4, eval_steps=4, save_steps=4, neftune_alpha=alpha,
                             select_best=False)
        runs[alpha] = run_training(params, tiny_model_dir, tiny_splits, chatml_tokenizer,
                                   tmp_path / f"out{alpha}", tmp_path / f"ckpt{alpha}")
    assert runs[None]["final_loss"] != runs[ALPHA]["final_loss"]
    clean = supervised_nll(load_model(tmp_path / f"out{ALPHA}"), tiny_splits["validation"],
                           chatml_tokenizer.pad_token_id)
    assert abs(runs[ALPHA]["final_eval_loss"] - clean["loss"]) < 1e-5
