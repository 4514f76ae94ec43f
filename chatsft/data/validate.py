"""Validation and cleaning of one ChatML record; every failure is a named reason.

Role order (a state machine over the messages):

    [system] user A (user A)*      where  A = (assistant-with-tool_calls tool+)* assistant

so system comes only first, user and assistant alternate, tool results follow a tool call,
and the conversation ends with an assistant reply.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chatsft.data.errors import Reject

# Roles of other chat formats that mean tool use; everything else unknown is "unknown role".
TOOL_LIKE_ROLES = frozenset({"function", "function_call", "observation", "ipython"})
# Control characters except tab and newline (C0, DEL and C1).
CONTROL = r"[\x00-\x08\x0b-\x1f\x7f-\x9f]"
SURROGATE = r"[\ud800-\udfff]"
# Special-token strings of the common chat templates: any `<|name|>` (ChatML, Llama-3, Phi,
# GLM), DeepSeek's full-width `<｜name｜>`, Llama-2/Mistral `[INST]` and `<<SYS>>`, Gemma's turns.
SPECIAL_TOKENS = (
    r"<\|[A-Za-z0-9_\-.]{1,40}\|>|<｜[^｜<>\n]{1,40}｜>|\[/?INST\]|<</?SYS>>"
    r"|<(?:start|end)_of_turn>"
)
# Whitespace and the invisible characters a blank-looking message is made of.
BLANK = re.compile(r"[\s\u200b-\u200d\u2060\ufeff]*")
CONTROL_RE, SURROGATE_RE = re.compile(CONTROL), re.compile(SURROGATE)


@dataclass(frozen=True)
class ContentRules:
    """How content is cleaned: built once from `DataParams`, then applied to every message."""

    max_chars: int = 32000
    max_turns: int = 64
    control_chars: str = "remove"  # or "reject"
    special_tokens: str = "reject"  # or "escape"
    extra_special_tokens: tuple[str, ...] = ()
    # Compiled from the fields above.
    special: re.Pattern = field(init=False, repr=False, compare=False)
    suspect: re.Pattern = field(init=False, repr=False, compare=False)

    @classmethod
    def from_params(cls, params: Any) -> ContentRules:
        """From a `chatsft.params.DataParams` (not imported here: validate needs no pydantic)."""
        return cls(max_chars=params.max_chars, max_turns=params.max_turns,
                   control_chars=params.control_chars, special_tokens=params.special_tokens,
                   extra_special_tokens=tuple(params.extra_special_tokens))

    def __post_init__(self) -> None:
        special = "|".join([SPECIAL_TOKENS, *map(re.escape, self.extra_special_tokens)])
        object.__setattr__(self, "special", re.compile(special))
        # One search finds every message that needs a closer look; most need none.
        object.__setattr__(self, "suspect", re.compile(f"{CONTROL}|{SURROGATE}|{special}"))

    def escape_special(self, text: str) -> str:
        """Break special-token strings with a zero-width space after their first character:
        they read the same but never match a tokenizer's added token."""
        return self.special.sub(lambda m: m.group(0)[0] + "\u200b" + m.group(0)[1:], text)

    def clean_text(self, text: str, where: str) -> str:
        """Content with the suspect characters handled, or Reject."""
        if SURROGATE_RE.search(text):
            raise Reject("lone surrogate", f"{where} contains an unpaired UTF-16 surrogate")
        control = CONTROL_RE.search(text)
        if control:
            if self.control_chars == "reject":
                code = ord(control.group(0))
                raise Reject("control characters", f"{where} contains U+{code:04X}")
            text = CONTROL_RE.sub("", text)
        found = self.special.search(text)
        if found:
            if self.special_tokens == "reject":
                raise Reject("special token in content", f"{where} contains {found.group(0)!r}")
            text = self.escape_special(text)
        return text


