"""Tool definitions and tool calls in the form transformers' chat templates expect.

Tools become `{"type": "function", "function": {"name", "description", "parameters"}}` and
calls `{"type": "function", "function": {"name", "arguments": {...}}}` (arguments an object,
not a JSON string), whatever shape (bare or OpenAI, string or parsed) the source used.
"""

from __future__ import annotations

import json
from typing import Any

from chatsft.data.errors import Reject


def _json_value(value: Any, reason: str, where: str) -> Any:
    """A value that may be given as a JSON string (ShareGPT stores tools and calls that way)."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError) as err:
        raise Reject(reason, f"{where} is not valid JSON ({err})") from None


def parse_tools(value: Any, where: str = "tools") -> list[dict]:
    """A record's tool list, from a list or a JSON string of one; empty when there are none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    value = _json_value(value, "bad tools", where)
    if not isinstance(value, list):
        raise Reject("bad tools", f"{where} must be a list, got {type(value).__name__}")
    out = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise Reject("bad tools", f"{where}[{i}] must be an object")
        fn = tool.get("function") if "function" in tool else tool
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise Reject("bad tools", f"{where}[{i}] needs a non-empty string name")
        if not isinstance(fn.get("parameters", {}), dict):
            raise Reject("bad tools", f"{where}[{i}].parameters must be an object")
        out.append({"type": "function", "function": fn})
    return out


def normalize_call(call: Any, where: str) -> dict:
    """One call: `{"name", "arguments"}` or the OpenAI `{"type", "function": {...}, "id"?}`."""
    if not isinstance(call, dict):
        raise Reject("bad tool call", f"{where} must be an object")
    fn = call.get("function") if "function" in call else call
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise Reject("bad tool call", f"{where} needs a non-empty string name")
    args = _json_value(fn.get("arguments", {}), "bad tool call", f"{where}.arguments")
    if not isinstance(args, dict):
        raise Reject("bad tool call", f"{where}.arguments must be an object")
    out: dict = {"type": "function", "function": {"name": fn["name"], "arguments": args}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def parse_calls(value: Any, where: str) -> list[dict]:
    """A ShareGPT `function_call` value or a ChatML `tool_calls` list: one call or a list."""
    value = _json_value(value, "bad tool call", where)
    calls = value if isinstance(value, list) else [value]
    if not calls:
        raise Reject("bad tool call", f"{where} holds no call")
    return [normalize_call(c, f"{where}[{i}]") for i, c in enumerate(calls)]


def check_declared(calls: list[dict], tools: list[dict], where: str) -> None:
    """When a record declares its tools, every call must name one of them."""
    if not tools:
        return
    names = {t["function"]["name"] for t in tools}
    for call in calls:
        name = call["function"]["name"]
        if name not in names:
            raise Reject("undeclared tool", f"{where} calls {name!r:.60}, not in the tools")
