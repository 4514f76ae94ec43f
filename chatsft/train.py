"""The train stage's core: transformers' Trainer on the tokenized splits.

The loss is the sum over supervised tokens divided by the number of supervised tokens in
the whole optimizer step (all micro-batches, all processes): transformers' causal-LM loss
does this when the Trainer passes `num_items_in_batch`, which it does for models that take
loss kwargs (all modern causal LMs) with `average_tokens_across_devices` on.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from datasets import Dataset, load_from_disk
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

from chatsft.packing import IGNORE, Collator, pack_rows
from chatsft.params import TokenizeParams, TrainParams


@dataclass
class TokenCounter:
    """Real (non-padding) and supervised tokens seen, updated by the trainer each micro-batch."""

    real: int = 0
    supervised: int = 0
    started: float = field(default_factory=time.perf_counter)


class CountingTrainer(Trainer):
    """Trainer that counts real and supervised tokens for tokens/s logging."""

    def __init__(self, *args, counter: TokenCounter, pad_id: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.counter = counter
        self.pad_id = pad_id

    def training_step(self, model, inputs, num_items_in_batch=None):
        labels = inputs["labels"]
        if "attention_mask" in inputs:
            self.counter.real += int(inputs["attention_mask"].sum())
        else:  # packed: padding only at the row tail, where position_ids restart with no labels
            self.counter.real += int((inputs["input_ids"] != self.pad_id).sum())
        self.counter.supervised += int((labels[:, 1:] != IGNORE).sum())
        return super().training_step(model, inputs, num_items_in_batch)


class LiveCallback(TrainerCallback):
    """Logs loss, learning rate, grad norm, eval loss and tokens/s per step with dvclive."""

    def __init__(self, live, counter: TokenCounter) -> None:
        self.live = live
        self.counter = counter

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        elapsed = time.perf_counter() - self.counter.started
        if "loss" in logs:
            logs["tokens_per_second"] = self.counter.real / max(elapsed, 1e-9)
            logs["supervised_tokens"] = self.counter.supervised
        for key in ("loss", "learning_rate", "grad_norm", "eval_loss", "tokens_per_second",
                    "supervised_tokens"):
            if key in logs:
                name = f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"
                self.live.log_metric(name, float(logs[key]))
        self.live.step = state.global_step
        self.live.next_step()


def resolve_precision(choice: str) -> str:
    """auto: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def training_rows(ds: Dataset, params: TrainParams, tok_params: TokenizeParams) -> list[dict]:
    if params.packing == "pack":
        return pack_rows(ds["input_ids"], ds["labels"], tok_params.max_length,
                         tok_params.ignore_index)
    return [{"input_ids": i, "labels": la, "length": len(i)}
            for i, la in zip(ds["input_ids"], ds["labels"], strict=True)]


def build_trainer(
    model: PreTrainedModel,
    tokenized_dir: Path,
    params: TrainParams,
    tok_params: TokenizeParams,
    pad_id: int,
    output_dir: Path,
    live=None,
) -> tuple[CountingTrainer, TokenCounter, dict]:
    splits = load_from_disk(str(tokenized_dir))
    rows = training_rows(splits["train"], params, tok_params)
    eval_rows = training_rows(splits["validation"], params.model_copy(update={"packing": "pad"}),
                              tok_params)
    precision = resolve_precision(params.precision)
    if params.torch_threads:
        torch.set_num_threads(params.torch_threads)
    args = TrainingArguments(
        output_dir=str(output_dir),
        seed=params.seed,
        data_seed=params.seed,
        num_train_epochs=params.epochs,
        max_steps=params.max_steps,
        per_device_train_batch_size=params.per_device_batch_size,
        per_device_eval_batch_size=params.per_device_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        learning_rate=params.learning_rate,
        weight_decay=params.weight_decay,
        warmup_steps=params.warmup_ratio,  # a float < 1 is a ratio of the total steps
        lr_scheduler_type=params.lr_scheduler,
        max_grad_norm=params.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        optim="adamw_torch_fused" if torch.cuda.is_available() else "adamw_torch",
        eval_strategy="steps" if len(eval_rows) else "no",
        eval_steps=params.eval_steps,
        logging_steps=params.logging_steps,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=params.dataloader_workers,
        remove_unused_columns=False,
        gradient_checkpointing=params.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if params.packing == "pad" else "random",
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False,
    )
    counter = TokenCounter()
    trainer = CountingTrainer(
        model=model,
        args=args,
        train_dataset=rows,
        eval_dataset=eval_rows or None,
        data_collator=Collator(pad_id),
        callbacks=[LiveCallback(live, counter)] if live is not None else [],
        counter=counter,
        pad_id=pad_id,
    )
    real = sum(len(r["input_ids"]) for r in rows)
    supervised = sum(sum(v != IGNORE for v in r["labels"]) for r in rows)
    stats = {
        "rows": len(rows),
        "tokens_per_epoch": real,
        "padding_fraction": 0.0 if params.packing == "pad" else
        1 - real / max(1, len(rows) * tok_params.max_length),
        "supervised_fraction": supervised / max(1, real),
        "precision": precision,
    }
    return trainer, counter, stats


def summarize(trainer: CountingTrainer, counter: TokenCounter, seconds: float) -> dict:
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() else _peak_rss())
    return {
        "steps": trainer.state.global_step,
        "final_loss": losses[-1] if losses else math.nan,
        "final_eval_loss": evals[-1] if evals else math.nan,
        "train_seconds": round(seconds, 2),
        "real_tokens": counter.real,
        "supervised_tokens": counter.supervised,
        "tokens_per_second": round(counter.real / max(seconds, 1e-9), 1),
        "peak_memory_mb": round(peak / 2**20, 1),
    }


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
