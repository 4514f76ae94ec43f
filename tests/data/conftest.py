"""Helpers for the data tests: write raw files and run the clean stage's core on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatsft.data.clean import CleanResult, clean_records
from chatsft.params import DataParams


def chat(*turns: str, system: str | None = None) -> dict:
    """A ChatML record from alternating user/assistant texts."""
    messages = [{"role": "system", "content": system}] if system else []
    roles = ("user", "assistant")
    messages += [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)]
    return {"messages": messages}


def line(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def write_lines(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture()
def clean(tmp_path):
    """clean(records_or_lines, name=..., **data_params) -> CleanResult, on one JSONL file;
    fractions default to 0 so every kept record lands in train, in input order."""

    def run(items: list, name: str = "raw.jsonl", strict: bool = False,
            **params: object) -> CleanResult:
        path = write_lines(tmp_path / name, [i if isinstance(i, bytes) else line(i)
                                             for i in items])
        params = {"validation_fraction": 0, "test_fraction": 0, **params}
        return clean_records(DataParams(raw=[str(path)], **params), strict=strict)

    return run
