"""Reading raw sources: files, globs and directories of JSON arrays or JSONL.

A file is read as a JSON array (or one JSON object) when it starts with `[`, or starts with
`{` and is a `.json` file holding a single value; otherwise it is JSONL, one record a line.
A malformed JSONL line is one quarantined record; a file that is not JSON or JSONL at all
(a broken array, or a first record line that is not UTF-8 JSON) stops the stage naming the
file and line.
"""

from __future__ import annotations

import glob
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from chatsft.errors import UserError

EXTENSIONS = (".json", ".jsonl")
BOM = b"\xef\xbb\xbf"


class SourceError(UserError, ValueError):
    """A whole file cannot be read; the message names the file and line."""


class RawRecord:
    """One record as read: its parsed value, or why it could not be parsed."""

    __slots__ = ("error", "locator", "source", "text", "value")

    def __init__(self, source: str, locator: str, value: Any = None,
                 error: tuple[str, str] | None = None, text: str = "") -> None:
        self.source = source  # file path as expanded from data.raw
        self.locator = locator  # "line 12" (JSONL) or "index 3" (JSON array)
        self.value = value  # the parsed JSON value, when it parsed
        self.error = error  # (reason, detail) when the record cannot be used as read
        # The record's original text, byte for byte (a JSONL line with its line break, or a
        # JSON array element's span): the quarantine keeps it verbatim, duplicate keys and
        # number spellings such as 1.0e2 included, which re-serializing the value would lose.
        self.text = text

    def original(self) -> str:
        """The record's text as in the file, without the line break."""
        text = self.text
        if text.endswith("\n"):
            text = text[:-1]
        return text[:-1] if text.endswith("\r") else text


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# NaN and Infinity parse by default but are not JSON: writing them back would produce files
# other JSON readers reject.
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def parse_json(text: str) -> Any:
    """Strict JSON (no NaN/Infinity); raises ValueError or RecursionError."""
    return _DECODER.decode(text)


def dump_json(value: Any) -> bytes:
    """Compact UTF-8 JSON. orjson is several times faster than `json.dumps` here, the clean
    stage's hottest call; the stdlib takes what orjson refuses (integers beyond 64 bits) and
    raises UnicodeEncodeError for lone surrogates."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def expand(path: str) -> list[Path]:
    """Files named by a path, a glob or a directory (recursively), in sorted order."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix in EXTENSIONS and f.is_file())
        if not files:
            raise SourceError(f"{path}: no .json or .jsonl files in this directory")
    elif any(c in path for c in "*?["):
        files = sorted(Path(f) for f in glob.glob(path, recursive=True) if Path(f).is_file())
        if not files:
            raise SourceError(f"{path}: no files match this pattern")
    elif not p.is_file():
        raise SourceError(f"{path}: file not found")
    else:
        files = [p]
    return files


def _first_byte(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(4096).removeprefix(BOM).lstrip()
    return head[:1]


def read_file(path: Path) -> Iterator[RawRecord]:
    """Yield every record of one file; bad records carry an error instead of raising."""
    head = _first_byte(path)
    if head == b"[" or (head == b"{" and path.suffix == ".json"):
        records = _read_json(path)
        if records is not None:
            yield from records
            return
    yield from _read_jsonl(path)


def _read_json(path: Path) -> list[RawRecord] | None:
    """The records of a JSON file, or None when it is JSONL after all (a `.json` of lines)."""
    name = str(path)
    data = path.read_bytes().removeprefix(BOM)
    try:
        text, bad_bytes = data.decode("utf-8"), False
    except UnicodeDecodeError:
        # Keep going: the records holding the bad bytes are quarantined, not the whole file.
        text, bad_bytes = data.decode("utf-8", "surrogateescape"), True
    try:
        value = parse_json(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip()[:1] == "{":
            return None
        raise SourceError(f"{name}: line {e.lineno} column {e.colno}: not valid JSON ({e.msg})"
                          ) from None
    except (ValueError, RecursionError) as e:
        raise SourceError(f"{name}: not valid JSON ({e})") from None
    items = _array_items(text) if isinstance(value, list) else [(value, text.strip())]
    records = []
    for i, (item, span) in enumerate(items):
        rec = RawRecord(name, f"index {i}", value=item, text=span)
        if bad_bytes and not _encodable(item):
            rec.error = ("invalid UTF-8", "the record holds bytes that are not UTF-8")
        records.append(rec)
    return records


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _array_items(text: str) -> list[tuple[Any, str]]:
    """Each element of the JSON array `text` (already known to parse) with its original text.
    The stdlib's decoder gives values only; its raw_decode, element by element, gives where
    each one ends."""
    i = _WHITESPACE.match(text, 0).end() + 1  # past "["
    items = []
    while True:
        i = _WHITESPACE.match(text, i).end()
        if text[i] == "]":
            return items
        value, end = _DECODER.raw_decode(text, i)
        items.append((value, text[i:end]))
        i = _WHITESPACE.match(text, end).end()
        i += text[i] == ","


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _read_jsonl(path: Path) -> Iterator[RawRecord]:
    name = str(path)
    parsed_any = False
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1:
                raw = raw.removeprefix(BOM)
            if raw.isspace() or not raw:
                continue
            locator = f"line {lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                if not parsed_any:
                    raise SourceError(f"{name}: {locator}: not UTF-8 text ({err})") from None
                text = raw.decode("utf-8", "surrogateescape")
                yield RawRecord(name, locator, error=("invalid UTF-8", str(err)), text=text)
                continue
            try:
                value = parse_json(text)
            except (ValueError, RecursionError) as err:
                if not parsed_any:
                    raise SourceError(f"{name}: {locator}: not JSON or JSONL ({_msg(err)})"
                                      ) from None
                yield RawRecord(name, locator, error=("not JSON", _msg(err)), text=text)
                continue
            parsed_any = True
            yield RawRecord(name, locator, value=value, text=text)


def _msg(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"{err.msg} at column {err.colno}"
    if isinstance(err, RecursionError):
        return "nested too deeply"
    return str(err)


def fingerprint(paths: list[str]) -> list[dict]:
    """Every file the `paths` (files, globs, directories) name, with its size and SHA-256: what
    the clean stage will read. DVC cannot take a list from params as dependencies, so the
    validate stage writes this and the clean stage depends on it."""
    files = []
    for path in paths:
        for f in expand(path):
            digest = hashlib.sha256()
            with open(f, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    digest.update(chunk)
            files.append({"path": str(f), "size": f.stat().st_size, "sha256": digest.hexdigest()})
    return files
