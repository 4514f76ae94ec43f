"""Turn a raw record of any supported format into ChatML messages.

Each converter either returns `list[{"role", "content"}]` or raises `Reject` with a
named reason; it never guesses silently.
"""

from __future__ import annotations

from typing import Any

from chatsft.errors import UserError


class Reject(UserError):
    """A record the clean stage quarantines: `reason` is a stable name, `detail` says more."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "function_call",
    "observation": "observation",
    "tool": "tool",
}


def detect_format(record: Any) -> str:
    if not isinstance(record, dict):
        raise Reject("not an object", f"got {type(record).__name__}")
    if "messages" in record:
        return "chatml"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    raise Reject("unknown format", f"keys {sorted(record)[:8]}")


def _text(value: Any, where: str) -> str:
    """Content as a string: a string, or a list of text parts (OpenAI style)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for part in value:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(
                part.get("text"), str
            ):
                parts.append(part["text"])
            else:
                raise Reject("wrong type", f"{where}: unsupported content part {part!r:.60}")
        return "".join(parts)
    raise Reject("wrong type", f"{where} must be a string, got {type(value).__name__}")


def from_chatml(record: dict) -> list[dict]:
    msgs = record.get("messages")
    if not isinstance(msgs, list):
        raise Reject("missing field" if msgs is None else "wrong type", "messages must be a list")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise Reject("wrong type", f"messages[{i}] must be an object")
        if "role" not in m or "content" not in m:
            raise Reject("missing field", f"messages[{i}] needs role and content")
        if not isinstance(m["role"], str):
            raise Reject("wrong type", f"messages[{i}].role must be a string")
        out.append({"role": m["role"], "content": _text(m["content"], f"messages[{i}].content")})
    return out


def from_sharegpt(record: dict) -> list[dict]:
    conv = record.get("conversations")
    if not isinstance(conv, list):
        raise Reject(
            "missing field" if conv is None else "wrong type", "conversations must be a list"
        )
    out = []
    system = record.get("system")
    if system is not None:
        out.append({"role": "system", "content": _text(system, "system")})
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise Reject("missing field", f"conversations[{i}] needs from and value")
        role = SHAREGPT_ROLES.get(turn["from"]) if isinstance(turn["from"], str) else None
        if role is None:
            raise Reject("unknown role", f"conversations[{i}].from = {turn['from']!r:.40}")
        out.append({"role": role, "content": _text(turn["value"], f"conversations[{i}].value")})
    return out


def from_alpaca(record: dict) -> list[dict]:
    for key in ("instruction", "output"):
        if key not in record:
            raise Reject("missing field", f"alpaca record needs {key!r}")
    out = []
    if record.get("system"):
        out.append({"role": "system", "content": _text(record["system"], "system")})
    history = record.get("history") or []
    if not isinstance(history, list):
        raise Reject("wrong type", "history must be a list of [user, assistant] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise Reject("wrong type", f"history[{i}] must be a [user, assistant] pair")
        out.append({"role": "user", "content": _text(pair[0], f"history[{i}][0]")})
        out.append({"role": "assistant", "content": _text(pair[1], f"history[{i}][1]")})
    instruction = _text(record["instruction"], "instruction")
    extra = _text(record.get("input") or "", "input")
    prompt = f"{instruction}\n{extra}" if instruction and extra else instruction or extra
    out.append({"role": "user", "content": prompt})
    out.append({"role": "assistant", "content": _text(record["output"], "output")})
    return out


CONVERTERS = {"chatml": from_chatml, "sharegpt": from_sharegpt, "alpaca": from_alpaca}


def to_messages(record: Any, fmt: str = "auto") -> list[dict]:
    """Convert one raw record to ChatML messages, or raise Reject."""
    if not isinstance(record, dict):
        raise Reject("not an object", f"got {type(record).__name__}")
    if fmt == "auto":
        fmt = detect_format(record)
    return CONVERTERS[fmt](record)
