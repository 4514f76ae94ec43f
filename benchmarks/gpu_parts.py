"""The parts of benchmarks/gpu_check.py: each builds what it needs, runs, and returns one row
of the table (a dict). `Setup.dry` makes everything tiny and CPU-sized, for the suite."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
# Qwen2.5-0.5B: the real sizes (151,936-token vocabulary, tied embeddings).
QWEN_05B = dict(vocab_size=151936, hidden_size=896, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, intermediate_size=4864,
                max_position_embeddings=32768, rope_theta=1e6, tie_word_embeddings=True)
TINY = dict(vocab_size=1024, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
            rope_theta=1e4, tie_word_embeddings=True)


@dataclass
class Setup:
    dry: bool
    work: Path
    peak_tflops: float = 989.0  # H200 dense bf16

    @property
    def cuda(self) -> bool:
        return torch.cuda.is_available() and not self.dry

    @property
    def max_length(self) -> int:
        return 128 if self.dry else 2048

    @property
    def steps(self) -> int:
        return 1 if self.dry else 20

    @property
    def batch(self) -> int:
        return 2 if self.dry else 4


def build_base(s: Setup) -> Path:
    """A random Qwen2 model (real 0.5B sizes, or tiny for a dry run), a chat tokenizer and
    the tokenized demo conversations, laid out like the pipeline (models/base,
    data/tokenized)."""
    from datasets import DatasetDict
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.data.demo import generate_demo
    from chatsft.model.scratch import train_tokenizer
    from chatsft.tokenize_data import to_dataset, tokenize_split

    base = s.work / "models" / "base"
    if (base / "config.json").exists():
        return base
    records = generate_demo(seed=0, n=200 if s.dry else 3000)
    tokenizer = train_tokenizer((m["content"] for r in records for m in r["messages"]),
                                vocab_size=600 if s.dry else 4000)
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**(TINY if s.dry else QWEN_05B)))
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    encoder = ChatEncoder(tokenizer, train_on="all", max_length=s.max_length)
    cut = len(records) * 9 // 10
    parts = {"train": records[:cut], "validation": records[cut:]}
    DatasetDict({name: to_dataset(tokenize_split(recs, encoder, name)[0])
                 for name, recs in parts.items()}).save_to_disk(str(s.work / "data" / "tokenized"))
    return base


def train_params(s: Setup, **train):
    from chatsft.params import Params

    return Params.model_validate({
        "model": {"dtype": "float32"},
        "tokenize": {"max_length": s.max_length},
        "train": {"max_steps": s.steps, "per_device_batch_size": s.batch, "packing": "pack",
                  "eval_steps": 10_000, "early_stopping_patience": 0, "select_best": False,
                  "logging_steps": 1, "learning_rate": 1e-5, "warmup_ratio": 0.0,
                  "precision": "bf16" if s.cuda else "fp32"} | train,
    })


def run_train(s: Setup, name: str, **train) -> dict:
    """chatsft's own training run (run_training, as the train stage calls it)."""
    from chatsft.model.load import load_tokenizer
    from chatsft.training.data import load_splits
    from chatsft.training.run import run_training

    base = build_base(s)
    params = train_params(s, **train)
    if s.cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    summary = run_training(params, base, load_splits(s.work / "data" / "tokenized"),
                           load_tokenizer(base), s.work / "out" / name, s.work / "ckpt" / name)
    row = {"part": name, "steps": summary["steps"], "final_loss": summary["final_loss"],
           "tokens_per_s": summary["tokens_per_second"],
           "peak_memory_gb": round(summary["peak_memory_mb"] / 1024, 2)}
    if train.get("method", "full") == "full":
        params_n = sum(p.numel() for p in _config_model(base).parameters())
        # 6 FLOPs per parameter per token (forward + backward), attention ignored.
        row["mfu"] = round(6 * params_n * summary["tokens_per_second"]
                           / (s.peak_tflops * 1e12), 4) if s.cuda else None
    if not math.isfinite(summary["final_loss"]):
        raise RuntimeError(f"{name}: loss is not finite: {summary['final_loss']}")
    return row


def _config_model(base: Path):
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))


