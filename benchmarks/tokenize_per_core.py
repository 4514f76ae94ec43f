"""Where the per-core gap of the tokenize stage comes from: instructions, and the machine.

    python benchmarks/tokenize_per_core.py [--copies 1] [--procs 2] [--jobs 2]
    python benchmarks/tokenize_per_core.py --corun 10 [--copies 5] [--sets multiturn]

Why: the per-core target of issue 13 (N processes do no less work per CPU-second than 1) is a
ratio of CPU times, and on this 2-vCPU machine CPU time drifts by 10-50% between runs of the
same code (benchmarks/README.md), more than the effect measured. Two measurements split it:

- Instructions (default; `benchmarks/results/tokenize_instructions.json`). The instructions a
  program executes do not drift: valgrind's callgrind counts them exactly, the same on a busy
  machine as on an idle one, so they tell whether N processes do extra work (forking, sending
  chunks back, building Arrow from them, words each process must encode again). Counted:
  `tokenize_split(..., num_proc=P)` + `to_dataset` of one set (rendering, Rust tokenization,
  masks, parity, Arrow), as `tokenize_real.py` times it, after the same warm-up; every thread
  (the Rust tokenizer's pool, the batch thread) and every forked worker. Counting starts and
  stops around that call (a small C helper issuing callgrind's client requests, compiled here
  with gcc), so imports and loading the tokenizer are not counted. PYTHONHASHSEED is fixed;
  two runs of a configuration agree within 0.3% (1 process: 5e-4; the pool's threads and
  malloc move the 2-process counts a little). Needs valgrind, its headers
  (`callgrind.h`) and gcc; about 14 minutes on 2 cores for the four sets.
- The machine (`--corun R`; `benchmarks/results/tokenize_corun.json`). What this machine
  charges for running two processes at once, whatever they do: one single-threaded tokenize
  process (configured as a forked worker is) alone, then two identical ones at the same time,
  in R rounds that alternate the order; each process's own CPU time of the same work. Equal
  instructions and CPU time that grows when a second copy runs beside it: the extra CPU is
  cycles per instruction (shared caches, memory, the host), not code.

Sets and word cache modes as in `tokenize_real.py --scaling`; `--copies K` repeats each set K
times (the BPE word cache then favours one process, see there).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tokenize_real  # benchmarks/tokenize_real.py: the data sets and the tokenizer

ROOT = Path(__file__).resolve().parents[1]
HELPER = r"""
#include <valgrind/callgrind.h>
void count_start(void) { CALLGRIND_START_INSTRUMENTATION; CALLGRIND_ZERO_STATS; }
void count_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""
OBJECTS = {"tokenizers.abi3.so": "rust_tokenizer", "libpython3": "python", "libc.so": "libc"}


