"""Peak memory of one training step: plain full-logits loss vs chatsft's chunked loss.

A Qwen2 model with Qwen2.5's 151,665-token vocabulary (small hidden size, so the logits
dominate), one row of `--length` tokens, every position supervised (the worst case). The step
is the train stage's own: `SFTTrainer.training_step` (its `compute_loss`, then backward) with
`chunked_loss` on (`train.loss: auto`) or off (the model's full-logits loss). Each variant runs
in its own process, importing the checkout this script is in; the figure is the growth of peak
RSS during the step over the process's peak RSS before it.

    python benchmarks/loss_memory.py [--length 2048] [--vocab 151665]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's chatsft, not an installed one


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_step(variant: str, length: int, vocab: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import chatsft
    from chatsft.params import TrainParams
    from chatsft.training.args import training_arguments
    from chatsft.training.trainer import SFTTrainer

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=length, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    ids = torch.randint(0, vocab, (1, length))
    inputs = {"input_ids": ids, "labels": ids.clone(), "use_cache": False,
              "num_real_tokens": torch.tensor(length)}
    with tempfile.TemporaryDirectory() as out:
        args = training_arguments(TrainParams(), Path(out), "fp32", has_eval=False)
        trainer = SFTTrainer(model=model, args=args, chunked_loss=variant == "chunked")
        # What Trainer's loop sets and passes for a step of one micro-batch.
        trainer.current_gradient_accumulation_steps = 1
        items = torch.tensor(length - 1)  # every position after the first is supervised
        before = peak_rss_mb()
        loss = trainer.training_step(model, inputs, num_items_in_batch=items)
        step = peak_rss_mb() - before
    grad = model.get_input_embeddings().weight.grad
    return {"variant": variant, "loss": loss.item(), "rss_before_mb": round(before, 1),
            "peak_mb": round(peak_rss_mb(), 1), "step_mb": round(step, 1),
            "embed_grad_norm": float(grad.norm()), "chunked_loss": trainer.chunked_loss,
            "chatsft": chatsft.__file__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--length", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=151_665)
    parser.add_argument("--variant", choices=["plain", "chunked"])
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(one_step(args.variant, args.length, args.vocab)))
        return
    results = {}
    for variant in ("plain", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--variant", variant, "--length",
                              str(args.length), "--vocab", str(args.vocab)],
                             capture_output=True, text=True, check=True,
                             env=dict(os.environ, PYTHONPATH=str(ROOT))).stdout
        results[variant] = json.loads(out.strip().splitlines()[-1])
    plain, chunked = results["plain"], results["chunked"]
    print(f"vocab {args.vocab}, length {args.length}, fp32, CPU")
    print(f"{'variant':<8} {'loss':>9} {'step MB':>9} {'peak MB':>9}")
    for r in (plain, chunked):
        print(f"{r['variant']:<8} {r['loss']:>9.5f} {r['step_mb']:>9.1f} {r['peak_mb']:>9.1f}")
    print(f"step memory ratio chunked/plain: {chunked['step_mb'] / plain['step_mb']:.3f}")
    print(f"peak memory ratio chunked/plain: {chunked['peak_mb'] / plain['peak_mb']:.3f}")
    print(f"|loss difference|: {abs(plain['loss'] - chunked['loss']):.2e}")


if __name__ == "__main__":
    main()
