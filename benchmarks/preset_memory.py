"""The presets' memory model against a measured peak, on CPU: each preset's recipe (method,
gradient checkpointing, batch x length) on a scaled-down Qwen2 architecture, one process.

    python benchmarks/preset_memory.py [--preset qwen2.5-7b ...] [--out FILE]

Measured: peak RSS over two optimizer steps minus the RSS before the first one (the weights
already built), plus the weights' own bytes: what the model's "weights, gradients,
optimizer state, activations, loss" parts cover. Estimated: those parts of
`chatsft.presets.estimate_memory` for the scaled architecture, without the 10% allocator
overhead and the 1 GB CUDA context that a CPU does not have. Precision: bf16 autocast over
fp32 weights (full), a bf16 frozen base (LoRA), as on GPUs. What a CPU cannot run is scaled
to the nearest thing it can: QLoRA's 4-bit base is measured as LoRA on a bf16 base and its
weights term computed for bf16; ZeRO/FSDP presets run unsharded (one process), so their
weights term is the unsharded 16 bytes per parameter. Each preset runs in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatsft.presets import ARCHITECTURES, PRESETS, memory_parts  # noqa: E402

# Scaled down so that one step takes seconds on a CPU, yet weights and activations are
# hundreds of MB (well above the allocator's noise).
SCALED = dict(vocab=16384, hidden=512, layers=6, heads=8, kv_heads=2, intermediate=1536)
TOKENS = 1024  # per micro-batch (batch x length scaled to this, the preset's batch kept)


def scaled(name: str):
    """(preset as measured here, its architecture)."""
    p = PRESETS[name]
    arch = replace(ARCHITECTURES[name], **SCALED)
    method = "lora" if p.method == "qlora" else p.method
    batch = min(p.batch, 4)
    return replace(p, method=method, distributed="none", batch=batch,
                   max_length=TOKENS // batch, gpus=1), arch


def estimate(name: str) -> dict[str, float]:
    """The memory model's parts for the scaled preset, in GB."""
    return {k: v / 1e9 for k, v in memory_parts(*scaled(name)).items()}


def measure(name: str) -> float:
    """Peak GB of a training step of the scaled preset (in this process)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from chatsft.loss import chunked_causal_lm_loss
    from chatsft.params import LoraParams
    from chatsft.training.lora import apply_lora

    torch.manual_seed(0)
    p, a = scaled(name)
    config = Qwen2Config(vocab_size=a.vocab, hidden_size=a.hidden, num_hidden_layers=a.layers,
                         num_attention_heads=a.heads, num_key_value_heads=a.kv_heads,
                         intermediate_size=a.intermediate, tie_word_embeddings=a.tied,
                         attn_implementation="sdpa")
    model = Qwen2ForCausalLM(config)
    if p.method == "lora":
        model = apply_lora(model.to(torch.bfloat16), LoraParams(r=p.lora_r), True)
    if p.gradient_checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    weights = sum(t.numel() * t.element_size() for t in model.parameters())
    trainable = [t for t in model.parameters() if t.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5, fused=True)
    ids = torch.randint(0, a.vocab, (p.batch, p.max_length))
    base = model.get_base_model() if p.method == "lora" else model
    before = _rss()
    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            hidden = base.model(input_ids=ids).last_hidden_state
        loss = chunked_causal_lm_loss(hidden, base.lm_head.weight, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return (peak - before + weights) / 1e9


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", action="append", choices=sorted(PRESETS))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # one preset, in a child process
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    rows = []
    for name in args.preset or sorted(PRESETS):
        child = subprocess.run([sys.executable, __file__, "--measure", name], check=True,
                               capture_output=True, text=True)
        measured = json.loads(child.stdout.strip().splitlines()[-1])
        parts = estimate(name)
        total = sum(parts.values())
        rows.append({"preset": name, "measured_as": scaled(name)[0].method,
                     "estimate_gb": round(total, 3), "measured_gb": round(measured, 3),
                     "ratio": round(total / measured, 3),
                     "parts": {k: round(v, 3) for k, v in parts.items()}})
        print(f"{name:14} {rows[-1]['measured_as']:5} estimate {total:6.3f} GB  measured "
              f"{measured:6.3f} GB  ratio {total / measured:5.2f}", flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