def build_helper(folder: Path) -> Path:
    source, lib = folder / "count.c", folder / "libcount.so"
    source.write_text(HELPER)
    try:
        subprocess.run(["gcc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(source)],
                       check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as err:
        sys.exit(f"cannot build the callgrind helper (needs gcc and valgrind's headers): "
                 f"{getattr(err, 'stderr', '') or err}")
    return lib


def worker(args: argparse.Namespace) -> None:
    """Inside valgrind: one set, one process count, counted around the timed call only."""
    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.tokenize_data import to_dataset, tokenize_split

    count = ctypes.CDLL(str(args.helper))
    records = tokenize_real.datasets_from(args.data_dir, None, args.copies)[args.set]
    tokenizer = tokenize_real.qwen_tokenizer()

    def encoder() -> ChatEncoder:
        enc = ChatEncoder(tokenizer)
        if args.no_bpe_cache:
            enc.masker.backend.model._resize_cache(0)
        return enc

    tokenize_split(records[:1000], encoder(), "train", num_proc=args.num_proc,
                   max_parity_failures=1.0)  # warm-up, as tokenize_real.py does
    enc = encoder()
    count.count_start()
    cols, _, stats = tokenize_split(records, enc, "train", num_proc=args.num_proc,
                                    max_parity_failures=1.0)
    to_dataset(cols)
    count.count_stop()
    Path(args.result).write_text(json.dumps({"tokens": stats["tokens"]}))


def by_object(path: Path) -> dict[str, int]:
    """Instructions per shared object of one callgrind file (callgrind_annotate's listing)."""
    listing = subprocess.run(["callgrind_annotate", "--threshold=100", str(path)],
                             capture_output=True, text=True, check=True).stdout
    out = dict.fromkeys(OBJECTS.values(), 0)
    for line in listing.splitlines():
        m = re.match(r"\s*([\d,]+) \(.*\)\s+.*\[(.*)\]$", line)
        if m:
            key = next((v for k, v in OBJECTS.items() if k in m.group(2)), None)
            if key:
                out[key] += int(m.group(1).replace(",", ""))
    return out


def count(args: argparse.Namespace, name: str, procs: int, cache: bool) -> dict:
    """One configuration under callgrind: instructions of the process and its workers."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={tmp}/cg.%p", sys.executable, __file__, "--worker",
               "--set", name, "--num-proc", str(procs), "--helper", str(args.helper),
               "--copies", str(args.copies), "--data-dir", str(args.data_dir),
               "--result", str(result)] + ([] if cache else ["--no-bpe-cache"])
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT))
        run = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"{name}, {procs} process(es): valgrind failed:\n{run.stderr[-3000:]}")
        totals = {f: int(re.search(r"^totals: (\d+)", f.read_text(), re.M).group(1))
                  for f in sorted(Path(tmp).glob("cg.*"))}
        # The warm-up's workers exit before counting starts: nothing counted, not listed.
        files = [f for f, n in totals.items() if n]
        parts = [by_object(f) for f in files]
        return {"instructions": sum(totals.values()), "processes": len(files),
                "per_process": [totals[f] for f in files],
                "tokens": json.loads(result.read_text())["tokens"],
                **{k: sum(p[k] for p in parts) for k in OBJECTS.values()}}


def corun_worker(args: argparse.Namespace) -> None:
    """One single-threaded tokenize process, as a forked worker runs (no tokenizer threads,
    batches on a thread of their own): waits for the go file, prints its CPU and wall time."""
    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.tokenize_data import to_dataset, tokenize_split
    from chatsft.tokenize_workers import _one_thread_per_process  # the workers' own setting

    records = tokenize_real.datasets_from(args.data_dir, None, args.copies)[args.set]
    tokenizer = tokenize_real.qwen_tokenizer()
    tokenize_split(records[:1000], ChatEncoder(tokenizer), "train", num_proc=1,
                   max_parity_failures=1.0)  # warm-up
    enc = ChatEncoder(tokenizer)
    if args.no_bpe_cache:
        enc.masker.backend.model._resize_cache(0)
    go = Path(args.result)
    go.with_name(f"ready.{os.getpid()}").touch()
    while not go.exists():
        time.sleep(0.01)
    with _one_thread_per_process(enc):
        t0, c0 = time.perf_counter(), tokenize_real.usage()[0]
        to_dataset(tokenize_split(records, enc, "train", num_proc=1,
                                  max_parity_failures=1.0)[0])
        print(json.dumps({"cpu": tokenize_real.usage()[0] - c0,
                          "wall": time.perf_counter() - t0}))


def corun_round(args: argparse.Namespace, name: str, cache: bool, copies: int) -> list[dict]:
    """`copies` identical single-threaded processes released at the same moment."""
    with tempfile.TemporaryDirectory() as tmp:
        go = Path(tmp) / "go"
        cmd = [sys.executable, __file__, "--corun-worker", "--set", name, "--copies",
               str(args.copies), "--data-dir", str(args.data_dir), "--result", str(go)]
        procs = [subprocess.Popen(cmd + ([] if cache else ["--no-bpe-cache"]),
                                  stdout=subprocess.PIPE, text=True) for _ in range(copies)]
        while len(list(Path(tmp).glob("ready.*"))) < copies:
            if any(p.poll() is not None for p in procs):
                sys.exit(f"{name}: a co-run worker failed")
            time.sleep(0.05)
        go.touch()
        return [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]


def corun(args: argparse.Namespace) -> None:
    """Per set and cache mode: args.corun rounds of one process alone and two together."""
    out: dict = {"copies": args.copies, "rounds": args.corun, "sets": {}}
    print("| set | BPE cache | rounds | CPU s alone (median) | CPU s each of two (median) | "
          "two/alone, median of rounds | range |")
    print("|---|---|---|---|---|---|---|")
    for name in args.sets:
        for cache in (True, False):
            alone, pair = [], []
            for n in range(args.corun):
                # The order swaps every round: whichever runs first meets a different machine.
                for k in ((1, 2), (2, 1))[n % 2]:
                    runs = corun_round(args, name, cache, k)
                    (alone if k == 1 else pair).append(statistics.mean(r["cpu"] for r in runs))
            ratios = [p / a for p, a in zip(pair, alone, strict=True)]
            mode = "bpe_cache_on" if cache else "bpe_cache_off"
            out["sets"].setdefault(name, {})[mode] = {
                "alone_cpu": alone, "each_of_two_cpu": pair,
                "ratio_median": round(statistics.median(ratios), 3)}
            print(f"| {name} | {mode[10:]} | {args.corun} | {statistics.median(alone):.2f} | "
                  f"{statistics.median(pair):.2f} | {statistics.median(ratios):.3f} | "
                  f"{min(ratios):.2f}-{max(ratios):.2f} |", flush=True)
    write(args.output.with_name("tokenize_corun.json"), out)


def write(path: Path, out: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    parser.add_argument("--copies", type=int, default=1, help="each set repeated K times")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="valgrind runs at once (counts do not depend on the load)")
    parser.add_argument("--sets", nargs="+", default=list(tokenize_real.FILES) + ["multiturn"])
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" /
                        "tokenize_instructions.json")
    parser.add_argument("--corun", type=int, default=0, metavar="R",
                        help="rounds of one single-threaded process alone vs two at once")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corun-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--set", help=argparse.SUPPRESS)
    parser.add_argument("--num-proc", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--helper", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-bpe-cache", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.corun_worker:
        return corun_worker(args)
    if not args.data_dir.is_dir():
        sys.exit(f"no data folder {args.data_dir} (give --data-dir)")
    if args.corun:
        return corun(args)
    with tempfile.TemporaryDirectory() as tmp:
        args.helper = build_helper(Path(tmp))
        configs = [(name, cache, procs) for name in args.sets for cache in (True, False)
                   for procs in sorted({1, args.procs})]
        with ThreadPoolExecutor(args.jobs) as pool:
            counted = dict(zip(configs, pool.map(lambda c: count(args, c[0], c[2], c[1]),
                                                 configs), strict=True))
    sizes = {name: len(recs) for name, recs in
             tokenize_real.datasets_from(args.data_dir, None, args.copies).items()}
    out: dict = {"procs": args.procs, "copies": args.copies, "sets": {}}
    print("| set | conversations | BPE cache | procs | instructions (M) | per conversation "
          "(k) | Rust tokenizer (M) | Python (M) | libc (M) | vs 1 process |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, cache, procs), c in counted.items():
        one = counted[(name, cache, 1)]["instructions"]
        c["vs_single"] = round(c["instructions"] / one, 4)
        mode = "bpe_cache_on" if cache else "bpe_cache_off"
        out["sets"].setdefault(name, {"conversations": sizes[name]}).setdefault(mode, {})[
            str(procs)] = c
        print(f"| {name} | {sizes[name]:,} | {mode[10:]} | {procs} | "
              f"{c['instructions'] / 1e6:,.0f} | {c['instructions'] / sizes[name] / 1e3:,.0f} | "
              f"{c['rust_tokenizer'] / 1e6:,.0f} | {c['python'] / 1e6:,.0f} | "
              f"{c['libc'] / 1e6:,.0f} | {c['vs_single']:.4f} |")
    write(args.output, out)


if __name__ == "__main__":
    main()