def memory_model(s: Setup, measured: dict) -> dict:
    """The presets' memory model for this exact run vs its measured peak."""
    from chatsft.presets import Architecture, Preset, memory_parts

    base = build_base(s)
    c = json.loads((base / "config.json").read_text())
    arch = Architecture(c["vocab_size"], c["hidden_size"], c["num_hidden_layers"],
                        c["num_attention_heads"], c["num_key_value_heads"],
                        c["intermediate_size"], tied=c["tie_word_embeddings"], qkv_bias=True)
    preset = Preset("measured", "random", 1, 141, "full", 1e-5, s.batch, 1, s.max_length,
                    gradient_checkpointing=False)
    # The model's total: its parts, 10% allocator overhead, 1 GB of CUDA context.
    estimate = round((1.1 * sum(memory_parts(preset, arch).values()) + 1e9) / 1e9, 2)
    row = {"part": "memory model", "estimate_gb": estimate,
           "measured_gb": measured.get("peak_memory_gb")}
    if s.cuda and measured.get("peak_memory_gb"):
        row["ratio"] = round(estimate / measured["peak_memory_gb"], 3)
    return row


def attention_equality(s: Setup) -> dict:
    """Loss and gradients on packed rows: flash-attn varlen vs SDPA (bf16, GPU), or on CPU
    chatsft's per-sample SDPA (sdpa_varlen) vs SDPA with a block mask (fp32)."""
    from chatsft.model.load import load_model
    from chatsft.training.data import collator_for, load_splits, make_rows

    base = build_base(s)
    a_impl, b_impl = ("flash_attention_2", "sdpa") if s.cuda else ("sdpa_varlen", "sdpa")
    dtype = "bfloat16" if s.cuda else "float32"
    rows = make_rows(load_splits(s.work / "data" / "tokenized")["train"], "pack",
                     train_params(s).tokenize)[: s.batch]
    results = []
    for impl in (a_impl, b_impl):
        model = load_model(base, dtype, attn_implementation=impl)
        model.to("cuda" if s.cuda else "cpu").train()
        batch = collator_for(model, 0)(rows)
        batch.pop("num_real_tokens")
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        grads = torch.cat([p.grad.float().flatten() for p in model.parameters()])
        results.append((float(loss), grads))
        del model
    (la, ga), (lb, gb) = results
    cos = float(torch.nn.functional.cosine_similarity(ga, gb, dim=0))
    rel = float((ga - gb).norm() / gb.norm())
    # bf16 keeps 8 bits of mantissa (~4e-3 relative); two kernels round differently.
    tol = (1e-2, 5e-2) if s.cuda else (1e-5, 1e-4)
    ok = abs(la - lb) <= tol[0] * abs(lb) and rel <= tol[1]
    row = {"part": f"{a_impl} vs {b_impl}", "loss_a": la, "loss_b": lb,
           "grad_rel_diff": rel, "grad_cosine": cos, "ok": ok}
    if not ok:
        raise RuntimeError(f"attention kernels disagree beyond tolerance {tol}: {row}")
    return row


def generation(s: Setup) -> dict:
    """The evaluate stage's batched generation: generated tokens per second."""
    from chatsft.data.demo import generate_demo
    from chatsft.inference.generation import generate_replies
    from chatsft.model.load import load_model, load_tokenizer
    from chatsft.params import GenerationParams

    base = build_base(s)
    model = load_model(base, "bfloat16" if s.cuda else "float32")
    model.to("cuda" if s.cuda else "cpu")
    prompts = [r["messages"][:-1] for r in generate_demo(seed=1, n=8 if s.dry else 256)]
    p = GenerationParams(batch_size=32, max_new_tokens=4 if s.dry else 64)
    start = time.perf_counter()
    replies = generate_replies(model, load_tokenizer(base), prompts, p)
    seconds = time.perf_counter() - start
    tokens = sum(r.generated_tokens for r in replies)
    return {"part": "generation (batch 32)", "prompts": len(prompts), "tokens": tokens,
            "tokens_per_s": round(tokens / seconds, 1)}


def zero2_command(s: Setup) -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            str(ROOT / "configs" / "accelerate" / "zero2.yaml"), "--num_processes", "1",
            str(ROOT / "benchmarks" / "gpu_check.py"), "--worker", "zero2",
            "--work", str(s.work)] + (["--dry-run"] if s.dry else [])


def zero2(s: Setup) -> dict:
    """A ZeRO-2 smoke run: the same training under DeepSpeed (one GPU)."""
    build_base(s)
    cmd = zero2_command(s)
    if s.cuda:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise RuntimeError("zero2 launch failed:\n" + proc.stdout[-2000:]
                               + proc.stderr[-2000:])
    else:
        # On CPU accelerate would run the launch as plain data parallel (chatsft refuses it):
        # the dry run runs the worker's code in this process, without DeepSpeed.
        from gpu_check import main

        main(cmd[cmd.index("--worker"):])
    row = json.loads((s.work / "zero2.json").read_text())
    return row | ({} if s.cuda else {"skipped": "DeepSpeed needs a GPU (worker ran plain)"})
