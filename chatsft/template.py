"""Chat-template encoding with exact assistant masks, shared by training and inference.

The masks come from the tokenizer's own Jinja template, rendered on prefixes of the
conversation: for assistant turn k, `P_k` is the render of messages[:k] with the generation
prompt and `F_k` the render of messages[:k+1]. The tokens of `F_k` after those of `P_k` are
what the model must generate for turn k; we supervise them up to and including the last
control token (the end-of-turn: `<|im_end|>`, `<|eot_id|>`, ...), but not the template's
trailing text after it (a newline). No template needs `{% generation %}` markers, and no
role names or token strings are hard-coded.

Parity with inference is by construction and checked: the full conversation's tokens must
start with the tokens of every `P_k` and `F_k`, and `encode_prompt` (what generation feeds
the model) is the same `P_k` encoding. A mismatch raises `ParityError` naming the first
differing token.

Text inside a message is never parsed as a control token: a message that contains one is
marked with transformers' `mark_control_tokens` and encoded with `encode_marked_chat`, the
machinery behind `apply_chat_template(..., sanitize_control_tokens=True)`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import encode_marked_chat, mark_control_tokens

from chatsft.errors import UserError


class ParityError(UserError, ValueError):
    """Training tokens would differ from what inference feeds the model."""


class TooLong(UserError, ValueError):
    """Even the last exchange alone does not fit in max_length."""


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    dropped_turns: int = 0  # messages removed by turn-respecting truncation


def first_difference(a: list[int], b: list[int]) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


class ChatEncoder:
    """Encode conversations with one tokenizer's chat template."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        *,
        train_on: str = "all",
        ignore_index: int = -100,
        max_length: int | None = None,
    ) -> None:
        if not tokenizer.chat_template:
            raise ValueError("the tokenizer has no chat template")
        self.tok = tokenizer
        self.train_on = train_on
        self.ignore_index = ignore_index
        self.max_length = max_length
        template = tokenizer.chat_template
        added = tokenizer.added_tokens_decoder.values()
        # Like transformers' sanitize_control_tokens: special tokens, and added tokens the
        # template writes itself (whitespace tokens excepted).
        self.control_tokens = sorted(
            (t.content for t in added if t.special or (t.content.strip() and t.content in template)
             ),
            key=len,
            reverse=True,
        )
        self.control_re = re.compile("|".join(map(re.escape, self.control_tokens)) or "(?!)")
        self.control_ids = set(tokenizer.convert_tokens_to_ids(self.control_tokens))

    # -- rendering and encoding of strings ---------------------------------------------------

    def render(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self.tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _needs_marking(self, messages: list[dict]) -> bool:
        return any(self.control_re.search(m["content"]) for m in messages)

    def _encode_texts(self, texts: list[str], marked: bool) -> list[list[int]]:
        if marked:
            return [encode_marked_chat(self.tok, t) for t in texts]
        return self.tok(texts, add_special_tokens=False)["input_ids"]

    def encode_prompt(self, messages: list[dict]) -> list[int]:
        """Tokens fed to the model to generate the next assistant turn (inference)."""
        marked = self._needs_marking(messages)
        if marked:
            messages = mark_control_tokens(messages, self.control_re)
        return self._encode_texts([self.render(messages, add_generation_prompt=True)], marked)[0]

    # -- conversations -----------------------------------------------------------------------

    def encode(self, messages: list[dict]) -> Encoded:
        """Input ids and labels of one conversation, truncated by whole turns if needed."""
        system = messages[:1] if messages and messages[0]["role"] == "system" else []
        body = messages[len(system) :]
        dropped = 0
        while True:
            enc = self._encode_once(system + body)
            if self.max_length is None or len(enc.input_ids) <= self.max_length:
                enc.dropped_turns = dropped
                return enc
            if len(body) <= 2:
                raise TooLong(
                    f"{len(enc.input_ids)} tokens > max_length {self.max_length} "
                    "even with only the last exchange"
                )
            body = body[2:]  # the oldest user/assistant pair
            dropped += 2

    def _encode_once(self, messages: list[dict]) -> Encoded:
        marked = self._needs_marking(messages)
        msgs = mark_control_tokens(messages, self.control_re) if marked else messages
        turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if self.train_on == "last":
            turns = turns[-1:]
        texts = [self.render(msgs)]
        for i in turns:
            texts.append(self.render(msgs[:i], add_generation_prompt=True))
            texts.append(self.render(msgs[: i + 1]))
        ids = self._encode_texts(texts, marked)
        full = ids[0]
        labels = [self.ignore_index] * len(full)
        for n, i in enumerate(turns):
            prompt, through = ids[1 + 2 * n], ids[2 + 2 * n]
            for name, part in (("prompt", prompt), ("turn", through)):
                if full[: len(part)] != part:
                    self._raise_parity(messages, i, name, full, part)
            reply = through[len(prompt) :]
            # Supervise through the last control token (the end-of-turn), not what follows it.
            end = max((j + 1 for j, t in enumerate(reply) if t in self.control_ids), default=0)
            end = end or len(reply)
            start = len(prompt)
            labels[start : start + end] = full[start : start + end]
        return Encoded(full, labels)

    def _raise_parity(
        self, messages: list[dict], turn: int, what: str, full: list[int], part: list[int]
    ) -> None:
        at = first_difference(full, part)
        got = self.tok.convert_ids_to_tokens(full[at : at + 1])
        want = self.tok.convert_ids_to_tokens(part[at : at + 1])
        raise ParityError(
            f"assistant turn at message {turn}: the {what} rendered alone is not a prefix of the "
            f"whole conversation; first difference at token {at}: conversation has {got}, "
            f"prefix has {want}; context {self.tok.decode(full[max(0, at - 8) : at])!r}"
        )
