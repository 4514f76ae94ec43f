"""Batched vs one-at-a-time generation: tokens/s and greedy agreement (run by hand).

    python benchmarks/generation_speed.py [--model models/sft] [--test data/clean/test.jsonl]

Uses the pipeline's fine-tuned model and test split when they exist (`dvc repro` makes them).
Otherwise pass --build: the default pipeline's stages run in a temporary copy of the repository
(a few minutes on 2 CPU cores) and the benchmark uses that model.

Both runs generate greedily, in fp32, with the evaluate stage's settings; only generated tokens
count (up to and including the stop token), so padding and finished rows in a batch do not
inflate the batched figure. Every prompt whose reply differs is reported with the top-2 logit
gap at the first differing token of the one-at-a-time run: a tiny gap is a near tie that float
rounding in a different batch shape can flip.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from chatsft.chat_template.encoder import ChatEncoder  # noqa: E402
from chatsft.evaluation.run import split_prompt  # noqa: E402
from chatsft.inference.generation import (  # noqa: E402
    generate_replies,
    load_for_inference,
    top2_margin,
)
from chatsft.io import read_jsonl  # noqa: E402
from chatsft.model.load import load_tokenizer  # noqa: E402
from chatsft.params import GenerationParams  # noqa: E402


def build_pipeline_model(work: Path) -> tuple[Path, Path]:
    """Run clean, base, tokenize and train of the default pipeline in a copy of the repo."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and not f.startswith(("models/", "metrics/", "data/clean",
                                                       "data/tokenized")):
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, work / f)
    for stage in ("clean", "base", "tokenize", "train"):
        subprocess.run([sys.executable, "-m", f"stages.{stage}"], cwd=work, check=True)
    return work / "models" / "sft", work / "data" / "clean" / "test.jsonl"


def timed(model, tok, prompts, p: GenerationParams, repeats: int):
    """Replies and the best wall time of `repeats` runs (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        replies = generate_replies(model, tok, prompts, p)
        best = min(best, time.perf_counter() - start)
    return replies, best


def first_difference(model, tok, prompt, a: list[int], b: list[int]) -> float:
    """Top-2 logit gap where the one-at-a-time reply `a` and batched `b` first differ."""
    k = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y),
             min(len(a), len(b)))
    return top2_margin(model, ChatEncoder(tok).encode_prompt(prompt) + a[:k])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "sft"))
    ap.add_argument("--test", default=str(ROOT / "data" / "clean" / "test.jsonl"))
    ap.add_argument("--build", action="store_true", help="build the model in a temp copy first")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3, help="runs of each; the best time counts")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, test = (build_pipeline_model(Path(tmp)) if args.build
                           else (Path(args.model), Path(args.test)))
        if not model_dir.exists():
            sys.exit(f"{model_dir} does not exist: run `dvc repro`, or pass --build")
        tok = load_tokenizer(model_dir)
        model = load_for_inference(str(model_dir), "float32")
        prompts = [split_prompt(r["messages"])[0] for r in read_jsonl(test)]
        batched = GenerationParams(batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)
        single = batched.model_copy(update={"batch_size": 1})
        generate_replies(model, tok, prompts[:2], single)  # warm-up
        seq, t_seq = timed(model, tok, prompts, single, args.repeats)
        bat, t_bat = timed(model, tok, prompts, batched, args.repeats)
        n_seq = sum(r.generated_tokens for r in seq)
        n_bat = sum(r.generated_tokens for r in bat)
        same = sum(a.text == b.text for a, b in zip(seq, bat, strict=True))
        print(f"model {model_dir}, {len(prompts)} prompts, max_new_tokens {args.max_new_tokens}, "
              f"fp32, greedy, {torch.get_num_threads()} threads, best of {args.repeats}")
        print(f"one at a time : {n_seq} tokens in {t_seq:.2f} s = {n_seq / t_seq:.0f} tokens/s")
        print(f"batched ({args.batch_size:>3}) : {n_bat} tokens in {t_bat:.2f} s = "
              f"{n_bat / t_bat:.0f} tokens/s")
        print(f"speed-up      : {(n_bat / t_bat) / (n_seq / t_seq):.1f}x")
        print(f"agreement     : {same}/{len(prompts)} = {100 * same / len(prompts):.1f}% identical")
        for i, (a, b) in enumerate(zip(seq, bat, strict=True)):
            if a.text != b.text:
                gap = first_difference(model, tok, prompts[i], a.ids, b.ids)
                print(f"  prompt {i}: top-2 logit gap at the first difference {gap:.2e}\n"
                      f"    one at a time: {a.text!r}\n    batched      : {b.text!r}")


if __name__ == "__main__":
    main()
