"""Training throughput: chatsft's train stage vs a bare PyTorch loop, same model, same data.

Needs the default pipeline's `models/base` and `data/tokenized` (`dvc repro tokenize`).

- bare: fully packed rows (the token stream cut into rows of `max_length`, no padding, no
  masks), batch of `per_device_batch_size` rows, `model(input_ids, labels=input_ids)`,
  backward, `torch.optim.AdamW` step: the fastest honest loop for this model.
- chatsft: `run_training` with the params.yaml `train:` settings (packed rows with
  per-conversation attention, supervised-only loss, eval, checkpoints, dvclive, per-step
  logging) for the same number of steps. Its last step evaluates and checkpoints, as every
  `eval_steps` does: with the default 150 steps that is about the full default run's rate
  (4 evals and checkpoints in 760 steps).

Both figures are real (non-padding) tokens per second of wall time of the training loop;
runs alternate so that a change of machine load hits both. Prints every run and the median
of the paired ratios chatsft / bare.

    python benchmarks/train_speed.py [--steps 150] [--repeats 3] [--variants auto,model]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from chatsft.model.load import load_model, load_tokenizer
from chatsft.params import load_params
from chatsft.training.data import load_splits
from chatsft.training.run import run_training

BASE, TOKENIZED = "models/base", "data/tokenized"


def bare_loop(steps: int, batch: int, length: int, lr: float) -> float:
    torch.manual_seed(0)
    ids = load_splits(TOKENIZED)["train"]["input_ids"]
    stream = torch.tensor([t for row in ids for t in row])
    rows = stream[: len(stream) // length * length].view(-1, length)
    model = load_model(BASE)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    order = torch.randperm(len(rows))
    warmup = 3
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        x = rows[order[(step * batch + torch.arange(batch)) % len(rows)]]
        loss = model(input_ids=x, labels=x, use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * batch * length / (time.perf_counter() - start)


def chatsft_run(steps: int, loss: str) -> dict:
    params = load_params()
    params = params.model_copy(update={"train": params.train.model_copy(update={
        "max_steps": steps, "loss": loss})})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        summary = run_training(params, BASE, load_splits(TOKENIZED), load_tokenizer(BASE),
                               tmp / "sft", tmp / "checkpoints", tmp / "live")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", default="auto,model",
                        help="train.loss values to measure (auto = chunked on CPU)")
    args = parser.parse_args()
    params = load_params()
    batch, length = params.train.per_device_batch_size, params.tokenize.max_length
    variants = args.variants.split(",")
    load_before = os.getloadavg()[0]
    bare_runs, runs = [], {v: [] for v in variants}
    for repeat in range(args.repeats):
        bare = bare_loop(args.steps, batch, length, params.train.learning_rate)
        bare_runs.append(bare)
        print(f"repeat {repeat}: bare {bare:,.0f} tokens/s", flush=True)
        for variant in variants:
            s = chatsft_run(args.steps, variant)
            runs[variant].append(s["tokens_per_second"])
            print(f"repeat {repeat}: chatsft loss={variant} {s['tokens_per_second']:,.0f} "
                  f"tokens/s ({s['real_tokens']} real tokens in {s['train_seconds']} s), ratio "
                  f"{s['tokens_per_second'] / bare:.3f}", flush=True)
    report = {"steps": args.steps, "threads": torch.get_num_threads(),
              "load_average_before_after": [round(load_before, 2),
                                            round(os.getloadavg()[0], 2)],
              "bare_tokens_per_second": round(statistics.median(bare_runs), 1)}
    for variant, values in runs.items():
        # Each chatsft run is paired with the bare run just before it: the median of the
        # paired ratios is robust to the machine's load changing between repeats.
        ratios = [v / b for v, b in zip(values, bare_runs, strict=True)]
        report[f"chatsft[loss={variant}]_tokens_per_second"] = round(statistics.median(values), 1)
        report[f"chatsft[loss={variant}]_ratio"] = round(statistics.median(ratios), 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
