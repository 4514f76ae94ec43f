"""Resumable checkpoints: only complete ones count, and only those of the same run.

Trainer writes `checkpoint-N/` file by file (weights, optimizer, scheduler, RNG, trainer
state), so a run killed mid-save leaves a directory that looks like a checkpoint but is not
one. Here a checkpoint is complete once its `COMPLETE` marker exists; the marker is written
(fsynced, then renamed into place) after every file of the checkpoint is on disk, on every
process, and records each file's size and SHA-256. Resuming picks the newest complete
checkpoint whose files still match (a checkpoint overwritten or cut short on disk is removed
with a message, and the one before it is used) and deletes incomplete ones.

The dvclive history (`metrics/train/`, which DVC deletes before the stage runs) is copied
into each checkpoint (`live/`) and restored on resume, so the curves stay whole.

`run.json` holds a fingerprint of everything that determines the training trajectory
(params, data, base model, process count): checkpoints of a different run are removed
rather than resumed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch.distributed as dist
from transformers import TrainerCallback

from chatsft.io import write_text
from chatsft.model.load import check_finite_files

MARKER = "COMPLETE"
RUN_FILE = "run.json"
LIVE = "live"  # the dvclive history up to the checkpoint's step
_STEP = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(root: Path) -> list[tuple[int, Path]]:
    """Every checkpoint-N directory, complete or not, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := _STEP.match(p.name))]
    return sorted(found)


def is_complete(path: Path) -> bool:
    return (path / MARKER).is_file()


def last_complete(root: Path) -> Path | None:
    complete = [p for _, p in checkpoint_dirs(root) if is_complete(p)]
    return complete[-1] if complete else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mark_complete(path: Path) -> None:
    """fsync every file of the checkpoint, then atomically create its marker, which records
    each file's size and SHA-256 (read back from disk)."""
    tmp = path / f".{MARKER}.tmp"
    files = {}
    for f in sorted(path.rglob("*")):
        if f.is_file() and f.name not in (MARKER, tmp.name):
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
            files[f.relative_to(path).as_posix()] = {"size": f.stat().st_size,
                                                     "sha256": _sha256(f)}
    with open(tmp, "w") as fh:
        fh.write(json.dumps({"files": files}, indent=1) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path / MARKER)
    _fsync_dir(path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def damage(path: Path) -> str | None:
    """Why a complete checkpoint cannot be resumed (a file missing, cut short or changed
    since it was written), or None when every file matches its recorded checksum."""
    try:
        files = json.loads((path / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "its COMPLETE marker records no checksums"
    for name, want in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        size = f.stat().st_size
        if size != want["size"]:
            return f"{name} has {size} bytes, {want['size']} were written (truncated)" if (
                size < want["size"]) else f"{name} has {size} bytes, {want['size']} were written"
        if _sha256(f) != want["sha256"]:
            return f"{name} does not match its recorded SHA-256 (corrupted)"
    return None


def save_live_history(live_dir: Path, checkpoint: Path) -> None:
    if live_dir.is_dir():
        shutil.copytree(live_dir, checkpoint / LIVE, dirs_exist_ok=True)


def restore_live_history(checkpoint: Path, live_dir: Path) -> bool:
    """Put the checkpoint's copy of the dvclive history back in `live_dir`."""
    saved = checkpoint / LIVE
    if not saved.is_dir():
        return False
    shutil.rmtree(live_dir, ignore_errors=True)
    shutil.copytree(saved, live_dir)
    return True


def remove_checkpoint(path: Path) -> None:
    """Unmark first, so a kill halfway through the deletion leaves an incomplete one."""
    (path / MARKER).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def fingerprint(*parts: object) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def files_fingerprint(directory: Path) -> str:
    """Content hash of a directory's files (a scratch base model is a few MB)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(directory).rglob("*") if p.is_file()):
        h.update(str(f.relative_to(directory)).encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def prepare(root: Path, run_fingerprint: str, is_main: bool = True) -> Path | None:
    """Clean `root` for this run; return the checkpoint to resume from, if any.

    Only the main process changes files; every process gets the same answer.
    """
    run_file = root / RUN_FILE
    same_run = run_file.is_file() and json.loads(run_file.read_text()).get(
        "fingerprint") == run_fingerprint
    if is_main:
        root.mkdir(parents=True, exist_ok=True)
        for _, path in checkpoint_dirs(root):
            if not same_run or not is_complete(path):
                remove_checkpoint(path)
        if not same_run:
            run_file.write_text(json.dumps({"fingerprint": run_fingerprint}) + "\n")
        while same_run and (newest := last_complete(root)) is not None and (
                problem := damage(newest)):
            print(f"train: not resuming from {newest}: {problem}; removed it", flush=True)
            remove_checkpoint(newest)
    _barrier()
    return last_complete(root) if same_run else None


def remove_incomplete(root: Path) -> None:
    for _, path in checkpoint_dirs(root):
        if not is_complete(path):
            remove_checkpoint(path)


# What a successful run leaves in the persisted directory: DVC warns "'models/checkpoints'
# is empty" at every run about an empty output, which tells the user nothing to do.
NOTE = "README.txt"
NOTE_TEXT = ("Resumable checkpoints of the train stage while it runs. A successful run removes "
             "them (train.keep_checkpoints: true keeps them).\n")


def clear(root: Path) -> None:
    """After a successful run: drop the checkpoints, keep the persisted directory (with a
    note saying what it is for)."""
    for _, path in checkpoint_dirs(root):
        remove_checkpoint(path)
    (root / RUN_FILE).unlink(missing_ok=True)
    write_text(root / NOTE, NOTE_TEXT)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CompleteCheckpoints(TrainerCallback):
    """Marks each checkpoint complete once all processes saved it (with the dvclive history
    so far, and only with finite weights), then rotates: keeps the newest `keep` complete
    checkpoints plus the best one."""

    def __init__(self, keep: int, live_dir: Path | None = None) -> None:
        self.keep = keep
        self.live_dir = live_dir

    def on_save(self, args, state, control, **kwargs):
        _barrier()  # every process has written its part (e.g. its RNG state)
        if state.is_world_process_zero:
            root = Path(args.output_dir)
            path = root / f"checkpoint-{state.global_step}"
            check_finite_files(path, path.name)
            if self.live_dir is not None:
                save_live_history(self.live_dir, path)
            mark_complete(path)
            best = Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None
            complete = [p for _, p in checkpoint_dirs(root) if is_complete(p)]
            for path in complete[: -self.keep]:
                if path.name != best:
                    remove_checkpoint(path)
        _barrier()
        return control
