"""Turn a raw record of any supported format into a ChatML record.

A ChatML record is `{"messages": [...]}`, plus `"tools": [...]` when the record declares
tools. Messages are `{"role", "content"}`; an assistant message that calls tools also has
`tool_calls`, and tool results have role `tool` (see `chatsft.data.tools` for their shape).
An assistant message's reasoning is kept in `reasoning_content` (also read from `thinking` or
`reasoning`, in ChatML messages and ShareGPT turns); reasoning written inline as a
`<think>...</think>` block before the answer is moved there (`chatsft.reasoning.split_think`,
the split Qwen3's template makes), so every template renders it its own way.
Each converter returns such a record or raises `Reject` with a named reason; it never guesses
silently and never changes the raw value it was given (the quarantine writes it verbatim).
Role order and content are checked afterwards, by `chatsft.data.validate`.
"""

from __future__ import annotations

from typing import Any

from chatsft.data.errors import Reject
from chatsft.data.tools import check_declared, parse_calls, parse_tools
from chatsft.reasoning import CLOSE, FIELDS, split_think

__all__ = ["FORMATS", "Reject", "detect_format", "to_messages", "to_record"]

FORMATS = ("chatml", "sharegpt", "alpaca")

SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "function_call",
    "observation": "tool",
    "tool": "tool",
}
NO_TOOLS = "data.tool_calls is 'reject'"


def detect_format(record: dict) -> str:
    """The format of one record, from its keys."""
    if "messages" in record:
        msgs = record["messages"]
        # Some ShareGPT exports keep from/value turns under "messages".
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) and (
            "from" in msgs[0] and "role" not in msgs[0]
        ):
            return "sharegpt"
        return "chatml"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record or "output" in record:
        return "alpaca"
    keys = ", ".join(sorted(map(str, record))[:8])
    raise Reject("unknown format", f"no messages, conversations or instruction/output (keys: "
                                   f"{keys or 'none'})")


