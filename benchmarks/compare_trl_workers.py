"""The two sides of `compare_trl.py`, each run in its own subprocess (`--worker chatsft|trl`).

Both trainers get the same instrumentation: the collator is wrapped to count the real and
supervised tokens of the batches trained on, and `train()` is timed. Peak memory is the
worker's peak RSS; the final model's loss per supervised token is measured on the held-out
conversations, the same way for both.

For the same-rows check, the TRL worker can write the packed rows it trained on
(`--dump-rows`) and the chatsft worker can train on given rows instead of packing its own
(`--rows`): with the same rows and seed, the two trainers should compute the same thing.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from collections import deque
from pathlib import Path

LAST_LOSSES = 10
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

    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.model.load import load_tokenizer
    from chatsft.params import Params, TokenizeParams, TrainParams
    from chatsft.tokenize_data import tokenize_all
    from chatsft.training import run

    def timed_split_rows(*a, **k):
        start = time.perf_counter()
        train, evals = split_rows(*a, **k)
        STATS["prep_seconds"] += time.perf_counter() - start
        if args.rows:  # the same-rows check: someone else's packing
            train = json.loads(Path(args.rows).read_text())
        STATS["rows_list"] = train
        return train, evals

    split_rows = run.split_rows
    run.split_rows = timed_split_rows
    run.SFTTrainer = instrumented(run.SFTTrainer)
    base = workdir / "base"
    tokenizer = load_tokenizer(base)
    start = time.perf_counter()
    encoder = ChatEncoder(tokenizer, max_length=args.max_length)
    datasets, _, _ = tokenize_all(workdir / "data", encoder)
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
    from chatsft.model.load import load_model, load_tokenizer
    from chatsft.model.scratch import CHATML_GENERATION_TEMPLATE

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
    if args.dump_rows:
        STATS["packed"] = packed


def chatsft_rows(packed) -> list[dict]:
    """TRL's packed rows (input_ids, labels, seq_lengths) as chatsft's (position_ids restart
    at every sample)."""
    return [{"input_ids": ids, "labels": labels,
             "position_ids": [p for n in lengths for p in range(n)]}
            for ids, labels, lengths in zip(packed["input_ids"], packed["labels"],
                                            packed["seq_lengths"], strict=True)]


def heldout_loss(model, workdir: Path, max_length: int) -> float:
    """Loss per supervised token of the trained model on the held-out conversations, one at a
    time, encoded by chatsft (TRL's labels are the same: checked by the per-epoch counts)."""
    import torch
    import torch.nn.functional as F

    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.io import read_jsonl
    from chatsft.model.load import load_tokenizer

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
        "seed": args.seed,
        "prep_seconds": round(STATS["prep_seconds"], 3),
        "train_seconds": round(seconds, 2),
        "steps": STATS["steps"],
        "real_tokens": STATS["real"],
        "supervised_tokens": STATS["supervised"],
        "real_tokens_per_second": round(STATS["real"] / seconds, 1),
        "supervised_tokens_per_second": round(STATS["supervised"] / seconds, 1),
        "steady_tokens_per_second": round((r1 - r0) / max(t1 - t0, 1e-9), 1),
        "peak_rss_mb": round(peak_mb, 1),
        "heldout_loss": round(heldout_loss(STATS["model"], workdir, args.max_length), 6),
        "final_loss": round(statistics.mean(STATS["losses"][-LAST_LOSSES:]), 4),
        "rows": rows, "epoch_tokens": epoch_tokens, "epoch_supervised_tokens": epoch_supervised,
        "losses": STATS["losses"],
        "step_starts": [round(t - STATS["marks"][0][0], 3) for t, _ in STATS["marks"]],
    }
    if "claimed" in STATS:
        result["chatsft_summary"] = STATS["claimed"]
    if "packed" in STATS:
        Path(args.dump_rows).write_text(json.dumps(chatsft_rows(STATS["packed"])))
    Path(args.result).write_text(json.dumps(result))
