"""The hardest stage's cost against the default training run's, under the same machine load.

Needs the default pipeline's outputs (`dvc repro`, or `dvc checkout` then `python -m
stages.clean` so that data/clean carries record ids).

- hardest: what `python -m stages.hardest` does after loading the model: encode every
  distinct training conversation, score it in one batched no-gradient pass with the chunked
  loss, and generate the final model's reply to the top `hardest.samples` prompts.
- training: `run_training` with the params.yaml `train:` settings for `--steps` optimizer
  steps, without its periodic evaluations (eval_steps beyond the run, so no best-checkpoint
  selection or early stopping), extrapolated to the default run's step count (packed rows /
  batch x epochs): the full run takes 4-13 minutes on this machine, depending on its load.
  Leaving the evaluations out makes the training estimate low, so the ratio is an upper bound.

Runs alternate (hardest, training, hardest, ...), so a change of machine load hits both;
the ratio reported is the median of hardest seconds / extrapolated training seconds, each
hardest run paired with the training run after it.

    python benchmarks/hardest_speed.py [--steps 100] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.evaluation.hardest import hardest
from chatsft.inference.generation import load_for_inference
from chatsft.io import read_jsonl, write_json
from chatsft.model.load import load_tokenizer
from chatsft.params import load_params
from chatsft.training.data import load_splits, split_rows
from chatsft.training.run import run_training

BASE, SFT, TOKENIZED = "models/base", "models/sft", "data/tokenized"
TRAIN = "data/clean/train.jsonl"
OUT = "benchmarks/results/hardest_speed.json"


def hardest_run(params) -> tuple[float, dict]:
    t, m = params.tokenize, params.model
    tokenizer = load_tokenizer(SFT)
    model = load_for_inference(SFT, m.dtype, m.device_map, m.attn_implementation)
    encoder = ChatEncoder(tokenizer, train_on=t.train_on, max_length=t.max_length,
                          train_reasoning=t.train_on_reasoning,
                          mask_empty_think=t.mask_empty_think)
    records = read_jsonl(TRAIN)
    start = time.perf_counter()
    _, summary = hardest(model, tokenizer, encoder, records, t.max_length,
                         params.hardest.samples, params.evaluate.generation)
    return time.perf_counter() - start, summary


def train_run(params, steps: int) -> float:
    params = params.model_copy(update={"train": params.train.model_copy(update={
        "max_steps": steps, "eval_steps": 10**9, "select_best": False,
        "early_stopping_patience": 0})})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        summary = run_training(params, BASE, load_splits(TOKENIZED), load_tokenizer(BASE),
                               tmp / "sft", tmp / "checkpoints", tmp / "live")
    return summary["train_seconds"]


def default_steps(params) -> int:
    rows, _ = split_rows(load_splits(TOKENIZED), params.train, params.tokenize)
    per_step = params.train.per_device_batch_size * params.train.gradient_accumulation_steps
    return math.ceil(len(rows) / per_step) * math.ceil(params.train.epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    params = load_params()
    full_steps = default_steps(params)
    load_before = os.getloadavg()[0]
    runs = []
    for repeat in range(args.repeats):
        seconds, summary = hardest_run(params)
        print(f"repeat {repeat}: hardest {seconds:.1f} s", flush=True)
        train = train_run(params, args.steps)
        estimate = train / args.steps * full_steps
        runs.append({"hardest_seconds": round(seconds, 2), "train_seconds": train,
                     "train_seconds_extrapolated": round(estimate, 1),
                     "ratio": round(seconds / estimate, 4)})
        print(f"repeat {repeat}: hardest {seconds:.1f} s ({summary['scored']} conversations); "
              f"training {train:.1f} s for {args.steps} steps -> {estimate:.0f} s for "
              f"{full_steps}; ratio {seconds / estimate:.3f}", flush=True)
    report = {"steps_timed": args.steps, "default_steps": full_steps,
              "threads": torch.get_num_threads(), "conversations": summary["conversations"],
              "load_average_before_after": [round(load_before, 2),
                                            round(os.getloadavg()[0], 2)],
              "runs": runs, "median_ratio": round(statistics.median(r["ratio"] for r in runs), 4)}
    write_json(OUT, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
