"""Shared helpers for the training tests: tiny params and in-process trainers."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from chatsft.params import Params
from chatsft.training.args import training_arguments
from chatsft.training.data import collator_for
from chatsft.training.trainer import SFTTrainer

# Small and fast, but a real run: evaluation, checkpoints, logging on every step.
TINY_TRAIN = {
    "seed": 7, "max_steps": 12, "per_device_batch_size": 4, "learning_rate": 0.003,
    "warmup_ratio": 0.1, "eval_steps": 4, "save_steps": 4, "logging_steps": 1,
    "early_stopping_patience": 0,
}


def tiny_params(**train) -> Params:
    return Params.model_validate({"tokenize": {"max_length": 128},
                                  "train": TINY_TRAIN | train})


class GradCapture(TrainerCallback):
    """Copies the gradients just before each optimizer step (after clipping)."""

    def __init__(self) -> None:
        self.grads: list[dict[str, torch.Tensor]] = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters()
                           if p.grad is not None})


class RecordingTrainer(SFTTrainer):
    """Keeps every micro-batch it trains on."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.micro_batches: list[dict] = []

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.micro_batches.append({k: v.clone() for k, v in inputs.items()
                                   if isinstance(v, torch.Tensor)})
        return super().training_step(model, inputs, num_items_in_batch)


def one_step_trainer(model, rows, out: Path, pad_id: int, chunked: bool, eval_rows=None,
                     precision: str = "fp32", **train) -> tuple[RecordingTrainer, GradCapture]:
    """A trainer for exactly the given rows, clipping effectively off."""
    params = tiny_params(**({"max_steps": 1, "max_grad_norm": 1e6, "warmup_ratio": 0.0} | train))
    args = training_arguments(params.train, out, precision, has_eval=bool(eval_rows))
    capture = GradCapture()
    trainer = RecordingTrainer(model=model, args=args, train_dataset=rows,
                               eval_dataset=eval_rows, data_collator=collator_for(model, pad_id),
                               callbacks=[capture], chunked_loss=chunked)
    return trainer, capture


def losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]
