"""transformers TrainingArguments from `train:` params, and the precision choice."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainingArguments

from chatsft.errors import UserError
from chatsft.params import TrainParams


class PrecisionError(UserError):
    """The requested precision cannot run on this device."""


def resolve_precision(choice: str, cuda: bool | None = None) -> str:
    """auto: bf16 on GPUs that support it, fp16 (with loss scaling) on older GPUs, fp32 on CPU.

    On CPU, bf16 means fp32 weights with bf16 autocast; fp16 needs a CUDA GPU.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if choice == "auto":
        return ("bf16" if bf16_ok else "fp16") if cuda else "fp32"
    if choice == "fp16" and not cuda:
        raise PrecisionError("train.precision=fp16 needs a CUDA GPU; on CPU use fp32 or bf16")
    if choice == "bf16" and cuda and not bf16_ok:
        raise PrecisionError("train.precision=bf16: this GPU does not support bf16; use fp16")
    return choice


def training_arguments(
    params: TrainParams, output_dir: Path, precision: str, has_eval: bool,
    trackers: dict | None = None, draws: int = 1,
) -> TrainingArguments:
    """`trackers`: report_to and run_name (`trackers.tracker_arguments`); none by default.
    `draws`: how many epochs' draws the training rows hold one after the other
    (data.resample_each_epoch), which one pass of Trainer covers."""
    cuda = torch.cuda.is_available()
    evaluate = "steps" if has_eval else "no"
    select_best = params.select_best and has_eval
    return TrainingArguments(
        output_dir=str(output_dir),
        seed=params.seed,
        data_seed=params.seed,
        num_train_epochs=params.epochs / draws,
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
        # torch has fused AdamW kernels for CUDA and (since 2.4) CPU: one kernel per step
        # instead of a loop over parameters; same update as the plain one.
        optim="adamw_torch_fused",
        eval_strategy=evaluate,
        eval_steps=params.eval_steps,
        logging_steps=params.logging_steps,
        # Trainer would log a NaN/inf step's loss as the average of the others: it must show
        # (and stop the run, callbacks.StopOnNonFinite).
        logging_nan_inf_filter=False,
        save_strategy="steps",
        save_steps=params.checkpoint_steps(),
        save_total_limit=None,  # rotation happens after a checkpoint is marked complete
        load_best_model_at_end=select_best,
        metric_for_best_model="eval_loss" if has_eval else None,
        greater_is_better=False,
        **(trackers or {"report_to": []}),
        dataloader_num_workers=params.dataloader_workers,
        remove_unused_columns=False,
        activation_checkpointing=params.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if params.packing == "pad" else "random",
        use_cpu=not cuda,
        disable_tqdm=False,
    )
