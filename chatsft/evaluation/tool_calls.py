"""Tool-call scoring: does a generated reply call the right function with the right arguments?

The test turns are every assistant message with `tool_calls` in the test split, each
generated from what precedes it (with the record's tools). A reply's calls are the JSON
objects between `<tool_call>` and `</tool_call>` (the layout of Qwen2.5's template and the
scratch one; a template that writes calls otherwise scores zero). A turn counts for
`tool_call_name_accuracy` when the reply calls the same functions in the same order, and for
`tool_call_arguments_exact` when, in addition, each call's arguments equal the reference's as
parsed JSON (so key order and spacing do not matter, `1` equals `1.0`, `"1"` does not).
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

CALL_RE = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)


class ToolTurn(NamedTuple):
    record: int  # index in the test file
    prompt: list[dict]
    tools: list | None
    calls: list[dict]  # the reference: [{"name", "arguments"}]


def _call(call: dict) -> dict:
    fn = call.get("function", call)
    args = fn.get("arguments", {})
    return {"name": fn.get("name"), "arguments": json.loads(args) if isinstance(args, str)
            else args}


def tool_turns(records: list[dict]) -> list[ToolTurn]:
    """Every assistant turn of the records that calls tools, with the prompt before it."""
    return [ToolTurn(n, rec["messages"][:i], rec.get("tools"), [_call(c) for c in m["tool_calls"]])
            for n, rec in enumerate(records) for i, m in enumerate(rec["messages"])
            if m["role"] == "assistant" and m.get("tool_calls")]


def parse_calls(text: str) -> list[dict | None]:
    """The calls in a reply, in order: `{"name", "arguments"}`, or None for a block that is
    not a JSON object with a string name and object arguments."""
    out: list[dict | None] = []
    # Templates without <tool_call> tags (Llama-3.x) write one call as the whole reply, with
    # its arguments under "parameters".
    blocks = CALL_RE.findall(text) or ([text] if text.strip().startswith("{") else [])
    for block in blocks:
        try:
            value: Any = json.loads(block)
        except ValueError:
            value = None
        if isinstance(value, dict) and "parameters" in value and "arguments" not in value:
            value = {"name": value.get("name"), "arguments": value["parameters"]}
        ok = isinstance(value, dict) and isinstance(value.get("name"), str) and isinstance(
            value.get("arguments", {}), dict)
        out.append({"name": value["name"], "arguments": value.get("arguments", {})} if ok
                   else None)
    return out


def judge(prediction: str, reference: list[dict]) -> tuple[bool, bool]:
    """(right function names, right names and arguments) for one reply."""
    calls = parse_calls(prediction)
    names = [c and c["name"] for c in calls] == [c["name"] for c in reference]
    return names, names and calls == reference


def score_tool_calls(predictions: list[str], references: list[list[dict]]) -> dict:
    """Counts and fractions (0-1) over the tool-call turns; empty when there are none."""
    if not references:
        return {}
    verdicts = [judge(p, r) for p, r in zip(predictions, references, strict=True)]
    return {"tool_call_turns": len(verdicts),
            "tool_call_name_accuracy": sum(v[0] for v in verdicts) / len(verdicts),
            "tool_call_arguments_exact": sum(v[1] for v in verdicts) / len(verdicts)}
