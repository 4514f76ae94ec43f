"""`chatsft train` (the pipeline without DVC) and `chatsft preset` (recommended settings)."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from pathlib import Path

import yaml

from chatsft.errors import UserError


def _train(args: argparse.Namespace) -> int:
    from chatsft.api import run_pipeline

    summary = run_pipeline(_params(args), args.output_dir)
    print(json.dumps(summary, indent=2))
    print(f"model saved to {Path(args.output_dir) / 'model'}")
    return 0


FLAGS = {  # flag dest -> params key
    "model_name": "model.name_or_path", "data_path": "data.raw", "num_epochs": "train.epochs",
    "batch_size": "train.per_device_batch_size", "learning_rate": "train.learning_rate",
    "gradient_accumulation_steps": "train.gradient_accumulation_steps",
    "max_steps": "train.max_steps", "max_length": "tokenize.max_length",
    "method": "train.method", "lora_r": "train.lora.r", "precision": "train.precision",
    "gradient_checkpointing": "train.gradient_checkpointing", "seed": "train.seed",
    "distributed": "train.distributed", "num_processes": "train.num_processes",
    "dtype": "model.dtype",
}


def _params(args: argparse.Namespace):
    from chatsft.params import Params, deep_merge, load_params, parse_params
    from chatsft.presets import get

    raw = load_params(args.params).model_dump() if args.params else Params().model_dump()
    if args.preset:
        raw = deep_merge(raw, get(args.preset).overrides())
    for dest, key in FLAGS.items():
        value = getattr(args, dest)
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return parse_params(raw, "chatsft train options")


def _preset(args: argparse.Namespace) -> int:
    from chatsft.presets import PRESETS, PresetError, dvc_command, estimate_memory, get

    if not args.name:
        for p in PRESETS.values():
            mem = estimate_memory(p)["total"]
            print(f"{p.name:14} {p.method:6} {p.gpus}x {p.gpu_memory_gb} GB GPU, "
                  f"~{mem} GB per GPU ({p.distributed}) {p.model}")
        return 0
    try:
        p = get(args.name)
    except PresetError as err:
        raise UserError(str(err)) from None
    if args.format == "yaml":
        print(yaml.safe_dump(p.overrides(), sort_keys=False), end="")
        return 0
    if args.format == "json":
        print(json.dumps({"overrides": p.overrides(), "memory_gb": estimate_memory(p)}, indent=2))
        return 0
    mem = estimate_memory(p)
    print(f"# {p.name}: {p.method} fine-tuning of {p.model} on {p.gpus}x {p.gpu_memory_gb} GB "
          f"GPU ({'single process' if p.distributed == 'none' else p.distributed})"
          + (f"; {p.note}" if p.note else ""))
    print(f"# estimated peak memory per GPU: {mem['total']} GB = 1.1 x (weights, grads and "
          f"optimizer {mem['weights_grads_optimizer']} + adapters {mem['adapters']} + "
          f"activations {mem['activations']} + loss {mem['loss']}) + 1 GB CUDA context")
    cmd = dvc_command(p)
    if args.run:
        return subprocess.call(cmd)
    lines = [shlex.join(cmd[:5])] + [shlex.join(cmd[i:i + 2]) for i in range(5, len(cmd), 2)]
    print(" \\\n    ".join(lines))
    return 0


def add_commands(sub) -> None:
    train = sub.add_parser("train", help="clean, tokenize and train in one go (no DVC)")
    train.add_argument("--model-name", help="'scratch', a hub id or a local directory")
    train.add_argument("--data-path", action="append",
                       help="JSON/JSONL file, glob or directory (repeatable)")
    train.add_argument("--output-dir", default="outputs", help="where everything is written")
    train.add_argument("--num-epochs", type=float)
    train.add_argument("--batch-size", type=int, help="per device")
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--gradient-accumulation-steps", type=int)
    train.add_argument("--max-steps", type=int)
    train.add_argument("--max-length", type=int)
    train.add_argument("--method", choices=["full", "lora", "qlora"])
    train.add_argument("--lora-r", type=int)
    train.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"])
    train.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"])
    train.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction)
    train.add_argument("--seed", type=int)
    train.add_argument("--distributed", choices=["none", "ddp", "fsdp", "zero2",
                                                 "zero3_offload"])
    train.add_argument("--num-processes", type=int)
    train.add_argument("--preset", help="start from a preset (see `chatsft preset`)")
    train.add_argument("--params", help="start from this params.yaml (default: built-in)")
    train.set_defaults(func=_train)

    preset = sub.add_parser("preset", help="recommended settings for Qwen2.5 / Llama-3")
    preset.add_argument("name", nargs="?", help="e.g. qwen2.5-7b; omit to list all")
    preset.add_argument("--format", choices=["dvc", "yaml", "json"], default="dvc")
    preset.add_argument("--run", action="store_true", help="run the `dvc exp run` command")
    preset.set_defaults(func=_preset)
