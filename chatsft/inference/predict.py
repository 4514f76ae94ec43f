"""Batch prediction over a file of prompts (each ending with a user turn or a tool result).

Prompts are ChatML (or ShareGPT) records in JSON or JSONL, read like the clean stage reads
data, with their `tools` when they declare some. Every record gets exactly one output line,
in input order (generation sorts by length internally): `{"messages": [...], "tools"?: [...],
"reply": "...", "generated_tokens": n}`, or, when there can be no reply, `{"where": "file:
line 3", "error": reason, "messages"?: [...]}` with the reason (`not JSON`, `does not end with
a user turn`, `prompt too long: 1330 tokens > 960`, ...). One bad record never costs the
others' replies; `--strict` (`predict.strict`) makes any error line an exit status of 1,
after the whole file is written. A reply with a think block has its answer in `reply` and
the reasoning in `reasoning`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from chatsft.data.formats import Reject, to_record
from chatsft.data.sources import BOM, _first_byte, expand, parse_json, read_file
from chatsft.errors import UserError
from chatsft.inference.generation import generate_replies
from chatsft.params import GenerationParams


class Prompt(NamedTuple):
    where: str  # "file: line 3" or "file: index 3"
    messages: list[dict] | None
    error: str | None = None  # why this record cannot be answered
    tools: list | None = None


def _values(file: Path) -> Iterator[tuple[str, Any, str | None]]:
    """(locator, parsed value, error) per record. Unlike the clean stage's reader, a JSONL
    file whose first line is not JSON is not rejected as a whole: each line is a prompt."""
    if _first_byte(file) == b"[" or file.suffix == ".json":
        for rec in read_file(file):
            yield rec.locator, rec.value, rec.error[0] if rec.error else None
        return
    with open(file, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            raw = raw.removeprefix(BOM) if lineno == 1 else raw
            if not raw.strip():
                continue
            try:
                yield f"line {lineno}", parse_json(raw.decode("utf-8")), None
            except UnicodeDecodeError:
                yield f"line {lineno}", None, "invalid UTF-8"
            except (ValueError, RecursionError):
                yield f"line {lineno}", None, "not JSON"


def load_prompts(path: str, with_reply: bool = False) -> list[Prompt]:
    """Every record of a JSON/JSONL file (or files), with its messages or why it is not a
    prompt (a prompt ends with a user turn or a tool result). A missing file, or one without
    any record, stops with a message. `with_reply`: a record may also end with the assistant
    turn (a reference reply)."""
    prompts = []
    for file in expand(path):
        for locator, value, error in _values(file):
            where = f"{file}: {locator}"
            if error:
                prompts.append(Prompt(where, None, error))
                continue
            try:
                record = to_record(value)
            except Reject as r:
                prompts.append(Prompt(where, None, r.reason))
                continue
            messages, tools = record["messages"], record.get("tools")
            ends = ("user", "tool", "assistant") if with_reply else ("user", "tool")
            if not messages or messages[-1]["role"] not in ends:
                prompts.append(Prompt(where, messages, "does not end with a user turn", tools))
            else:
                prompts.append(Prompt(where, messages, None, tools))
    if not prompts:
        raise Reject("no prompts", f"{path} holds no records")
    return prompts


def predict_file(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str,
    p: GenerationParams,
    max_context: int | None = None,
) -> list[dict]:
    """One output row per record of `path`, in order: a reply or an error."""
    prompts = load_prompts(path)
    good = [n for n, x in enumerate(prompts) if x.error is None]
    answers = generate_replies(model, tokenizer, [prompts[n].messages for n in good], p,
                               max_context, tools=[prompts[n].tools for n in good])
    replies = dict(zip(good, answers, strict=True))
    rows = []
    for n, prompt in enumerate(prompts):
        reply = replies.get(n)
        error = prompt.error or (reply.error if reply else None)
        if error:
            rows.append({"where": prompt.where, "error": error}
                        | ({"messages": prompt.messages} if prompt.messages else {}))
        else:
            rows.append({"messages": prompt.messages}
                        | ({"tools": prompt.tools} if prompt.tools else {})
                        | {"reply": reply.text, "generated_tokens": reply.generated_tokens}
                        | ({"reasoning": reply.reasoning} if reply.reasoning is not None else {}))
    return rows


def summary(rows: list[dict], output: str) -> str:
    """`5 prompts: 3 replies, 2 errors (not JSON: 1, prompt too long: 1) -> out.jsonl`."""
    reasons = Counter(r["error"].split(":")[0] for r in rows if "error" in r)
    errors = sum(reasons.values())
    detail = f" ({', '.join(f'{k}: {v}' for k, v in reasons.most_common())})" if errors else ""
    return (f"{len(rows)} prompts: {len(rows) - errors} replies, {errors} errors{detail} "
            f"-> {output}")


def check_strict(rows: list[dict], strict: bool, output: str) -> None:
    """With strict, any error line fails the run (after the output is written)."""
    errors = sum("error" in r for r in rows)
    if strict and errors:
        raise UserError(f"{errors} of {len(rows)} prompts got no reply (strict); the reasons "
                        f"are in the `error` lines of {output}")
