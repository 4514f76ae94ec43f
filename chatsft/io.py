"""Atomic file output: every artifact is written to a temporary path, then renamed.

An interrupted stage therefore never leaves a half-written file or folder that DVC
could mistake for a finished output.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from chatsft.errors import UserError


class OutputKindError(UserError):
    """An output path already holds something of the other kind (a directory for a file)."""


def check_output_kind(target: str | Path, is_dir: bool) -> None:
    """Refuse to replace a directory with a file or a file with a directory: it is not an
    earlier version of this output but something of the user's, and is never removed."""
    target = Path(target)
    if target.is_symlink() or not target.exists() or target.is_dir() == is_dir:
        return
    found, wanted = ("a directory", "a file") if target.is_dir() else ("a file", "a directory")
    raise OutputKindError(f"{target}: exists and is {found}, but this output is {wanted}; "
                          "move it away or choose another path (nothing was written)")


@contextlib.contextmanager
def atomic_path(target: str | Path, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `target`; on success, rename it onto `target`
    (`replace_output`: only an output of the same kind is replaced)."""
    target = Path(target)
    check_output_kind(target, is_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    work = tmp if is_dir else tmp / target.name
    try:
        yield work
        replace_output(work, target, is_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_output(work: Path, target: Path, is_dir: bool) -> None:
    """Rename the finished `work` onto `target`, which may only hold an earlier output of the
    same kind; a directory's earlier version is moved aside (os.replace cannot overwrite a
    non-empty directory), then removed."""
    check_output_kind(target, is_dir)  # it may have appeared while we were writing
    previous = work.with_name(work.name + ".previous")
    if is_dir and target.is_dir() and not target.is_symlink():
        os.replace(target, previous)
    os.replace(work, target)
    shutil.rmtree(previous, ignore_errors=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def dumps_json(obj: object) -> str:
    """Stable JSON: sorted keys, UTF-8, trailing newline (same bytes for same data)."""
    return json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def write_json(path: str | Path, obj: object) -> None:
    write_text(path, dumps_json(obj))


def write_jsonl(path: str | Path, records: Iterable[object]) -> int:
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# What `atomic_path` names its temporaries: tempfile.mkdtemp(prefix=f".{name}.") appends 8
# characters from tempfile's alphabet (lower-case letters, digits, underscore).
_TEMP_SUFFIX = re.compile(r"[a-z0-9_]{8}")


def remove_stale_temporaries(*targets: str | Path) -> list[Path]:
    """Delete the temporaries that `atomic_path` left beside `targets` when a run was killed
    (for example `data/.clean.k3j_x9q2`); returns them. Only entries named exactly as
    `atomic_path` names them for these targets are touched, nothing else of the user's.
    Call it at a stage's start, for the stage's own outputs: another run writing the same
    output at the same time would lose its temporary."""
    removed = []
    for target in map(Path, targets):
        prefix = f".{target.name}."
        if not target.parent.is_dir():
            continue
        for entry in target.parent.iterdir():
            name = entry.name
            if not (name.startswith(prefix) and _TEMP_SUFFIX.fullmatch(name[len(prefix):])):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:  # a temporary file, should atomic_path make files rather than folders
                entry.unlink()
            removed.append(entry)
    return removed
