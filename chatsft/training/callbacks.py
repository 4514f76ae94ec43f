"""Trainer callbacks: dvclive logging, and a log at the last step."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from chatsft.model.load import NonFiniteError

# Trainer log key -> dvclive metric name
LIVE_METRICS = {
    "loss": "train/loss",
    "learning_rate": "train/learning_rate",
    "grad_norm": "train/grad_norm",
    "tokens_per_second": "train/tokens_per_second",
    "supervised_tokens": "train/supervised_tokens",
    "eval_loss": "eval/loss",
}


class LiveCallback(TrainerCallback):
    """Logs loss, learning rate, grad norm, tokens/s, supervised tokens and eval loss per
    logged step with dvclive (main process only), keyed by the optimizer step."""

    def __init__(self, live) -> None:
        self.live = live

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero:
            return
        logs = logs or {}
        if not any(key in logs for key in LIVE_METRICS):
            return
        self.live.step = state.global_step
        for key, name in LIVE_METRICS.items():
            if key in logs:
                self.live.log_metric(name, float(logs[key]))
        self.live.make_summary()


class StopOnNonFinite(TrainerCallback):
    """Stop with a clear error when the logged loss or gradient norm is NaN or infinite.

    The logged loss averages every step since the last log, so one NaN step shows. Under fp16
    the gradient scaler skips steps whose gradients overflow (and lowers its scale); those
    infinite norms are expected, and a real divergence still shows in the loss.
    """

    def __init__(self, fp16: bool) -> None:
        self.fp16 = fp16

    def on_log(self, args, state, control, logs=None, **kwargs):
        for key in ("loss", "eval_loss") + (() if self.fp16 else ("grad_norm",)):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise NonFiniteError(
                    f"train: {key} is {value} at step {state.global_step}: training diverged "
                    "(or the base model holds NaN/inf); stopped, no model written. Lower "
                    "train.learning_rate or check the base model's weights")


class ConsoleProgress(ProgressCallback):
    """The progress bar (with ETA), printing about 20 training log lines per run plus every
    evaluation, however often metrics are logged to dvclive."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        every = max(1, state.max_steps // 20)
        if "loss" not in (logs or {}) or state.global_step % every == 0 or (
                state.global_step >= state.max_steps):
            super().on_log(args, state, control, logs=logs, **kwargs)


class LogLastStep(TrainerCallback):
    """Log at the final step too, so the last loss is always in the history."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_log = True
        return control


class NoFinalCheckpoint(TrainerCallback):
    """No checkpoint at max_steps unless best-checkpoint selection needs it.

    transformers' DefaultFlowCallback forces one, but the final model is saved right after
    training anyway: the checkpoint only rewrites the optimizer state (twice the fp32 weights:
    tens of GB for a 7B model, and ~0.25 s of a 23 s benchmark run here).
    """

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and not args.load_best_model_at_end:
            control.should_save = False
        return control


def truncate_live_history(live_dir: str | Path, step: int) -> None:
    """Drop dvclive rows after `step`: a run killed after its last checkpoint logged steps
    that the resumed run logs again."""
    for tsv in Path(live_dir).glob("plots/metrics/**/*.tsv"):
        with open(tsv, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows or "step" not in rows[0]:
            continue
        col = rows[0].index("step")
        kept = [rows[0]] + [r for r in rows[1:] if r and int(r[col]) <= step]
        with open(tsv, "w", newline="", encoding="utf-8") as f:
            csv.writer(f, delimiter="\t", lineterminator="\n").writerows(kept)
