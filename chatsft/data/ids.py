"""Stable record ids and the user's exclusion list.

A record's id is a hash of its cleaned conversation (messages and tools, as the clean stage
writes them before any system prompt is added): it stays the same when files are reordered,
renamed or merged, and when other records come or go, and changes only when the
conversation itself does. Exact duplicates share an id, and are quarantined anyway.

`data/exclude.txt` (committed, a dependency of the clean stage) lists ids, one a line, `#`
starting a comment; `chatsft data exclude ID...` appends to it, and the next `dvc repro`
moves those records to the quarantine with reason `excluded by user`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from chatsft.errors import UserError

EXCLUDE_FILE = "data/exclude.txt"
ID_CHARS = 16  # hex digits: 64 bits, no collision to expect below billions of records
_ID = re.compile(rf"[0-9a-f]{{{ID_CHARS}}}")
HEADER = ("# Record ids the clean stage moves to the quarantine (reason: excluded by user).\n"
          "# One id a line; `chatsft data exclude ID...` appends here.\n")


def record_id(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=ID_CHARS // 2).hexdigest()


def with_id(line: bytes, rid: str) -> bytes:
    """The JSON object `line` with `"id"` as its first key (a clean record never has one)."""
    return b'{"id":"' + rid.encode() + b'",' + line[1:]


def _check(rid: str, where: str) -> str:
    if not _ID.fullmatch(rid):
        raise UserError(f"{where}: {rid!r} is not a record id ({ID_CHARS} hexadecimal digits, "
                        "as in data/clean/*.jsonl and metrics/hardest.jsonl)")
    return rid


def read_exclusions(path: str | Path) -> set[str]:
    """The ids listed in `path` (none when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return set()
    ids = set()
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.split("#", 1)[0].strip()
        if text:
            ids.add(_check(text, f"{path}: line {n}"))
    return ids


def ids_in_file(path: str | Path) -> list[str]:
    """The ids in a file: one a line (`#` comments), or JSONL records' `id` fields (such as
    metrics/hardest.jsonl)."""
    import json

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror})") from None
    ids = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("{") else line
        if line.startswith("{"):
            try:
                line = json.loads(line)["id"]
            except (ValueError, KeyError, TypeError):
                raise UserError(f"{path}: line {n}: a JSON line without an `id` field") from None
        if line:
            ids.append(_check(str(line), f"{path}: line {n}"))
    return ids


def add_exclusions(path: str | Path, ids: Iterable[str]) -> list[str]:
    """Append the ids not yet listed to `path` (created with a header); returns those added."""
    from chatsft.io import write_text

    path = Path(path)
    listed = read_exclusions(path)
    new: list[str] = []
    for rid in ids:
        rid = _check(rid.strip(), "chatsft data exclude")
        if rid not in listed and rid not in new:
            new.append(rid)
    if new:
        text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
        if text and not text.endswith("\n"):
            text += "\n"
        write_text(path, text + "".join(f"{rid}\n" for rid in new))
    return new
