"""Batch prediction over a file of prompts (each ending with a user turn or a tool result).

Prompts are ChatML (or ShareGPT) records in JSON or JSONL, read like the clean stage reads
data, with their `tools` when they declare some. Each output line is `{"messages": [...],
"tools"?: [...], "reply": "...", "generated_tokens": n}`, in input order (generation sorts by
length internally).
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from chatsft.data.formats import Reject, to_record
from chatsft.data.sources import expand, read_file
from chatsft.generation import generate_replies
from chatsft.params import GenerationParams


def load_prompt_records(path: str) -> list[dict]:
    """Prompts (`{"messages", "tools"?}`) from a JSON/JSONL file; a bad record stops with the
    file, record and reason. A prompt ends with a user turn or a tool result."""
    prompts = []
    for file in expand(path):
        for rec in read_file(file):
            where = f"{rec.source}: {rec.locator}"
            if rec.error:
                raise Reject(rec.error[0], f"{where}: {rec.error[1]}")
            try:
                record = to_record(rec.value)
            except Reject as r:
                raise Reject(r.reason, f"{where}: {r.detail}") from None
            messages = record["messages"]
            if not messages or messages[-1]["role"] not in ("user", "tool"):
                raise Reject("prompt must end with a user turn", where)
            prompts.append(record)
    if not prompts:
        raise Reject("no prompts", f"{path} holds no records")
    return prompts


def load_prompts(path: str) -> list[list[dict]]:
    """The messages of `load_prompt_records`."""
    return [r["messages"] for r in load_prompt_records(path)]


def predict_file(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: str,
    p: GenerationParams,
    max_context: int | None = None,
) -> list[dict]:
    prompts = load_prompt_records(path)
    replies = generate_replies(model, tokenizer, [r["messages"] for r in prompts], p,
                               max_context, tools=[r.get("tools") for r in prompts])
    return [rec | {"reply": r.text, "generated_tokens": r.generated_tokens}
            for rec, r in zip(prompts, replies, strict=True)]
