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
exactly like chatsft's (checked at setup). Both trainers get the same instrumentation: the
collator is wrapped to count the real and supervised tokens of the batches trained on, and
`train()` is timed. Peak memory is the worker's peak RSS; the final model's loss per
supervised token is measured on the held-out conversations, the same way for both.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
DEFAULT_DATA = [REAL / "alpaca_zh_demo.json", REAL / "alpaca_en_demo.json"]
VOCAB = 8000
SCRATCH = dict(vocab_size=VOCAB, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
               num_key_value_heads=2, intermediate_size=768)
LAST_LOSSES = 10
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
    from chatsft.data.clean import clean_records
    from chatsft.io import write_json, write_jsonl
    from chatsft.modeling import CHATML_GENERATION_TEMPLATE, build_scratch_model, train_tokenizer
    from chatsft.params import DataParams, ScratchModel, Source
    from chatsft.template import ChatEncoder

    params = DataParams(raw=[Source(path=str(p)) for p in sources], validation_fraction=0.0,
                        test_fraction=0.0)
    start = time.perf_counter()
    records = clean_records(params).records("train")
    clean_seconds = time.perf_counter() - start
    tokenizer = train_tokenizer((m["content"] for r in records for m in r["messages"]), VOCAB)
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
    sizes = ScratchModel(**SCRATCH, max_position_embeddings=max(1024, max_length))
    model = build_scratch_model(tokenizer, sizes)
    model.save_pretrained(workdir / "base")  # safetensors
    tokenizer.save_pretrained(workdir / "base")
    write_json(workdir / "base" / "base.json", {"name_or_path": "scratch"})
    return {"sources": [str(p) for p in sources], "clean_seconds": round(clean_seconds, 3),
            "conversations": len(records), "dropped_too_long": len(records) - len(kept),
            "conversations_used": len(kept), "held_out": len(kept[::HOLD_OUT]),
            "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters())}


# -- workers (one subprocess each) ------------------------------------------------------------

STATS: dict = {"prep_seconds": 0.0, "real": 0, "supervised": 0, "marks": []}
COLLATED: deque[tuple[int, int]] = deque()  # per batch, in order: (real, supervised) tokens


class CountingCollator:
    """Wraps a trainer's collator: notes the real (non-padding) tokens of the rows it gets and
    the supervised targets (labels != -100) of the batch it returns. `training_step` takes
    them in order: the data loader collates one batch ahead, which is never trained on."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, features: list[dict]) -> dict:
        batch = self.inner(features)
        COLLATED.append((sum(len(f["input_ids"]) for f in features),
                         int((batch["labels"] != -100).sum())))
        return batch


def instrumented(trainer_cls: type) -> type:
    class Instrumented(trainer_cls):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.data_collator = CountingCollator(self.data_collator)

        def training_step(self, *args, **kwargs):
            real, supervised = COLLATED.popleft()
            STATS["marks"].append((time.perf_counter(), STATS["real"]))
            STATS["real"] += real
            STATS["supervised"] += supervised
            return super().training_step(*args, **kwargs)

        def _prepare_dataset(self, *args, **kwargs):  # TRL only
            start = time.perf_counter()
            out = super()._prepare_dataset(*args, **kwargs)
            STATS["prep_seconds"] += time.perf_counter() - start
            return out

        def train(self, *args, **kwargs):
            start = time.perf_counter()
            out = super().train(*args, **kwargs)
            STATS["train_seconds"] = time.perf_counter() - start
            STATS["losses"] = [h["loss"] for h in self.state.log_history if "loss" in h]
            STATS["steps"] = self.state.global_step
            STATS["model"] = self.model
            return out

    return Instrumented


def run_chatsft(args: argparse.Namespace, workdir: Path) -> None:
    from datasets import DatasetDict

    from chatsft.modeling import load_tokenizer
    from chatsft.params import Params, TokenizeParams, TrainParams
    from chatsft.template import ChatEncoder
    from chatsft.tokenize_data import tokenize_all
    from chatsft.training import run

    def timed_split_rows(*a, **k):
        start = time.perf_counter()
        train, evals = split_rows(*a, **k)
        STATS["prep_seconds"] += time.perf_counter() - start
        STATS["rows_list"] = train
        return train, evals

    split_rows = run.split_rows
    run.split_rows = timed_split_rows
    run.SFTTrainer = instrumented(run.SFTTrainer)
    base = workdir / "base"
    tokenizer = load_tokenizer(base)
    start = time.perf_counter()
    encoder = ChatEncoder(tokenizer, max_length=args.max_length)
    datasets, _, _ = tokenize_all(workdir / "data", tokenizer, encoder)
    STATS["prep_seconds"] += time.perf_counter() - start
    params = Params(
        tokenize=TokenizeParams(max_length=args.max_length),
        train=TrainParams(max_steps=args.steps, per_device_batch_size=args.batch_size,
                          learning_rate=args.learning_rate, packing="pack", loss="auto",
                          logging_steps=1, eval_steps=10**9, select_best=False,
                          early_stopping_patience=0, torch_threads=args.threads,
                          precision=args.precision, seed=args.seed),
    )
    with tempfile.TemporaryDirectory() as tmp:
        summary = run.run_training(params, base, DatasetDict(datasets), tokenizer,
                                   Path(tmp) / "model", Path(tmp) / "checkpoints")
    rows = STATS.pop("rows_list")
    STATS["epoch"] = (len(rows), sum(len(r["input_ids"]) for r in rows),
                      sum(sum(v != -100 for v in r["labels"]) for r in rows))
    STATS["claimed"] = {k: summary[k] for k in ("real_tokens", "supervised_tokens",
                                                "tokens_per_second", "final_loss")}


def run_trl(args: argparse.Namespace, workdir: Path) -> None:
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from chatsft.io import read_jsonl
    from chatsft.modeling import CHATML_GENERATION_TEMPLATE, load_model, load_tokenizer

    torch.set_num_threads(args.threads)
    base = workdir / "base"
    tokenizer = load_tokenizer(base)
    tokenizer.chat_template = CHATML_GENERATION_TEMPLATE
    model = load_model(base, attn_implementation="sdpa")  # transformers' default, as TRL users get
    start = time.perf_counter()
    dataset = Dataset.from_list(read_jsonl(workdir / "data" / "train.jsonl"))
    STATS["prep_seconds"] += time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(
            output_dir=tmp, max_length=args.max_length, packing=True, assistant_only_loss=True,
            per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
            max_steps=args.steps, lr_scheduler_type="cosine", warmup_steps=0.05,
            weight_decay=0.01, max_grad_norm=1.0, logging_steps=1, save_strategy="no",
            eval_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0,
            seed=args.seed, data_seed=args.seed, disable_tqdm=True,
            # chatsft's settings (no recomputation, --precision) unless --trl-defaults (bf16
            # autocast and gradient checkpointing, SFTConfig's own defaults)
            **({} if args.trl_defaults else {"bf16": args.precision == "bf16",
                                             "gradient_checkpointing": False}),
        )
        trainer = instrumented(SFTTrainer)(model=model, args=config, processing_class=tokenizer,
                                           train_dataset=dataset)
        packed = trainer.train_dataset
        STATS["epoch"] = (len(packed), sum(map(len, packed["input_ids"])),
                          sum(sum(v != -100 for v in lab) for lab in packed["labels"]))
        trainer.train()


def heldout_loss(model, workdir: Path, max_length: int) -> float:
    """Loss per supervised token of the trained model on the held-out conversations, one at a
    time, encoded by chatsft (TRL's labels are the same: checked by the per-epoch counts)."""
    import torch
    import torch.nn.functional as F

    from chatsft.io import read_jsonl
    from chatsft.modeling import load_tokenizer
    from chatsft.template import ChatEncoder

    encoder = ChatEncoder(load_tokenizer(workdir / "base"), max_length=max_length)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for (sample,) in encoder.encode_records(read_jsonl(workdir / "data" / "heldout.jsonl")):
            logits = model(input_ids=torch.tensor([sample.input_ids])).logits[0, :-1]
            targets = torch.tensor(sample.labels[1:])
            total += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
            count += int((targets != -100).sum())
    return total / count


def worker(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    (run_chatsft if args.worker == "chatsft" else run_trl)(args, workdir)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # before the eval
    seconds = STATS["train_seconds"]
    rows, epoch_tokens, epoch_supervised = STATS.pop("epoch")
    # Steady state: from the start of step 3 to the start of the last step (no first-step
    # setup, no end-of-training work such as chatsft's final checkpoint).
    (t0, r0), (t1, r1) = STATS["marks"][min(2, len(STATS["marks"]) - 2)], STATS["marks"][-1]
    result = {
        "framework": args.worker,
        "prep_seconds": round(STATS["prep_seconds"], 3),
        "train_seconds": round(seconds, 2),
        "steps": STATS["steps"],
        "real_tokens": STATS["real"],
        "supervised_tokens": STATS["supervised"],
        "real_tokens_per_second": round(STATS["real"] / seconds, 1),
        "supervised_tokens_per_second": round(STATS["supervised"] / seconds, 1),
        "steady_tokens_per_second": round((r1 - r0) / max(t1 - t0, 1e-9), 1),
        "peak_rss_mb": round(peak_mb, 1),
        "heldout_loss": round(heldout_loss(STATS["model"], workdir, args.max_length), 4),
        "final_loss": round(statistics.mean(STATS["losses"][-LAST_LOSSES:]), 4),
        "rows": rows, "epoch_tokens": epoch_tokens, "epoch_supervised_tokens": epoch_supervised,
        "losses": STATS["losses"],
        "step_starts": [round(t - STATS["marks"][0][0], 3) for t, _ in STATS["marks"]],
    }
    if "claimed" in STATS:
        result["chatsft_summary"] = STATS["claimed"]
    Path(args.result).write_text(json.dumps(result))


# -- parent ------------------------------------------------------------------------------------

def launch(name: str, args: argparse.Namespace, workdir: Path, repeat: int) -> dict:
    result, log = workdir / f"{name}-{repeat}.json", workdir / f"{name}-{repeat}.log"
    cmd = [sys.executable, __file__, "--worker", name, "--workdir", str(workdir), "--result",
           str(result), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--learning-rate", str(args.learning_rate), "--max-length", str(args.max_length),
           "--threads", str(args.threads), "--precision", args.precision,
           "--seed", str(args.seed + repeat)]
    cmd += ["--trl-defaults"] if args.trl_defaults else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "PYTHONPATH": str(ROOT)}
    load = os.getloadavg()[0]
    with open(log, "w") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"{name} worker failed (exit {done.returncode}):\n"
                         + log.read_text()[-3000:])
    return json.loads(result.read_text()) | {"load_average_before": load}


def ratio_checks(runs: dict[str, list[dict]]) -> dict:
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
    out["targets_met"] = {
        "real_tokens_per_second >= 2.5x": out["real_tokens_per_second"] >= 2.5,
        "peak_memory <= TRL": out["peak_rss_mb"] <= 1.0,
        "data_prep >= 2x faster": out["prep_seconds"] >= 2.0,
        "held-out loss <= TRL": out["heldout_loss"] <= 1.0,
    }
    return {"medians": med, "ratios": out}


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
    for target, ok in ratios["targets_met"].items():
        print(f"  {target}: {'met' if ok else 'NOT met'}")


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
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="compare_trl-") as tmp:
        workdir = Path(tmp)
        info = setup(args.data or DEFAULT_DATA, workdir, args.max_length)
        print(f"setup: {info}", flush=True)
        runs: dict[str, list[dict]] = {"chatsft": [], "trl": []}
        for repeat in range(args.repeats):
            order = ["chatsft", "trl"] if repeat % 2 == 0 else ["trl", "chatsft"]
            for name in order:
                res = launch(name, args, workdir, repeat)
                runs[name].append(res)
                print(f"repeat {repeat} {name}: prep {res['prep_seconds']} s, "
                      f"{res['real_tokens_per_second']:,.0f} real tokens/s, "
                      f"peak {res['peak_rss_mb']:,.0f} MB, loss {res['final_loss']} "
                      f"(load average before: {res['load_average_before']:.2f})", flush=True)
    checks = ratio_checks(runs)
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
        "setup": info, **checks, "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