def _text(value: Any, where: str) -> str:
    """Content as a string: a string, or a list of text parts (OpenAI style)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        parts = []
        for i, part in enumerate(value):
            if isinstance(part, str):
                parts.append(part)
            elif not isinstance(part, dict):
                raise Reject("wrong type", f"{where}[{i}] must be a text part")
            elif part.get("type", "text") != "text":
                raise Reject("unsupported content", f"{where}[{i}] is a {part['type']!r:.40} part"
                                                    ", only text is supported")
            elif isinstance(part.get("text"), str):
                parts.append(part["text"])
            else:
                raise Reject("wrong type", f"{where}[{i}].text must be a string")
        return "".join(parts)
    raise Reject("wrong type", f"{where} must be a string, got {type(value).__name__}")


def _list_field(record: dict, key: str) -> list:
    value = record.get(key)
    if value is None:
        raise Reject("missing field", f"the record needs {key!r}")
    if not isinstance(value, list):
        raise Reject("wrong type", f"{key} must be a list, got {type(value).__name__}")
    return value


def _record(messages: list[dict], tools: list[dict]) -> dict:
    for i, m in enumerate(messages):
        if "tool_calls" in m:
            check_declared(m["tool_calls"], tools, f"messages[{i}]")
    return {"messages": messages, "tools": tools} if tools else {"messages": messages}


def _reasoning(raw: dict, where: str) -> str | None:
    """The reasoning field of a raw assistant message or turn, under any of its names."""
    found = [k for k in FIELDS if raw.get(k) is not None]
    if len(found) > 1:
        raise Reject("reasoning twice", f"{where} has both {found[0]} and {found[1]}")
    return _text(raw[found[0]], f"{where}.{found[0]}") if found else None


def _with_reasoning(out: dict, reasoning: str | None, where: str) -> dict:
    """The message with its reasoning in `reasoning_content`, an inline think block moved
    there; a new dict when anything changes (the raw record is never modified)."""
    if CLOSE in out["content"]:
        if reasoning is not None:
            raise Reject("reasoning twice", f"{where} has reasoning_content and a think block "
                                            "in its content")
        reasoning, answer = split_think(out["content"])
        out = {**out, "content": answer}
    if reasoning is None:
        return out
    return {**out, "reasoning_content": reasoning}


def _tools(record: dict, allow_tools: bool) -> list[dict]:
    tools = parse_tools(record.get("tools")) if allow_tools else []
    if not allow_tools and record.get("tools") not in (None, "", "[]", []):
        raise Reject("unsupported role", f"the record declares tools ({NO_TOOLS})")
    return tools


def _chatml_message(m: Any, i: int, allow_tools: bool) -> dict:
    where = f"messages[{i}]"
    if not isinstance(m, dict):
        raise Reject("wrong type", f"{where} must be an object")
    role = m.get("role")
    if not isinstance(role, str):
        raise Reject("missing field" if role is None else "wrong type",
                     f"{where}.role must be a string")
    calls = m.get("tool_calls")
    if calls is not None and calls != []:
        if not allow_tools:
            raise Reject("unsupported role", f"{where} calls tools ({NO_TOOLS})")
        if role != "assistant":
            raise Reject("bad tool call", f"{where}: only assistant messages call tools")
        calls = parse_calls(calls, f"{where}.tool_calls")
    if "content" not in m and not calls:
        raise Reject("missing field", f"{where} needs content")
    content = m.get("content")
    out = {"role": role, "content": "" if content is None else _text(content, f"{where}.content")}
    if calls:
        out["tool_calls"] = calls
    if role == "assistant":
        out = _with_reasoning(out, _reasoning(m, where), where)
    if role == "tool":
        for key in ("tool_call_id", "name"):
            if isinstance(m.get(key), str):
                out[key] = m[key]
    return out


def from_chatml(record: dict, allow_tools: bool = True) -> dict:
    msgs = _list_field(record, "messages")
    out = []
    for i, m in enumerate(msgs):
        # The common case, {"role": str, "content": str}, is used as it is (never mutated).
        if type(m) is dict and len(m) == 2:
            role, content = m.get("role"), m.get("content")
            if type(role) is str and type(content) is str:
                out.append(_with_reasoning(m, None, f"messages[{i}]") if (
                    role == "assistant") else m)
                continue
        out.append(_chatml_message(m, i, allow_tools))
    return _record(out, _tools(record, allow_tools))


def from_sharegpt(record: dict, allow_tools: bool = True) -> dict:
    key = "conversations" if "conversations" in record else "messages"
    conv = _list_field(record, key)
    out = []
    system = record.get("system")
    if system is not None and system != "":
        out.append({"role": "system", "content": _text(system, "system")})
    for i, turn in enumerate(conv):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise Reject("wrong type", f"{where} must be an object")
        if "from" not in turn or "value" not in turn:
            raise Reject("missing field", f"{where} needs from and value")
        source_role = turn["from"]
        if not isinstance(source_role, str):
            raise Reject("wrong type", f"{where}.from must be a string")
        role = SHAREGPT_ROLES.get(source_role)
        if role is None:
            raise Reject("unknown role", f"{where}.from = {source_role!r:.40}")
        if role in ("function_call", "tool") and not allow_tools:
            raise Reject("unsupported role", f"{where}.from = {source_role!r} ({NO_TOOLS})")
        if role == "function_call":
            calls = parse_calls(turn["value"], f"{where}.value")
            msg = {"role": "assistant", "content": "", "tool_calls": calls}
        else:
            msg = {"role": role, "content": _text(turn["value"], f"{where}.value")}
        if role in ("assistant", "function_call"):
            msg = _with_reasoning(msg, _reasoning(turn, where), where)
        out.append(msg)
    return _record(out, _tools(record, allow_tools))


def from_alpaca(record: dict, allow_tools: bool = True) -> dict:
    for key in ("instruction", "output"):
        if key not in record:
            raise Reject("missing field", f"alpaca record needs {key!r}")
    out = []
    system = record.get("system")
    if system is not None and system != "":
        out.append({"role": "system", "content": _text(system, "system")})
    history = record.get("history")
    if history is None:
        history = []
    if not isinstance(history, list):
        raise Reject("wrong type", "history must be a list of [user, assistant] pairs")
    for i, pair in enumerate(history):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise Reject("wrong type", f"history[{i}] must be a [user, assistant] pair")
        out.append({"role": "user", "content": _text(pair[0], f"history[{i}][0]")})
        out.append({"role": "assistant", "content": _text(pair[1], f"history[{i}][1]")})
    instruction = _text(record["instruction"], "instruction")
    extra = record.get("input")
    extra = "" if extra is None else _text(extra, "input")
    # LLaMA-Factory's convention: instruction and input joined by a newline.
    prompt = f"{instruction}\n{extra}" if instruction and extra else instruction or extra
    out.append({"role": "user", "content": prompt})
    out.append(_with_reasoning({"role": "assistant", "content": _text(record["output"], "output")},
                               None, "output"))
    return {"messages": out}


CONVERTERS = {"chatml": from_chatml, "sharegpt": from_sharegpt, "alpaca": from_alpaca}


def to_record(record: Any, fmt: str = "auto", allow_tools: bool = True) -> dict:
    """Convert one raw record to a ChatML record, or raise Reject."""
    if not isinstance(record, dict):
        raise Reject("not an object", f"got {type(record).__name__}")
    if fmt == "auto":
        fmt = detect_format(record)
    return CONVERTERS[fmt](record, allow_tools)


def to_messages(record: Any, fmt: str = "auto") -> list[dict]:
    """The messages of one raw record (prompts for prediction), or raise Reject."""
    return to_record(record, fmt)["messages"]
