"""Reasoning ("thinking") text: where it lives in a message, and how to find it in a reply.

A message carries its reasoning in `reasoning_content` (the field Qwen3's, DeepSeek-R1's and
most reasoning templates read; `thinking` and `reasoning` are accepted as other names for it).
Data that writes it inline, `<think>...</think>` before the answer in `content`, is split the
way Qwen3's own template splits it: the reasoning is the text before the first `</think>`
after the last `<think>` before it, stripped of newlines at both ends; the answer is the text
after the last `</think>`, without its leading newlines. Templates that do not render
reasoning at all (ChatML, Llama-3, Qwen2.5) get it back inline, `<think>\\n{reasoning}\\n</think>
\\n\\n{answer}` (the DeepSeek-R1 distill layout), rather than losing it.
"""

from __future__ import annotations

from typing import NamedTuple

OPEN, CLOSE = "<think>", "</think>"
FIELDS = ("reasoning_content", "thinking", "reasoning")  # transformers' names for it


class Split(NamedTuple):
    reasoning: str | None  # None: the text has no think block
    answer: str


def split_think(text: str) -> Split:
    """The reasoning and the answer of `text` (a message's content or a generated reply)."""
    if CLOSE not in text:
        # A reply cut before `</think>` (max_new_tokens) is all reasoning and no answer.
        if text.lstrip().startswith(OPEN):
            return Split(text.lstrip()[len(OPEN):].strip("\n"), "")
        return Split(None, text)
    head, _, _ = text.partition(CLOSE)
    reasoning = head.rstrip("\n").split(OPEN)[-1].strip("\n")
    return Split(reasoning, text.rsplit(CLOSE, 1)[-1].lstrip("\n"))


def inline(reasoning: str, answer: str) -> str:
    """A reasoning and an answer as one content string, for templates without reasoning."""
    return f"{OPEN}\n{reasoning.strip(chr(10))}\n{CLOSE}\n\n{answer.lstrip(chr(10))}"


def reasoning_of(message: dict) -> str | None:
    """The message's reasoning under any of its field names (None when it has none)."""
    return next((message[k] for k in FIELDS if message.get(k) is not None), None)
