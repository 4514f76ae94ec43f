"""Reading raw sources: files, globs and directories of JSON arrays or JSONL."""

from __future__ import annotations

import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatsft.errors import UserError

EXTENSIONS = (".json", ".jsonl")


class SourceError(UserError, ValueError):
    """A whole file cannot be read; the message names the file and line."""


@dataclass
class RawRecord:
    source: str  # file path as given
    locator: str  # "line 12" (JSONL) or "index 3" (JSON array)
    value: Any = None  # parsed JSON value, when it parsed
    error: tuple[str, str] | None = None  # (reason, detail) when it did not
    text: str = ""  # the raw text, kept for the quarantine file when it did not parse


def expand(path: str) -> list[Path]:
    """Files named by a path, a glob or a directory (recursively), in sorted order."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in EXTENSIONS and f.is_file())
    elif any(c in path for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(path, recursive=True) if Path(f).is_file())
    else:
        files = [p]
    if not files:
        raise SourceError(f"{path}: no JSON or JSONL files found")
    for f in files:
        if not f.is_file():
            raise SourceError(f"{f}: file not found")
    return files


def _decode(raw: bytes) -> tuple[str | None, str]:
    try:
        return raw.decode("utf-8"), ""
    except UnicodeDecodeError as err:
        return None, str(err)


def read_file(path: Path) -> Iterator[RawRecord]:
    """Yield every record of one file; bad lines are records with an error, not exceptions."""
    data = path.read_bytes()
    name = str(path)
    head = data.lstrip()[:1]
    if head == b"[" or (path.suffix == ".json" and head == b"{" and data.count(b"\n{") == 0):
        text, err = _decode(data)
        if text is None:
            raise SourceError(f"{name}: invalid UTF-8 ({err})")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise SourceError(f"{name}: line {e.lineno}: not valid JSON ({e.msg})") from None
        items = value if isinstance(value, list) else [value]
        for i, item in enumerate(items):
            yield RawRecord(name, f"index {i}", value=item)
        return
    # JSONL: a bad line is one quarantined record, but a file where no line parses is not
    # JSONL at all, and stops the stage naming its first bad line.
    records, first_error = [], None
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        text, err = _decode(raw)
        if text is None:
            records.append(RawRecord(name, f"line {lineno}", error=("invalid UTF-8", err),
                                     text=raw.decode("utf-8", "replace")))
            continue
        try:
            records.append(RawRecord(name, f"line {lineno}", value=json.loads(text)))
        except json.JSONDecodeError as e:
            first_error = first_error or f"{name}: line {lineno}: not JSON or JSONL ({e.msg})"
            records.append(RawRecord(name, f"line {lineno}", error=("not JSON", e.msg), text=text))
    if first_error and all(r.error for r in records):
        raise SourceError(first_error)
    yield from records
