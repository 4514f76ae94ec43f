"""Clean-stage throughput: ChatML conversations per second on one core, JSONL in and out.

    python benchmarks/clean_speed.py [--n 100000] [--repeats 3] [--core 0]

Writes `--n` demo conversations (chatsft.data.demo) to a temporary JSONL file, pins the
process to one core, and times `clean_records` + `write_clean` end to end (reading, parsing,
validation, deduplication, splitting, writing). Prints the best wall-clock rate and the rate
by user CPU time, which is the steadier figure when other processes share the core.
Target: at least 20,000 conversations/s.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from chatsft.data.clean import clean_records, write_clean
from chatsft.data.demo import write_demo
from chatsft.params import DataParams

TARGET = 20_000


def _cpu_seconds() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="conversations")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--core", type=int, default=0, help="CPU core to pin to (-1: none)")
    args = parser.parse_args()
    if args.core >= 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "chats.jsonl"
        write_demo(raw, seed=0, n=args.n)
        mib = raw.stat().st_size / 2**20
        params = DataParams(raw=[str(raw)])
        walls, users, systems = [], [], []
        for i in range(args.repeats):
            t0, (u0, s0) = time.perf_counter(), _cpu_seconds()
            result = clean_records(params)
            write_clean(result, Path(tmp) / f"out{i}")
            (u1, s1) = _cpu_seconds()
            walls.append(time.perf_counter() - t0)
            users.append(u1 - u0)
            systems.append(s1 - s0)
        report = result.report()
    assert report["read"] == args.n and report["kept"] + report["quarantined"] == args.n
    wall, user, system = min(walls), min(users), min(systems)
    print(f"clean stage, {args.n} ChatML conversations ({mib:.1f} MiB JSONL), core "
          f"{args.core}, best of {args.repeats}:")
    print(f"  wall: {wall:.2f} s  -> {args.n / wall:,.0f} conversations/s")
    print(f"  user CPU: {user:.2f} s  -> {args.n / user:,.0f} conversations/s")
    print(f"  user+sys CPU: {user + system:.2f} s  -> {args.n / (user + system):,.0f} "
          "conversations/s")
    print(f"  target {TARGET:,}/s: {'met' if args.n / wall >= TARGET else 'NOT met'} (wall)")


if __name__ == "__main__":
    main()
