"""Validation and cleaning of one ChatML conversation; every failure is a named reason."""

from __future__ import annotations

import re
import unicodedata

from chatsft.data.formats import Reject

ROLES = ("system", "user", "assistant")
# Control characters except tab and newline (C0, DEL and C1).
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Special-token strings of the common chat templates: ChatML, Llama-3, and any `<|name|>`.
SPECIAL = re.compile(r"<\|[A-Za-z0-9_\-.]{1,40}\|>|\[/?INST\]|<</?SYS>>")
SURROGATE = re.compile(r"[\ud800-\udfff]")


def escape_special(text: str) -> str:
    """Break special-token strings with a zero-width space so they read the same but never
    match a tokenizer's added token."""
    return SPECIAL.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)


def check_roles(messages: list[dict]) -> None:
    if not messages:
        raise Reject("empty conversation")
    for i, m in enumerate(messages):
        if m["role"] not in ROLES:
            reason = "unsupported role" if m["role"] in {"tool", "function_call",
                                                         "observation", "function"} else (
                "unknown role")
            raise Reject(reason, f"messages[{i}].role = {m['role']!r:.40}")
    body = messages[1:] if messages[0]["role"] == "system" else messages
    for i, m in enumerate(body):
        if m["role"] == "system":
            raise Reject("system not first", f"a system message after turn {i}")
        expected = "user" if i % 2 == 0 else "assistant"
        if m["role"] != expected:
            raise Reject("roles not alternating", f"turn {i} is {m['role']}, expected {expected}")
    if not any(m["role"] == "assistant" for m in body):
        raise Reject("no assistant turn")
    if body[-1]["role"] != "assistant":
        raise Reject("does not end with assistant")


def clean_messages(
    messages: list[dict],
    *,
    max_chars: int,
    max_turns: int,
    control_chars: str = "remove",
    special_tokens: str = "reject",
) -> list[dict]:
    """Return the cleaned conversation, or raise Reject with the reason."""
    check_roles(messages)
    if len(messages) > max_turns:
        raise Reject("too many turns", f"{len(messages)} > {max_turns}")
    out, total = [], 0
    for i, m in enumerate(messages):
        text = m["content"]
        if SURROGATE.search(text):
            raise Reject("lone surrogate", f"messages[{i}]")
        if CONTROL.search(text):
            if control_chars == "reject":
                raise Reject("control characters", f"messages[{i}]")
            text = CONTROL.sub("", text)
        if SPECIAL.search(text):
            if special_tokens == "reject":
                found = SPECIAL.search(text).group(0)
                raise Reject("special token in content", f"messages[{i}] contains {found!r}")
            text = escape_special(text)
        if not text.strip():
            raise Reject("empty content", f"messages[{i}] ({m['role']})")
        total += len(text)
        out.append({"role": m["role"], "content": text})
    if total > max_chars:
        raise Reject("too long", f"{total} characters > {max_chars}")
    return out


def normalize(text: str) -> str:
    """Key for near-duplicate detection: NFKC, whitespace collapsed, case folded."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()
