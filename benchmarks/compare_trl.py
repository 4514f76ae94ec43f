"""chatsft vs TRL's SFTTrainer: same tiny model, same conversations, same settings, on the CPU.

    .venv/bin/pip install -e '.[bench]'   # trl: a benchmark-only dependency
    python benchmarks/compare_trl.py [--data FILE ...] [--steps 60] [--batch-size 4]
        [--learning-rate 3e-3] [--max-length 512] [--repeats 3] [--threads 2]
        [--precision fp32|bf16] [--trl-defaults] [--output benchmarks/results/compare_trl.json]

Setup, once: chatsft's clean stage reads the sources (default: the alpaca zh and en demo files
of ../shared/data/real/; ChatML, ShareGPT or alpaca files with --data), all into train; a BPE
tokenizer (8,000 tokens) is trained on them; conversations over max_length tokens are dropped
(chatsft would quarantine them, TRL truncate them); every 15th of the rest is held out and the
others, as ChatML JSONL, are the common input. A 5M-parameter Qwen2 model is saved with
save_pretrained; both sides load it. Repeat r uses seed + r on both sides.

Each side runs in its own subprocess, alternating over the repeats, with the same threads,
seed, steps, rows per batch, row length, learning rate, schedule, precision, packing and loss
on assistant replies (with their end-of-turn token) only. Data preparation is, for chatsft,
`tokenize_all` (read, encode, to Arrow) and `split_rows` (packing); for TRL, reading the JSONL,
`Dataset.from_list` and `SFTTrainer._prepare_dataset` (chat template with assistant masks,
labels, packing), with a ChatML template carrying `{% generation %}` markers that renders
exactly like chatsft's (checked at setup). The workers and their common instrumentation are in
compare_trl_workers.py.

Final loss, two ways (`paired_losses`): in every repeat chatsft is also trained on TRL's
packed rows with the repeat's seed, which isolates the trainers (same batches, same order);
and the per-seed held-out differences of each side on its own packing show whether the
packings lean either way.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compare_trl_workers import LAST_LOSSES, worker

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
DEFAULT_DATA = [REAL / "alpaca_zh_demo.json", REAL / "alpaca_en_demo.json"]
VOCAB = 8000
SCRATCH = dict(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
               num_key_value_heads=2, intermediate_size=768)
HOLD_OUT = 15  # every 15th conversation is held out: the final models' loss is measured on it
METRICS = {  # key: table label
    "prep_seconds": "data preparation (s)", "real_tokens_per_second": "real tokens/s",
    "supervised_tokens_per_second": "supervised tokens/s", "peak_rss_mb": "peak RSS (MB)",
    "heldout_loss": "final model's held-out loss",
    "final_loss": f"train loss (mean of last {LAST_LOSSES} steps)",
    "steady_tokens_per_second": "real tokens/s, steps 3 to N-1",
    "train_seconds": "train() wall time (s)", "real_tokens": "real tokens trained",
    "supervised_tokens": "supervised tokens trained", "rows": "packed rows (one epoch)",
    "epoch_tokens": "real tokens per epoch", "epoch_supervised_tokens": "supervised per epoch",
}


# -- setup (parent process) -----------------------------------------------------------------

def setup(sources: list[Path], workdir: Path, max_length: int) -> dict:
    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.data.clean import clean_records
    from chatsft.io import write_json, write_jsonl
    from chatsft.model.scratch import (
        CHATML_GENERATION_TEMPLATE,
        build_scratch_model,
        train_tokenizer,
    )
    from chatsft.params import DataParams, ScratchModel, Source

    params = DataParams(raw=[Source(path=str(p)) for p in sources], validation_fraction=0.0,
                        test_fraction=0.0)
    start = time.perf_counter()
    records = clean_records(params).records("train")
    clean_seconds = time.perf_counter() - start
    context = max(1024, max_length)
    tokenizer = train_tokenizer((m["content"] for r in records for m in r["messages"]), VOCAB,
                                context)
    encoded = ChatEncoder(tokenizer, max_length=max_length).encode_records(records)
    kept = [r for r, e in zip(records, encoded, strict=True) if not isinstance(e, Exception)]
    for rec in kept[:50]:  # TRL's template must render exactly like chatsft's
        for gen, msgs in ((False, rec["messages"]), (True, rec["messages"][:-1])):
            ours = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            theirs = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen,
                                                   chat_template=CHATML_GENERATION_TEMPLATE)
            if ours != theirs:
                raise SystemExit(f"TRL template renders differently:\n{ours!r}\n{theirs!r}")
    data = workdir / "data"
    data.mkdir(parents=True)
    write_jsonl(data / "train.jsonl", [r for i, r in enumerate(kept) if i % HOLD_OUT])
    write_jsonl(data / "heldout.jsonl", kept[::HOLD_OUT])
    for split in ("validation", "test"):
        write_jsonl(data / f"{split}.jsonl", [])
    sizes = ScratchModel(**SCRATCH, max_position_embeddings=context)
    model = build_scratch_model(tokenizer, sizes)
    model.save_pretrained(workdir / "base")  # safetensors
    tokenizer.save_pretrained(workdir / "base")
    write_json(workdir / "base" / "base.json", {"name_or_path": "scratch"})
    return {"sources": [str(p) for p in sources], "clean_seconds": round(clean_seconds, 3),
            "conversations": len(records), "dropped_too_long": len(records) - len(kept),
            "conversations_used": len(kept), "held_out": len(kept[::HOLD_OUT]),
            "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters())}


# -- parent ------------------------------------------------------------------------------------

def launch(name: str, args: argparse.Namespace, workdir: Path, repeat: int,
           extra: tuple[str, ...] = (), tag: str = "") -> dict:
    result, log = (workdir / f"{name}{tag}-{repeat}.{ext}" for ext in ("json", "log"))
    cmd = [sys.executable, __file__, "--worker", name, "--workdir", str(workdir), "--result",
           str(result), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--learning-rate", str(args.learning_rate), "--max-length", str(args.max_length),
           "--threads", str(args.threads), "--precision", args.precision,
           "--seed", str(args.seed + repeat)]
    cmd += (["--trl-defaults"] if args.trl_defaults else []) + list(extra)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{name} worker failed (exit {done.returncode}):\n"
                         + log.read_text()[-3000:])
    return json.loads(result.read_text()) | {"load_average_before": load}


def ratio_checks(runs: dict[str, list[dict]], same_rows: list[dict]) -> dict:
    """Median of the paired per-repeat ratios (robust to load changing between repeats)."""
    def paired(key: str, num: str, den: str) -> float:
        return round(statistics.median(a[key] / b[key] for a, b in zip(
            runs[num], runs[den], strict=True)), 3)

    med = {f: {k: statistics.median(r[k] for r in runs[f]) for k in METRICS} for f in runs}
    out = {
        "real_tokens_per_second": paired("real_tokens_per_second", "chatsft", "trl"),
        "supervised_tokens_per_second": paired("supervised_tokens_per_second", "chatsft", "trl"),
        "prep_seconds": paired("prep_seconds", "trl", "chatsft"),
        "peak_rss_mb": paired("peak_rss_mb", "chatsft", "trl"),
        "heldout_loss": paired("heldout_loss", "chatsft", "trl"),
        "final_loss": paired("final_loss", "chatsft", "trl"),
    }
    loss = {"same_rows": paired_losses(same_rows, runs["trl"]),
            "own_packing": paired_losses(runs["chatsft"], runs["trl"])}
    out["targets_met"] = {
        "real_tokens_per_second >= 2.5x": out["real_tokens_per_second"] >= 2.5,
        "peak_memory <= TRL": out["peak_rss_mb"] <= 1.0,
        "data_prep >= 2x faster": out["prep_seconds"] >= 2.0,
        "held-out loss, same rows: not worse beyond 2 standard errors":
            loss["same_rows"]["not_worse"],
        "held-out loss, own packing: not worse beyond 2 standard errors":
            loss["own_packing"]["not_worse"],
    }
    return {"medians": med, "ratios": out, "loss": loss}


def paired_losses(ours: list[dict], trl: list[dict]) -> dict:
    """Per-seed held-out loss differences, chatsft/TRL - 1, and whether they lean worse.

    Same rows (`ours` trained on TRL's packed rows, same seed): the same batches in the same
    order, so the steps compute the same thing up to float rounding; the step at which the
    train losses first differ by over 1e-4 shows where rounding, amplified by training at
    this learning rate (loss spikes especially), takes over. After that the runs are two
    draws of the same process. Own packing: each side's rows (first-fit over the whole set
    here; best-fit per 1,000-conversation `map` batch in TRL) give different batches.
    Either way one seed says little; "not worse" means the mean difference is at most two
    standard errors above zero (None with fewer than two seeds).
    """
    diffs = [a["heldout_loss"] / b["heldout_loss"] - 1 for a, b in zip(ours, trl, strict=True)]
    drift = []
    for a, b in zip(ours, trl, strict=True):
        steps = [x / y - 1 for x, y in zip(a["losses"], b["losses"], strict=True)]
        drift.append(next((i + 1 for i, d in enumerate(steps) if abs(d) > 1e-4), None))
    mean = statistics.mean(diffs)
    error = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
    return {
        "differences": [round(d, 5) for d in diffs],
        "mean_difference": round(mean, 5),
        "standard_error": None if error is None else round(error, 5),
        "seeds_chatsft_lower": sum(d <= 0 for d in diffs),
        "first_step_over_1e-4": drift,
        "heldout_stdev_over_seeds": [round(statistics.stdev(r["heldout_loss"] for r in side), 4)
                                     if len(side) > 1 else None for side in (ours, trl)],
        "not_worse": None if error is None else mean <= 2 * error,
    }


def fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3f}"


def print_table(runs: dict[str, list[dict]], checks: dict) -> None:
    med, ratios = checks["medians"], checks["ratios"]
    print("\n| metric | chatsft | TRL | ratio | per repeat (chatsft / TRL) |")
    print("|---|---|---|---|---|")
    for key, label in METRICS.items():
        each = ", ".join(f"{fmt(a[key])} / {fmt(b[key])}" for a, b in zip(
            runs["chatsft"], runs["trl"], strict=True))
        r = ratios.get(key, "")
        print(f"| {label} | {fmt(med['chatsft'][key])} | {fmt(med['trl'][key])} | {r} | {each} |")
    print("\nratios (medians of the per-repeat ratios): tokens/s chatsft/TRL, prep TRL/chatsft, "
          "memory and losses chatsft/TRL")
    for name, label in (("same_rows", "chatsft on TRL's rows"), ("own_packing", "own packing")):
        c = checks["loss"][name]
        print(f"held-out loss, {label}: chatsft/TRL - 1 per seed {c['differences']}, mean "
              f"{c['mean_difference']:+.4f} (standard error {c['standard_error']}); train losses "
              f"first differ by over 1e-4 at steps {c['first_step_over_1e-4']}")
    for target, ok in ratios["targets_met"].items():
        verdict = "n/a (needs --repeats 2 or more)" if ok is None else "met" if ok else "NOT met"
        print(f"  {target}: {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append",
                        help="a ChatML (or ShareGPT/alpaca) JSON/JSONL file; repeatable")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/compare_trl.json")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="both sides: fp32, or fp32 weights with bf16 autocast")
    parser.add_argument("--trl-defaults", action="store_true",
                        help="TRL with SFTConfig's bf16 and gradient_checkpointing defaults")
    parser.add_argument("--seed", type=int, default=42, help="repeat r uses seed + r (both)")
    parser.add_argument("--worker", choices=["chatsft", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)  # chatsft: train on these rows
    parser.add_argument("--dump-rows", help=argparse.SUPPRESS)  # TRL: write its packed rows
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="compare_trl-") as tmp:
        workdir = Path(tmp)
        info = setup(args.data or DEFAULT_DATA, workdir, args.max_length)
        print(f"setup: {info}", flush=True)
        runs: dict[str, list[dict]] = {"chatsft": [], "trl": []}
        trl_rows, same_rows = workdir / "trl_rows.json", []
        for repeat in range(args.repeats):
            order = ["chatsft", "trl"] if repeat % 2 == 0 else ["trl", "chatsft"]
            for name in order:
                extra = ("--dump-rows", str(trl_rows)) if name == "trl" and not repeat else ()
                res = launch(name, args, workdir, repeat, extra)
                runs[name].append(res)
                print(f"repeat {repeat} {name}: prep {res['prep_seconds']} s, "
                      f"{res['real_tokens_per_second']:,.0f} real tokens/s, "
                      f"peak {res['peak_rss_mb']:,.0f} MB, loss {res['final_loss']} "
                      f"(load average before: {res['load_average_before']:.2f})", flush=True)
            # TRL's packing has no seed: its rows of repeat 0 are its rows of every repeat
            res = launch("chatsft", args, workdir, repeat, ("--rows", str(trl_rows)), "-trl-rows")
            same_rows.append(res)
            print(f"repeat {repeat} chatsft on TRL's rows: held-out {res['heldout_loss']:.5f} "
                  f"(TRL {runs['trl'][-1]['heldout_loss']:.5f})", flush=True)
    checks = ratio_checks(runs, same_rows)
    print_table(runs, checks)
    import torch
    import transformers
    import trl

    report = {
        "settings": {k: v for k, v in vars(args).items() if k in (
            "steps", "batch_size", "learning_rate", "max_length", "repeats", "threads",
            "precision", "trl_defaults", "seed")},
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before,
                    "load_average_after": os.getloadavg(), "torch": torch.__version__,
                    "transformers": transformers.__version__, "trl": trl.__version__},
        "setup": info, **checks, "runs": runs, "same_rows_runs": same_rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
