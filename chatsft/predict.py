"""Batch prediction over a file of prompts (each ending with a user turn).

Prompts are ChatML (or ShareGPT) records in JSON or JSONL, read like the clean stage reads
data. Each output line is `{"messages": [...], "reply": "...", "generated_tokens": n}`, in
input order (generation sorts by length internally); a reply with a think block has its
answer in `reply` and the reasoning in `reasoning`.
"""

from __future__ import annotations

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from chatsft.data.formats import Reject, to_messages
from chatsft.data.sources import expand, read_file
from chatsft.generation import generate_replies
from chatsft.params import GenerationParams


def load_prompts(path: str, with_reply: bool = False) -> list[list[dict]]:
    """Prompts from a JSON/JSONL file; a bad record stops with the file, record and reason.
    `with_reply`: a record may also end with the assistant turn (a reference reply)."""
    prompts = []
    for file in expand(path):
        for rec in read_file(file):
            where = f"{rec.source}: {rec.locator}"
            if rec.error:
                raise Reject(rec.error[0], f"{where}: {rec.error[1]}")
            try:
                messages = to_messages(rec.value)
            except Reject as r:
                raise Reject(r.reason, f"{where}: {r.detail}") from None
            ends = ("user", "assistant") if with_reply else ("user",)
            if not messages or messages[-1]["role"] not in ends:
                raise Reject(f"prompt must end with a {' or '.join(ends)} turn", where)
            prompts.append(messages)
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
    prompts = load_prompts(path)
    replies = generate_replies(model, tokenizer, prompts, p, max_context)
    return [{"messages": m, "reply": r.text, "generated_tokens": r.generated_tokens}
            | ({"reasoning": r.reasoning} if r.reasoning is not None else {})
            for m, r in zip(prompts, replies, strict=True)]
