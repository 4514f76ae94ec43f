"""What `chat_template.encoder.ChatEncoder` works with: the errors that stop a record (raised;
`encode_records` returns them in place of the record's samples), an encoded sample, the plan
of a sample's text (units and their assistant turns) and the facts of a compiled template."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from chatsft.errors import UserError


class ParityError(UserError, ValueError):
    """Training tokens would differ from what inference feeds the model."""


class Skipped(UserError, ValueError):
    """A conversation the tokenize stage quarantines; `reason` is a stable name."""

    reason = "skipped"


class TooLong(Skipped):
    reason = "too long"

    def __init__(self, message: str, needed: int | None = None) -> None:
        super().__init__(message)
        self.needed = needed  # tokens of its shortest form (system prompt and last exchange)


class UnsupportedRole(Skipped):
    reason = "unsupported role"


class TemplateFailure(Skipped):
    reason = "template error"


class NoAssistantTurn(Skipped):
    reason = "no assistant turn"


class UnencodableText(Skipped):
    reason = "control token in text"


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    dropped_turns: int = 0  # messages removed by turn-respecting truncation


@dataclass
class Turn:
    message: int  # index of the assistant message
    prompt_end: int  # len(P_k) in the unit's text
    turn_end: int  # len(F_k)
    train: bool
    loss_from: int = 0  # no loss before this offset (a masked think block)


@dataclass
class Unit:
    """One sample's text and its assistant turns."""

    text: str
    turns: list[Turn]
    marked: bool


Result = list[Encoded] | Exception  # the samples of one record, or why it has none


PROBE_TOOLS = [{"type": "function", "function": {
    "name": "f", "description": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "integer"}}}}}]


def first_difference(a: Sequence[int], b: Sequence[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


@dataclass(frozen=True)
class TemplateInfo:
    compiled: Any
    variables: dict  # the template's globals, flat (jinja rebuilds them per render otherwise)
    control_re: Any  # matches any control token string
    control_ids: frozenset[int]
    supports_tools: bool
    supports_reasoning: bool  # the template renders reasoning_content itself


def has_control(obj: Any, control_re: Any) -> bool:
    """Whether any string in messages/tools (nested dicts and lists) holds a control token."""
    strings, stack = [], [obj]
    while stack:
        item = stack.pop()
        if type(item) is str:
            strings.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return control_re.search("\0".join(strings)) is not None


def uses_tools(messages: list[dict], tools: list | None) -> bool:
    return bool(tools) or any(m.get("tool_calls") or m["role"] == "tool" for m in messages)
