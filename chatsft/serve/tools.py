"""OpenAI messages and tools to template form, and tool-call replies back to OpenAI form.

Tool calls are read in the format the template asks the model to use. The one recognised is the
`<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` block of Qwen2.5/Qwen3 (and
Hermes) templates; a template that does not mention `<tool_call>` gets plain content back.
"""

from __future__ import annotations

import json
import re
import secrets

from chatsft.data.errors import Reject
from chatsft.data.tools import normalize_call, parse_tools

TOOL_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
THINK_RE = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


class BadRequest(ValueError):
    """A request the template cannot render; the message names the field."""


def template_messages(messages: list[dict]) -> list[dict]:
    """OpenAI chat messages as the chat template expects them: text content, and tool calls
    with their arguments parsed (the form training data uses, `chatsft.data.tools`)."""
    out = []
    for i, m in enumerate(messages):
        msg = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("tool_calls"):
            try:
                msg["tool_calls"] = [normalize_call(c, f"messages[{i}].tool_calls[{k}]")
                                     for k, c in enumerate(m["tool_calls"])]
            except Reject as err:
                raise BadRequest(err.detail) from None
        if m.get("tool_call_id"):
            msg["tool_call_id"] = m["tool_call_id"]
        if m.get("name"):
            msg["name"] = m["name"]
        out.append(msg)
    return out


def template_tools(tools: list[dict] | None) -> list[dict] | None:
    if not tools:
        return None
    try:
        return parse_tools(tools)
    except Reject as err:
        raise BadRequest(err.detail) from None


def split_reply(text: str, parse_calls: bool) -> tuple[str | None, str | None, list[dict]]:
    """(reasoning, content, OpenAI tool_calls) of a reply. A leading `<think>` block is the
    reasoning; tool-call blocks whose JSON has a name become tool calls (others stay text)."""
    reasoning = None
    think = THINK_RE.match(text)
    if think:
        reasoning, text = think.group(1).strip() or None, text[think.end():]
    calls = []
    if parse_calls:
        def take(match: re.Match) -> str:
            try:
                call = json.loads(match.group(1))
            except ValueError:
                return match.group(0)
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                return match.group(0)
            args = call.get("arguments", {})
            calls.append({"id": "call_" + secrets.token_hex(12), "type": "function",
                          "function": {"name": call["name"], "arguments": args
                                       if isinstance(args, str)
                                       else json.dumps(args, ensure_ascii=False)}})
            return ""

        text = TOOL_CALL_RE.sub(take, text)
    content = text.strip()
    return reasoning, content or (None if calls else ""), calls
