"""Item 7 of issue 14: a full disk, a closed stdin or stdout, `train.epochs: .inf`, a model
folder with only `pytorch_model.bin` and a model path that does not exist each give one
clear `error:` line and exit status 1, no traceback, and nothing half-written.

The full disk is real: a small tmpfs mounted over the output's directory in a private user
and mount namespace (`unshare -rm`), where the stage runs; what it left is listed there
before the mount goes away."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.reliability.conftest import env, errors_of, run, set_params


def _can_mount() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs none /mnt"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_tmpfs = pytest.mark.skipif(not _can_mount(), reason="cannot mount a tmpfs here "
                                 "(unshare -rm not permitted)")


def _one_error(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, (
        proc.stderr[-3000:])
    lines = [line for line in errors_of(proc) if line.startswith("error:")]
    assert len(lines) == 1 and text in lines[0], proc.stderr[-3000:]


def _on_full_disk(ws: Path, mount: str, size: str, stage: str, before: str = ""
                  ) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `python -m stages.STAGE` in `ws` with a tmpfs of `size` over `ws/mount` (after
    running `before` in it); return the process and what the tmpfs holds afterwards."""
    listing = ws.parent / "listing"
    script = (f"mkdir -p {shlex.quote(mount)} && "
              f"mount -t tmpfs -o size={size} tmpfs {shlex.quote(mount)} && {before} "
              f"{shlex.quote(sys.executable)} -m stages.{stage}; rc=$?; "
              f"find {shlex.quote(mount)} -mindepth 1 > {shlex.quote(str(listing))}; exit $rc")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ws, env=env(),
                          capture_output=True, text=True, timeout=600)
    left = listing.read_text().split() if listing.exists() else ["(no listing)"]
    return proc, left


def _pages(directory: Path) -> int:
    """KB a directory's files take on a tmpfs (whole 4 KB pages)."""
    return sum(-(-f.stat().st_size // 4096) * 4 for f in directory.rglob("*") if f.is_file())


@pytest.fixture()
def raw_data(tmp_path, demo_records) -> Path:
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in demo_records))
    return path


@needs_tmpfs
def test_item7_disk_full_in_clean_and_tokenize(tmp_path, raw_data, tiny_model_dir):
    """Item 7: ENOSPC while the clean stage, then the tokenize stage, writes its outputs."""
    ws = tmp_path / "ws"
    (ws / "data").mkdir(parents=True)
    (ws / "params.yaml").write_text(yaml.safe_dump({"data": {"raw": [str(raw_data)]},
                                                    "tokenize": {"max_length": 128},
                                                    "model": {}}))
    proc, left = _on_full_disk(ws, "data", "32k", "clean")
    _one_error(proc, "disk full")
    assert left == [] and not (ws / "metrics" / "clean.json").exists()

    assert run(["-m", "stages.clean"], ws).returncode == 0  # now with room
    shutil.copytree(tiny_model_dir, ws / "models" / "base")
    shutil.move(ws / "data" / "clean", ws / "clean")
    room = _pages(ws / "clean") + 8  # data/clean, and 8 KB for data/tokenized
    proc, left = _on_full_disk(ws, "data", f"{room}k", "tokenize",
                               before="cp -r ../ws/clean data/clean &&")
    _one_error(proc, "disk full")
    assert sorted(Path(p).relative_to("data").parts[0] for p in left) == ["clean"] * len(left)
    assert not (ws / "metrics" / "tokenize.json").exists()


@pytest.mark.slow
@needs_tmpfs
def test_item7_disk_full_in_checkpoint_and_model_save(train_workspace):
    """Item 7: ENOSPC while Trainer writes a checkpoint, and while the final model is saved:
    no half-written checkpoint or model is left."""
    ws = train_workspace
    proc, left = _on_full_disk(ws, "models/checkpoints", "64k", "train")
    _one_error(proc, "disk full")
    assert [Path(p).name for p in left] == ["run.json"]
    assert not (ws / "models" / "sft").exists()

    # No checkpoints; models/ (with the base model) has too little room for models/sft.
    set_params(ws, "train", save_steps=1000, select_best=False)
    room = _pages(ws / "models" / "base") + 16
    shutil.move(ws / "models" / "base", ws / "base")
    proc, left = _on_full_disk(ws, "models", f"{room}k", "train",
                               before="cp -r ../ws/base models/base &&")
    _one_error(proc, "disk full")
    tops = {Path(p).relative_to("models").parts[0] for p in left}
    assert tops <= {"base", "checkpoints"}, tops


def test_item7_chat_with_stdin_closed_or_stdout_closed(tmp_path, tiny_model_dir):
    """Item 7: `chatsft chat <&-` and `chatsft chat | head` (the reader gone)."""
    chat = [sys.executable, "-m", "chatsft.cli", "chat", "--model-path", str(tiny_model_dir),
            "--max-new-tokens", "4"]
    proc = subprocess.run(["sh", "-c", shlex.join(chat) + " <&-"], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=300)
    _one_error(proc, "chat reads your messages from standard input, which is closed")

    reader = subprocess.Popen(chat, cwd=tmp_path, env=env(), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader.stdout.close()  # like `head` exiting before the first reply
    _, err = reader.communicate("hello\nhow are you?\n", timeout=300)
    _one_error(subprocess.CompletedProcess(chat, reader.returncode, "", err), "broken pipe")


def test_item7_infinite_epochs_is_a_params_error(train_workspace):
    """Item 7: `train.epochs: .inf` (valid YAML) is refused when params are read."""
    set_params(train_workspace, "train", epochs=float("inf"), max_steps=-1)
    assert ".inf" in (train_workspace / "params.yaml").read_text()
    proc = run(["-m", "stages.train"], train_workspace)
    _one_error(proc, "params.yaml: invalid parameters")
    assert "train.epochs: Input should be a finite number" in proc.stderr
    assert not (train_workspace / "models" / "sft").exists()


def test_item7_model_folder_with_only_pytorch_model_bin_fails_in_base(tmp_path,
                                                                      tiny_model_dir):
    """Item 7: a folder holding pytorch_model.bin (a pickle) and no safetensors is refused
    by the base stage, with how to convert it, rather than late in train."""
    folder = tmp_path / "old-model"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "params.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": str(folder)}}))
    proc = run(["-m", "stages.base"], ws)
    _one_error(proc, "safetensors only: convert with")
    assert not (ws / "models" / "base").exists()


def test_item7_model_path_that_does_not_exist(tmp_path):
    """Item 7: a missing model directory is named as such (not "Repo id must be in the
    form ..."), in the base stage and in `chatsft predict`."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"model": {"name_or_path": "models/my/finetune"}}))
    proc = run(["-m", "stages.base"], tmp_path)
    _one_error(proc, "models/my/finetune: no such model directory")
    assert "Repo id" not in proc.stderr
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    proc = run(["-m", "chatsft.cli", "predict", "--model-path", "runs/x/model", "--data-path",
                str(data), "--output-path", str(tmp_path / "o.jsonl")], tmp_path)
    _one_error(proc, "runs/x/model: no such model directory")
    assert not (tmp_path / "o.jsonl").exists()