def check_roles(messages: list[dict]) -> None:
    """Raise Reject unless the messages follow the role order in the module docstring."""
    if not messages:
        raise Reject("empty conversation", "no messages")
    state = "start"  # start, user, reply (assistant), call (assistant with tool_calls), tool
    start = 1 if messages[0]["role"] == "system" else 0
    for i in range(start, len(messages)):
        m = messages[i]
        role = m["role"]
        if role == "user":
            if state == "start" or state == "reply":
                state = "user"
                continue
        elif role == "assistant":
            if state == "user" or state == "tool":
                state = "call" if "tool_calls" in m else "reply"
                continue
        elif role == "tool":
            if state == "call" or state == "tool":
                state = "tool"
                continue
            raise Reject("tool result without call", f"messages[{i}] does not follow a tool call")
        elif role == "system":
            raise Reject("system not first", f"messages[{i}] is a system message")
        elif role in TOOL_LIKE_ROLES:
            raise Reject("unsupported role", f"messages[{i}].role = {role!r}")
        else:
            raise Reject("unknown role", f"messages[{i}].role = {role!r:.40}")
        if state == "call":
            raise Reject("tool call without result", f"messages[{i}] ({role}) follows a tool call")
        previous = "nothing" if i == start else messages[i - 1]["role"]
        raise Reject("roles not alternating", f"messages[{i}] is {role} after {previous}")
    if state != "reply":
        if not any(m["role"] == "assistant" for m in messages):
            raise Reject("no assistant turn", f"{len(messages)} messages, none from the assistant")
        raise Reject("does not end with assistant", f"the last message is {messages[-1]['role']}")


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    return value


def _clean_json(value: Any, rules: ContentRules, where: str) -> Any:
    """Tool definitions and call arguments reach the model as text too: the same
    special-token policy applies to every string inside them."""
    found = rules.special.search(json.dumps(value, ensure_ascii=False))
    if not found:
        return value
    if rules.special_tokens == "reject":
        raise Reject("special token in content", f"{where} contains {found.group(0)!r}")
    return _map_strings(value, rules.escape_special)


def clean_record(record: dict, rules: ContentRules) -> dict:
    """The cleaned record (the same object when nothing changed), or raise Reject."""
    messages = record["messages"]
    check_roles(messages)
    if len(messages) > rules.max_turns:
        raise Reject("too many turns", f"{len(messages)} messages > max_turns {rules.max_turns}")
    suspect, blank = rules.suspect.search, BLANK.fullmatch
    changed: list[dict] | None = None
    total = 0
    for i, m in enumerate(messages):
        text = m["content"]
        fixed = m
        if suspect(text):
            text = rules.clean_text(text, f"messages[{i}].content")
            fixed = {**m, "content": text}
        reasoning = m.get("reasoning_content")
        if reasoning is not None and suspect(reasoning):
            fixed = {**fixed, "reasoning_content": rules.clean_text(
                reasoning, f"messages[{i}].reasoning_content")}
        if "tool_calls" in m:
            calls = _clean_json(m["tool_calls"], rules, f"messages[{i}].tool_calls")
            if calls is not m["tool_calls"]:
                fixed = {**fixed, "tool_calls": calls}
        elif blank(text):
            raise Reject("empty content", f"messages[{i}] ({m['role']}) is empty or blank")
        total += len(text) + len(fixed.get("reasoning_content") or "")
        if fixed is not m and changed is None:
            changed = list(messages)
        if changed is not None:
            changed[i] = fixed
    if total > rules.max_chars:
        raise Reject("too long", f"{total} characters > max_chars {rules.max_chars}")
    tools = record.get("tools")
    clean_tools = _clean_json(tools, rules, "tools") if tools else tools
    if changed is None and clean_tools is tools:
        return record
    out = {"messages": changed if changed is not None else messages}
    if tools:
        out["tools"] = clean_tools
    return out


def normalize(text: str) -> str:
    """Key for near-duplicate detection: NFKC, whitespace collapsed, case folded."""
    return " ".join(unicodedata.normalize("NFKC", text).split()).casefold()
