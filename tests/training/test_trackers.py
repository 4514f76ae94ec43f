"""train.report_to: TensorBoard, MLflow (local file store) and W&B (offline) beside dvclive,
through transformers' integrations, named after the DVC experiment; no network."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from chatsft.errors import UserError
from chatsft.training import trackers
from chatsft.training.run import run_training
from tests.training.helpers import tiny_params

STEPS = 4


@pytest.fixture()
def tracked_run(tmp_path, monkeypatch, tiny_model_dir, tiny_splits, chatml_tokenizer):
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "WANDB_DIR",
                "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DVC_EXP_NAME", "lusty-mast")  # what `dvc exp run` sets
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    params = tiny_params(max_steps=STEPS, eval_steps=2, save_steps=2,
                         report_to=["dvclive", "tensorboard", "mlflow", "wandb"])
    summary = run_training(params, tiny_model_dir, tiny_splits, chatml_tokenizer,
                           tmp_path / "sft", tmp_path / "ckpt", live_dir=tmp_path / "live",
                           tracking_dir=tmp_path / "logs")
    return tmp_path / "logs", summary


def test_tensorboard_mlflow_and_wandb_get_the_run(tracked_run, monkeypatch):
    logs, summary = tracked_run
    # TensorBoard: event files under logs/tensorboard/<experiment name>, scalars readable.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = logs / "tensorboard" / "lusty-mast"
    assert list(run_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(run_dir))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, STEPS + 1))
    assert losses[-1].value == pytest.approx(summary["final_loss"], rel=1e-6)
    assert [e.step for e in events.Scalars("eval/loss")] == [2, 4]
    assert "train/tokens_per_second" in events.Tags()["scalars"]

    # MLflow: a local file store, the run named after the experiment, the loss per step.
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # to read it back

    client = MlflowClient(tracking_uri=(logs / "mlruns").as_uri())
    runs = [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id])]
    assert [r.info.run_name for r in runs] == ["lusty-mast"]
    history = client.get_metric_history(runs[0].info.run_id, "loss")
    assert [m.step for m in history] == list(range(1, STEPS + 1))
    assert history[-1].value == pytest.approx(summary["final_loss"], rel=1e-6)

    # W&B offline: one run file (what `wandb sync` uploads), named, with the loss per step.
    (run_file,) = (logs / "wandb" / "wandb").glob("offline-run-*/run-*.wandb")
    recs = list(wandb_records(run_file))
    assert [r.run.display_name for r in recs if r.HasField("run")] == ["lusty-mast"]
    history = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
               for r in recs if r.HasField("history")]
    train = [(h["train/global_step"], h["train/loss"]) for h in history if "train/loss" in h]
    assert [step for step, _ in train] == list(range(1, STEPS + 1))
    assert train[-1][1] == pytest.approx(summary["final_loss"], rel=1e-6)


def wandb_records(path: Path, block: int = 32768):
    """The protobuf records of a W&B run file: a 7-byte header (":W&B", magic, version),
    then LevelDB log blocks (records of 7-byte headers: crc, length, type 1 full, 2 first,
    3 middle, 4 last). wandb 0.31 ships no reader for it in Python."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_run_name_is_the_dvc_experiment_name(monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "pious-cite")
    assert trackers.tracker_arguments(["dvclive", "tensorboard"]) == {
        "report_to": ["tensorboard"], "run_name": "pious-cite"}
    monkeypatch.delenv("DVC_EXP_NAME")
    monkeypatch.setenv("CHATSFT_RUN_NAME", "mine")
    assert trackers.run_name() == "mine"
    monkeypatch.delenv("CHATSFT_RUN_NAME")
    assert trackers.run_name().startswith("train-")
    assert trackers.tracker_arguments(["dvclive"])["report_to"] == []


def test_a_tracker_that_is_not_installed_is_a_clear_error(monkeypatch):
    real = trackers.importlib.util.find_spec
    monkeypatch.setattr(trackers.importlib.util, "find_spec",
                        lambda name: None if name == "mlflow" else real(name))
    with pytest.raises(UserError, match=r"report_to: mlflow not installed \(pip install"):
        trackers.tracker_arguments(["mlflow"])
