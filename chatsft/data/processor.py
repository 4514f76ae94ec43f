"""`ChatMLDataProcessor`: build, save and load ChatML records (the seed project's API).

Records are checked with the clean stage's own rules (formats, role order, content), so a
file this class saves is one the clean stage keeps, and a file it loads raises on the first
record the clean stage would quarantine, naming the file, the record and the reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from chatsft.data.errors import Reject
from chatsft.data.formats import to_record
from chatsft.data.sources import dump_json, expand, read_file
from chatsft.data.validate import ContentRules, clean_record
from chatsft.io import atomic_path
from chatsft.params import DataParams


class ChatMLDataProcessor:
    """ChatML records `{"messages": [{"role", "content"}, ...]}` in JSONL or JSON files."""

    def __init__(self, params: DataParams | None = None) -> None:
        self.params = params or DataParams()
        self.rules = ContentRules.from_params(self.params)
        self.allow_tools = self.params.tool_calls == "keep"

    @staticmethod
    def create_chatml_sample(system: str | None, user: str, assistant: str) -> dict:
        """One single-turn record; no system message when `system` is None or empty."""
        messages = [{"role": "system", "content": system}] if system else []
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
        return {"messages": messages}

    def validate(self, record: object, fmt: str = "auto") -> dict:
        """The record as the clean stage would keep it (any supported format), or Reject."""
        return clean_record(to_record(record, fmt, self.allow_tools), self.rules)

    def save_chatml_data(self, samples: Iterable[dict], path: str | Path) -> int:
        """Write records as JSONL (a JSON array when `path` ends in .json), atomically; a
        record the clean stage would reject raises Reject naming its index. Returns the count."""
        lines = []
        for i, sample in enumerate(samples):
            try:
                lines.append(dump_json(self.validate(sample, "chatml")))
            except Reject as r:
                raise Reject(r.reason, f"sample {i}: {r.detail}") from None
            except UnicodeEncodeError:
                raise Reject("lone surrogate", f"sample {i}") from None
        with atomic_path(path) as tmp:
            if Path(path).suffix == ".json":
                tmp.write_bytes(b"[\n" + b",\n".join(lines) + b"\n]\n")
            else:
                tmp.write_bytes(b"".join(line + b"\n" for line in lines))
        return len(lines)

    def load_chatml_data(self, path: str | Path) -> list[dict]:
        """ChatML records from a file, glob or directory of any supported format."""
        out = []
        for file in expand(str(path)):
            for rec in read_file(file):
                try:
                    if rec.error is not None:
                        raise Reject(*rec.error)
                    out.append(self.validate(rec.value))
                except Reject as r:
                    raise Reject(r.reason, f"{rec.source}: {rec.locator}: {r.detail}") from None
        return out
