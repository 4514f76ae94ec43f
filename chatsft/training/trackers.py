"""Experiment trackers beside dvclive (`train.report_to`): TensorBoard, MLflow and Weights &
Biases through transformers' own integrations (`TrainingArguments.report_to`), so each gets
what Trainer logs (loss, learning rate, grad norm, eval loss, chatsft's token counts and eval
loss per source) at every logging step.

dvclive is chatsft's own callback (`callbacks.LiveCallback`, always on: `dvc plots` and
`dvc exp show` read it), never transformers' DVCLiveCallback, which would log a second copy.

The run is named after the DVC experiment (`dvc exp run` sets $DVC_EXP_NAME), so a run in
TensorBoard, MLflow or W&B matches its row in `dvc exp show`; outside `dvc exp run` it is
`$CHATSFT_RUN_NAME`, else `train-<UTC time>`. Where nothing else is configured, every tracker
writes under `tracking_dir` (`logs/` in the stage; git-ignored): TensorBoard event files in
`logs/tensorboard/<run name>/`, MLflow's file store in `logs/mlruns` (unless
$MLFLOW_TRACKING_URI is set; mlflow 3 also wants MLFLOW_ALLOW_FILE_STORE for it, which is set
with it), W&B's files in `logs/wandb` (unless $WANDB_DIR is set; set WANDB_MODE=offline to
keep them local and `wandb sync` them later).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from transformers import Trainer

from chatsft.errors import UserError

# report_to name -> (module transformers' integration imports, pip package)
TRACKERS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow"),
            "wandb": ("wandb", "wandb")}


def run_name() -> str:
    """The DVC experiment's name under `dvc exp run`, else $CHATSFT_RUN_NAME, else a
    timestamp."""
    return (os.environ.get("DVC_EXP_NAME") or os.environ.get("CHATSFT_RUN_NAME")
            or time.strftime("train-%Y%m%d-%H%M%S", time.gmtime()))


def tracker_arguments(report_to: list[str]) -> dict:
    """TrainingArguments keywords (report_to, run_name) for the trackers in `report_to`
    besides dvclive; a clear error for one that is not installed."""
    chosen = sorted({name for name in report_to if name != "dvclive"})
    missing = [name for name in chosen if importlib.util.find_spec(TRACKERS[name][0]) is None]
    if missing:
        pkgs = " ".join(TRACKERS[name][1] for name in missing)
        raise UserError(f"train.report_to: {', '.join(missing)} not installed "
                        f"(pip install {pkgs}, or pip install -e '.[trackers]')")
    return {"report_to": chosen, "run_name": run_name()}


@contextmanager
def tracker_files(trainer: Trainer, tracking_dir: str | Path) -> Iterator[None]:
    """During the block, point the trackers that have no user setting at `tracking_dir`.

    transformers 5 writes TensorBoard files to $TENSORBOARD_LOGGING_DIR or else under
    `output_dir` (models/checkpoints, emptied after the run), so its callback is given the
    directory; MLflow reads $MLFLOW_TRACKING_URI (else a database that mlflow-skinny cannot
    open) and W&B $WANDB_DIR when training starts, so those are set for the block unless the
    user set them, and restored after it.
    """
    tracking_dir = Path(tracking_dir).absolute()
    names = set(trainer.args.report_to or ())
    for callback in trainer.callback_handler.callbacks:
        if type(callback).__name__ == "TensorBoardCallback" and callback.logging_dir is None:
            callback.logging_dir = str(tracking_dir / "tensorboard" / trainer.args.run_name)
    env = {}
    if "mlflow" in names and not os.environ.get("MLFLOW_TRACKING_URI"):
        # mlflow 3 refuses its file store unless asked (it wants a database server or
        # SQLAlchemy); a local directory is what a pipeline run with no setup needs.
        env["MLFLOW_TRACKING_URI"] = (tracking_dir / "mlruns").as_uri()
        env["MLFLOW_ALLOW_FILE_STORE"] = "true"
    if "wandb" in names:
        (tracking_dir / "wandb").mkdir(parents=True, exist_ok=True)
        env["WANDB_DIR"] = str(tracking_dir / "wandb")
    env = {k: v for k, v in env.items() if not os.environ.get(k)}
    os.environ.update(env)
    try:
        yield
    finally:
        for key in env:
            os.environ.pop(key, None)
        if "wandb" in names:  # flush its files now rather than at interpreter exit
            import wandb

            wandb.finish()
