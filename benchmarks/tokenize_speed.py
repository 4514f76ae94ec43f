"""Tokenize-stage throughput: demo conversations per second, masks and parity checks included.

    python benchmarks/tokenize_speed.py [--data data/demo.jsonl] [--repeats 5] [--profile]

Builds the scratch tokenizer as the base stage does (`train_tokenizer` on the conversations,
params.yaml's vocab size), then times the stage's core, `tokenize_split` + `to_dataset`, over
every conversation of `--data`: template rendering, batched tokenization, assistant masks,
the token-level parity check of every assistant turn against its inference prompt, and
turn-respecting truncation to `tokenize.max_length`. Prints the best wall-clock rate and the
rate by process CPU time (the steadier figure on a shared machine); the tokenizer runs on all
cores. Target: at least 3,000 conversations/s on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.io import read_jsonl
from chatsft.model.scratch import train_tokenizer
from chatsft.params import load_params
from chatsft.tokenize_data import to_dataset, tokenize_split

TARGET = 3_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="data/demo.jsonl")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    args = parser.parse_args()
    params = load_params()
    records = read_jsonl(args.data)
    texts = (m["content"] for r in records for m in r["messages"])
    tokenizer = train_tokenizer(texts, params.model.scratch.vocab_size)
    tp = params.tokenize

    def run() -> dict:
        # A fresh encoder each time: its cache of prompt tails starts empty, as in the stage.
        encoder = ChatEncoder(tokenizer, train_on=tp.train_on, max_length=tp.max_length)
        cols, _, stats = tokenize_split(records, encoder, "train")
        to_dataset(cols)
        return stats

    stats = run()  # warm-up (template compilation, imports)
    walls, cpus = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    n = len(records)
    print(f"{n} conversations ({stats['samples']} samples, {stats['tokens']} tokens, "
          f"{stats['supervised_tokens']} supervised), {os.cpu_count()} cores")
    print(f"best wall: {min(walls):.3f} s = {n / min(walls):,.0f} conversations/s "
          f"(target {TARGET:,}: {'met' if n / min(walls) >= TARGET else 'NOT met'})")
    print(f"median wall: {sorted(walls)[len(walls) // 2]:.3f} s; best CPU time: {min(cpus):.3f} s "
          f"= {n / min(cpus):,.0f} conversations per CPU-second")
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
