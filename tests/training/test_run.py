"""Whole training runs on a tiny model: determinism, early stopping with best-checkpoint
selection, checkpoint rotation, dvclive logs and the summary."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from chatsft.training import checkpoints
from chatsft.training.run import run_training
from tests.training.helpers import tiny_params


def _run(tmp: Path, base, splits, tok, live=False, **train) -> dict:
    return run_training(tiny_params(**train), base, splits, tok, tmp / "sft", tmp / "ckpt",
                        tmp / "live" if live else None)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "sft" / "model.safetensors")


def test_same_seed_gives_identical_weights(tmp_path, tiny_model_dir, tiny_splits,
                                           chatml_tokenizer):
    runs = [_run(tmp_path / name, tiny_model_dir, tiny_splits, chatml_tokenizer, seed=seed,
                 max_steps=6, eval_steps=3, save_steps=3)
            for name, seed in (("a", 1), ("b", 1), ("c", 2))]
    a, b, c = (_weights(tmp_path / n) for n in "abc")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0]["final_loss"] == runs[1]["final_loss"]
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the seed does matter (data order)


def test_early_stopping_finishes_with_the_best_checkpoint(tmp_path, tiny_model_dir, tiny_splits,
                                                          chatml_tokenizer):
    """A learning rate too high for a constant schedule: eval loss rises after a few steps;
    patience 2 stops the run and the saved model is the best checkpoint, not the last."""
    from chatsft.model.load import load_model
    from chatsft.params import TokenizeParams
    from chatsft.training.data import make_rows
    from tests.training.helpers import one_step_trainer

    summary = _run(tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer, max_steps=20,
                   eval_steps=2, save_steps=2, learning_rate=0.08,
                   lr_scheduler="constant_with_warmup", early_stopping_patience=2)
    assert summary["steps"] < 20
    assert summary["steps"] == summary["best_step"] + 2 * 2  # two evals without improvement
    assert summary["selected_step"] == summary["best_step"]
    assert summary["final_eval_loss"] > summary["best_eval_loss"] + 0.1
    rows = make_rows(tiny_splits["validation"], "pack", TokenizeParams(max_length=128))
    trainer, _ = one_step_trainer(load_model(tmp_path / "sft"), rows, tmp_path / "eval",
                                  chatml_tokenizer.pad_token_id, True, eval_rows=rows)
    assert abs(trainer.evaluate()["eval_loss"] - summary["best_eval_loss"]) < 1e-5
    # A successful run leaves no checkpoint in the persisted directory, only its note.
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [checkpoints.NOTE]


def test_checkpoints_are_marked_complete_and_rotated(tmp_path, tiny_model_dir, tiny_splits,
                                                     chatml_tokenizer):
    summary = _run(tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer, max_steps=12,
                   eval_steps=2, save_steps=2, save_total_limit=2, keep_checkpoints=True)
    found = checkpoints.checkpoint_dirs(tmp_path / "ckpt")
    steps = [s for s, _ in found]
    assert all(checkpoints.is_complete(p) for _, p in found)
    assert steps[-2:] == [10, 12]
    assert set(steps) == {10, 12, summary["selected_step"]}
    assert (tmp_path / "ckpt" / checkpoints.RUN_FILE).is_file()
    assert checkpoints.last_complete(tmp_path / "ckpt").name == "checkpoint-12"


def test_no_checkpoint_at_the_last_step_unless_best_selection_needs_it(
        tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer):
    """The final model is saved anyway: a checkpoint at max_steps would only rewrite the
    optimizer state. Steps 4 and 8 are checkpointed, step 10 (the last) is not."""
    _run(tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer, max_steps=10, eval_steps=4,
         save_steps=4, save_total_limit=5, select_best=False, keep_checkpoints=True)
    assert [s for s, _ in checkpoints.checkpoint_dirs(tmp_path / "ckpt")] == [4, 8]
    assert (tmp_path / "sft" / "model.safetensors").is_file()


def test_incomplete_and_foreign_checkpoints_are_never_resumed(tmp_path):
    root = tmp_path / "ckpt"
    assert checkpoints.prepare(root, "run-a") is None
    for step in (2, 4, 6):
        (root / f"checkpoint-{step}").mkdir()
        (root / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x")
    checkpoints.mark_complete(root / "checkpoint-2")
    checkpoints.mark_complete(root / "checkpoint-4")  # 6 was being written when killed
    assert checkpoints.prepare(root, "run-a") == root / "checkpoint-4"
    assert not (root / "checkpoint-6").exists()
    # Other params or data: nothing is resumed and the old checkpoints go.
    assert checkpoints.prepare(root, "run-b") is None
    assert checkpoints.checkpoint_dirs(root) == []


def test_checkpoints_of_other_params_are_not_resumed(tmp_path, tiny_model_dir, tiny_splits,
                                                     chatml_tokenizer):
    first = _run(tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer, max_steps=4,
                 keep_checkpoints=True)
    again = _run(tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer, max_steps=4,
                 keep_checkpoints=True)
    other = _run(tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer, max_steps=4,
                 learning_rate=0.002)
    assert (first["resumed_from_step"], again["resumed_from_step"]) == (0, 4)
    assert other["resumed_from_step"] == 0 and other["final_loss"] != first["final_loss"]


def _tsv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def test_live_logs_and_summary(tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer):
    summary = _run(tmp_path, tiny_model_dir, tiny_splits, chatml_tokenizer, live=True,
                   max_steps=10, eval_steps=5, save_steps=5, warmup_ratio=0.3)
    plots = tmp_path / "live" / "plots" / "metrics"
    series = {name: _tsv(plots / f"{name}.tsv") for name in (
        "train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_second",
        "train/supervised_tokens", "eval/loss")}
    assert [int(r["step"]) for r in series["train/loss"]] == list(range(1, 11))
    assert [int(r["step"]) for r in series["eval/loss"]] == [5, 10]
    lr = [float(r["learning_rate"]) for r in series["train/learning_rate"]]
    peak = lr.index(max(lr))
    assert 0 < peak < 5 and lr[:peak + 1] == sorted(lr[:peak + 1])  # warmup rises
    assert lr[peak:] == sorted(lr[peak:], reverse=True) and lr[-1] < 0.1 * max(lr)  # cosine
    supervised = [float(r["supervised_tokens"]) for r in series["train/supervised_tokens"]]
    assert supervised == sorted(supervised) and supervised[-1] == summary["supervised_tokens"]
    assert all(float(r["tokens_per_second"]) > 0 for r in series["train/tokens_per_second"])
    for key in ("train_seconds", "real_tokens", "tokens_per_second", "peak_memory_mb"):
        assert summary[key] > 0, key
    assert summary["real_tokens"] > summary["supervised_tokens"] > 0
    assert math.isclose(summary["final_eval_loss"], float(series["eval/loss"][-1]["loss"]),
                        rel_tol=1e-6)
    assert json.loads((tmp_path / "live" / "metrics.json").read_text())["step"] == 10
    out = tmp_path / "sft"
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.rglob("*.bin")) and not list(out.rglob("*.pt*"))


def test_checkpoints_must_exist_at_evals_for_best_selection():
    from chatsft.params import ParamsError, parse_params

    bad = {"save_steps": 3, "eval_steps": 2}
    with pytest.raises(ParamsError, match=r"train.save_steps: .*multiple of eval_steps \(2\)"):
        parse_params({"train": bad})
    # Fine without best selection and early stopping (the default patience is 3).
    parse_params({"train": bad | {"select_best": False, "early_stopping_patience": 0}})
    assert parse_params({"train": {"eval_steps": 7}}).train.checkpoint_steps() == 7
