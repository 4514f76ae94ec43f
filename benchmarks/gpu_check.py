"""One-command GPU check: what a CPU cannot measure, on one GPU, in at most 10 minutes.

    benchmarks/gpu_check.sh            # on a GPU machine (H200: about 5 minutes)
    benchmarks/gpu_check.sh --dry-run  # anywhere: builds everything, one tiny step of each
                                       # part on CPU where possible (the suite runs this)

Parts, each on a random Qwen2.5-0.5B-shaped model (real sizes, 151,936-token vocabulary)
trained by chatsft's own `run_training` on packed rows of the demo conversations:
bf16 training with `loss: auto` (chunked) and `loss: model` (tokens/s, model FLOPs
utilization, peak memory) and the presets' memory model against that measured peak;
flash-attn varlen vs SDPA loss and gradients on packed rows (bf16 tolerance); fp16 with loss
scaling; LoRA and QLoRA (4-bit) steps; a DeepSpeed ZeRO-2 smoke run; the evaluate stage's
batched generation speed. A failing part is reported and the others still run. Prints one
table and writes benchmarks/results/gpu_check.json (--out).

Prerequisites are checked first and each missing one is named with its install command
(package registries only; nothing else is downloaded).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_parts as parts  # noqa: E402
import torch  # noqa: E402

# Optional packages and what needs them (import name, pip name).
OPTIONAL = {"flash attention": ("flash_attn", "flash-attn --no-build-isolation"),
            "QLoRA": ("bitsandbytes", "bitsandbytes"), "ZeRO-2": ("deepspeed", "deepspeed")}


def prerequisites(dry: bool) -> tuple[list[str], set[str]]:
    """(problems that stop the check, optional parts to skip)."""
    problems, skip = [], set()
    if not dry and not torch.cuda.is_available():
        problems.append(f"no CUDA GPU visible to torch {torch.__version__} (a CPU build? "
                        "install the CUDA wheel of the pinned torch version)")
    if not dry and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        problems.append(f"{torch.cuda.get_device_name()} has no bf16 support")
    for part, (module, pip) in OPTIONAL.items():
        if importlib.util.find_spec(module) is None:
            print(f"gpu_check: {part} needs `{module}`: pip install {pip}", flush=True)
            skip.add(part)
    return problems, skip


def plan(s: parts.Setup, skip: set[str]) -> list[tuple[str, object]]:
    """(name, callable returning a row) in order; the memory model reads the auto run."""
    rows: dict[str, dict] = {}

    def keep(name, fn):
        def run():
            rows[name] = fn()
            return rows[name]
        return run

    steps = [
        ("train bf16, loss auto", keep("auto", lambda: parts.run_train(s, "loss auto",
                                                                       loss="auto"))),
        ("memory model", lambda: parts.memory_model(s, rows.get("auto", {}))),
        ("train bf16, loss model", lambda: parts.run_train(s, "loss model", loss="model")),
        ("attention", lambda: parts.attention_equality(s)),
        ("fp16", lambda: _needs_gpu(s, "fp16") or parts.run_train(s, "fp16", precision="fp16")),
        ("lora", lambda: parts.run_train(s, "lora", method="lora")),
        ("qlora", lambda: _needs_gpu(s, "qlora", "QLoRA" in skip)
         or parts.run_train(s, "qlora", method="qlora")),
        # The dry run's zero2 worker runs plain (no DeepSpeed), so it needs no deepspeed.
        ("zero2", lambda: _skipped("zero2", "deepspeed is not installed")
         if "ZeRO-2" in skip and s.cuda else parts.zero2(s)),
        ("generation", lambda: parts.generation(s)),
    ]
    if "flash attention" in skip and s.cuda:
        steps[3] = ("attention", lambda: _skipped("flash vs sdpa", "flash-attn not installed"))
    return steps


def _skipped(name: str, why: str) -> dict:
    return {"part": name, "skipped": why}


def _needs_gpu(s: parts.Setup, name: str, missing: bool = False) -> dict | None:
    if not s.cuda:
        return _skipped(name, "needs a CUDA GPU")
    return _skipped(name, "bitsandbytes not installed") if missing else None


def describe(s: parts.Setup) -> str:
    return torch.cuda.get_device_name() if s.cuda else "cpu (dry run)"


def write(out: Path, s: parts.Setup, rows: list[dict]) -> None:
    """Atomically: a killed run leaves the previous (or the partial) results, never half."""
    result = {"device": describe(s), "dry_run": s.dry, "torch": torch.__version__,
              "parts": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str) + "\n")
    tmp.replace(out)


def table(rows: list[dict]) -> str:
    keys = ["part", "tokens_per_s", "mfu", "peak_memory_gb", "final_loss", "estimate_gb",
            "ratio", "grad_rel_diff", "seconds", "status"]
    cells = [[_fmt(r.get(k)) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths, strict=True))
    body = ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)) for cell in cells]
    return "\n".join([line, "-" * len(line), *body])


def _fmt(v) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny, on CPU, one step per part")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gpu_check.json")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    ap.add_argument("--peak-tflops", type=float, default=989.0,
                    help="the GPU's dense bf16 peak, for MFU (H200/H100 SXM: 989)")
    ap.add_argument("--worker", choices=["zero2"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:  # inside `accelerate launch` (the ZeRO-2 part)
        s = parts.Setup(args.dry_run, args.work, args.peak_tflops)
        row = parts.run_train(s, "zero2")
        if int(__import__("os").environ.get("RANK", "0")) == 0:
            (args.work / "zero2.json").write_text(json.dumps(row))
        return 0
    problems, skip = prerequisites(args.dry_run)
    if problems:
        print("gpu_check: cannot run here:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        s = parts.Setup(args.dry_run, args.work or Path(tmp), args.peak_tflops)
        rows = []
        for name, fn in plan(s, skip):
            start = time.perf_counter()
            try:
                row = fn()
                row.setdefault("status", "skipped: " + row.pop("skipped")
                               if "skipped" in row else "ok")
            except Exception as err:  # a failing part is reported; the others still run
                traceback.print_exc()
                row = {"part": name, "status": f"FAILED: {type(err).__name__}: {err}"[:200]}
            row["seconds"] = round(time.perf_counter() - start, 1)
            rows.append(row)
            print(f"gpu_check: {name}: {row['status']} ({row['seconds']} s)", flush=True)
            # After every part: the 10-minute limit of gpu_check.sh keeps what was measured.
            write(args.out, s, rows)
    print(f"\n{describe(s)}\n{table(rows)}\nwritten: {args.out}")
    return 1 if any(r["status"].startswith("FAILED") for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
