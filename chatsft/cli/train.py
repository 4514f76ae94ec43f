"""`chatsft train` (the pipeline without DVC) and `chatsft preset` (recommended settings).

`chatsft train` starts from the pipeline's params: `--params FILE`, else `params.yaml` in the
current directory when there is one (what `dvc repro` would use there), else the shipped
defaults (the schema's defaults, which a test keeps equal to the shipped params.yaml); then
`--preset`, the flags below, and `--set KEY=VALUE` for any other key, in that order.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from pathlib import Path

import yaml

from chatsft.cli.schema import add_key_flags, add_set_flag, given_keys, nested
from chatsft.errors import UserError
from chatsft.params import Params

PARAMS_FILE = "params.yaml"
# The params keys `chatsft train` has a flag for (any other: --set KEY=VALUE), and the
# seed's names of some of them (a flag is otherwise named after its key without section).
TRAIN_KEYS = (
    "model.name_or_path", "data.raw", "train.epochs", "train.per_device_batch_size",
    "train.learning_rate", "train.gradient_accumulation_steps", "train.max_steps",
    "tokenize.max_length", "train.method", "train.lora.r", "train.precision", "model.dtype",
    "train.gradient_checkpointing", "train.seed", "train.distributed", "train.num_processes",
)
SEED_NAMES = {"model.name_or_path": "model_name", "data.raw": "data_path",
              "train.epochs": "num_epochs", "train.per_device_batch_size": "batch_size"}


def _train(args: argparse.Namespace) -> int:
    from chatsft.api import run_pipeline

    params = train_params(args)
    print(f"chatsft train: params from {params_source(args) or 'the shipped defaults'}"
          + (f", preset {args.preset}" if args.preset else ""), flush=True)
    summary = run_pipeline(params, args.output_dir)
    print(json.dumps(summary, indent=2))
    print(f"model saved to {Path(args.output_dir) / 'model'}")
    return 0


def params_source(args: argparse.Namespace) -> str | None:
    """--params, else the pipeline's params.yaml when here (what `dvc repro` here uses)."""
    return args.params or (PARAMS_FILE if Path(PARAMS_FILE).is_file() else None)


def train_params(args: argparse.Namespace) -> Params:
    """The params of a `chatsft train` command line (see the module docstring)."""
    from chatsft.params import deep_merge, load_params, parse_params
    from chatsft.presets import get

    source = params_source(args)
    raw = load_params(source).model_dump() if source else Params().model_dump()
    if args.preset:
        raw = deep_merge(raw, get(args.preset).overrides())
    raw = deep_merge(raw, nested(given_keys(args, TRAIN_KEYS).items()))
    raw = deep_merge(raw, nested(args.set))
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


def add_commands(sub: argparse._SubParsersAction) -> None:
    from chatsft.presets import PRESETS

    train = sub.add_parser("train", help="clean, tokenize and train in one go (no DVC)",
                           description=__doc__.split("\n\n")[1])
    train.add_argument("--output-dir", default="outputs", help="where everything is written "
                       "(default outputs)")
    train.add_argument("--params", help="start from this params.yaml (default: ./params.yaml "
                       "when it exists, else the shipped defaults)")
    train.add_argument("--preset", choices=list(PRESETS), metavar="NAME",
                       help=f"then apply a preset's settings: {', '.join(PRESETS)} (see "
                       "`chatsft preset`)")
    add_key_flags(train, "params (each flag sets the params key in brackets)", TRAIN_KEYS,
                  SEED_NAMES)
    add_set_flag(train)
    train.set_defaults(func=_train, parser=train)

    preset = sub.add_parser("preset", help="recommended settings for Qwen2.5 / Llama-3")
    preset.add_argument("name", nargs="?", help="e.g. qwen2.5-7b; omit to list all")
    preset.add_argument("--format", choices=["dvc", "yaml", "json"], default="dvc")
    preset.add_argument("--run", action="store_true", help="run the `dvc exp run` command")
    preset.set_defaults(func=_preset, parser=preset)
