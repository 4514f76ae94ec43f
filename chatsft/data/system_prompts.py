"""`data.system_prompts`: a system prompt for every conversation that has none.

Each such conversation gets the prompt at a hash of its record id (and data.seed), so the
choice does not depend on the order or number of records, and a conversation keeps its
prompt when other data changes. It applies to every split, so held-out conversations look
like the training ones. The prompts pass the same content rules as the data (control
characters, special tokens); one that fails stops the stage naming it.
"""

from __future__ import annotations

import hashlib

import orjson

from chatsft.data.errors import Reject
from chatsft.data.formats import to_record
from chatsft.data.sources import dump_json
from chatsft.data.validate import ContentRules, clean_record
from chatsft.errors import UserError


class SystemPrompts:
    """Assigns the prompts and counts what it did, for `metrics/clean.json`."""

    def __init__(self, prompts: list[str], rules: ContentRules, seed: int) -> None:
        self.prompts = [self._checked(i, p, rules) for i, p in enumerate(prompts)]
        self.seed = f"{seed}:system:".encode()
        self.assigned = [0] * len(prompts)
        self.had_one = 0

    @staticmethod
    def _checked(i: int, prompt: str, rules: ContentRules) -> str:
        probe = {"messages": [{"role": "system", "content": prompt},
                              {"role": "user", "content": "?"},
                              {"role": "assistant", "content": "."}]}
        try:
            return clean_record(to_record(probe, "chatml", False), rules)["messages"][0]["content"]
        except Reject as r:
            raise UserError(f"data.system_prompts[{i}]: {r.reason} ({r.detail})") from None

    def apply(self, line: bytes, rid: str) -> bytes:
        """`line` with a system prompt first, unless it has one (or no prompts are set)."""
        if not self.prompts:
            return line
        record = orjson.loads(line)
        if record["messages"][0]["role"] == "system":
            self.had_one += 1
            return line
        digest = hashlib.blake2b(self.seed + rid.encode(), digest_size=8).digest()
        i = int.from_bytes(digest, "big") % len(self.prompts)
        self.assigned[i] += 1
        record["messages"].insert(0, {"role": "system", "content": self.prompts[i]})
        return dump_json(record)

    def report(self) -> dict:
        return {"assigned": sum(self.assigned), "already_had_one": self.had_one,
                "by_prompt": [{"prompt": p[:80], "conversations": n}
                              for p, n in zip(self.prompts, self.assigned, strict=True)]}
