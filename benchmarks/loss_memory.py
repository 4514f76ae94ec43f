"""Peak memory of one training step: plain full-logits loss vs chatsft's chunked loss.

A Qwen2 model with Qwen2.5's 151,665-token vocabulary (small hidden size, so the logits
dominate), one row of `--length` tokens, every position supervised (the worst case). Each
variant runs in its own process; the figure is the growth of peak RSS during the step
(forward + backward) over the process's RSS before it.

    python benchmarks/loss_memory.py [--length 2048] [--vocab 151665]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_step(variant: str, length: int, vocab: int) -> dict:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from chatsft.loss import chunked_causal_lm_loss

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=length, tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    ids = torch.randint(0, vocab, (1, length))
    labels = ids.clone()
    before = peak_rss_mb()
    if variant == "plain":
        loss = model(input_ids=ids, labels=labels, use_cache=False).loss
    else:
        hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
        loss = chunked_causal_lm_loss(hidden, model.lm_head.weight, labels)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if "embed" in n}
    return {"variant": variant, "loss": loss.item(), "rss_before_mb": round(before, 1),
            "peak_mb": round(peak_rss_mb(), 1), "step_mb": round(peak_rss_mb() - before, 1),
            "embed_grad_norm": float(next(iter(grads.values())).norm())}


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
                             capture_output=True, text=True, check=True).stdout
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
