"""Token ids and labels of rendered conversations: the assistant masks, checked for parity.

`ChatEncoder` (chat_template/encoder.py) renders each conversation into `Unit`s: a text and, per
assistant turn, where its prompt `P_k` ends, where the turn `F_k` ends and where its loss
starts (in characters). `Masker` turns those into tokens and labels. The labels cover each
trained reply from the end of `P_k` through its last control token (the end-of-turn), and the
tokens before each reply must equal the tokens of `P_k` on its own, which is what inference
feeds the model (else `ParityError`, naming the first differing token).

Two paths give the same result (tested): `fast` encodes each text once, in batches, with a
private copy of the backend tokenizer, and gets `P_k`'s tokens as the text's tokens up to the
last added token before the reply plus the (cached) encoding of the short rest; exact because
a tokenizer splits at added tokens before anything else. `exact` encodes every prefix in full
(marked text, slow tokenizers, and the reference for the tests).
"""

from __future__ import annotations

import bisect
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import encode_marked_chat

from chatsft.batching.packing import IGNORE
from chatsft.chat_template.parts import (
    Encoded,
    ParityError,
    Result,
    Skipped,
    UnencodableText,
    Unit,
    first_difference,
)


class Masker:
    """Encodes `Unit`s with one tokenizer; `control_ids` are the template's control tokens."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, control_ids: frozenset[int]) -> None:
        self.tok = tokenizer
        self.control_ids = control_ids
        self.added_ids = frozenset(tokenizer.added_tokens_decoder)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.backend: Tokenizer | None = None
        if backend is not None:
            # A private copy: the wrapper leaves truncation/padding state on its backend.
            self.backend = Tokenizer.from_str(backend.to_str())
            self.backend.no_truncation()
            self.backend.no_padding()
            self.backend.encode_special_tokens = False
        self._pieces: dict[str, list[int]] = {}
        # Set by `tokenize_workers` in a process whose tokenizer runs without its own threads.
        self.batch_thread: ThreadPoolExecutor | None = None

    def encode_text(self, text: str, marked: bool) -> list[int]:
        """Tokens of rendered text; `marked` text holds control-token markers
        (`mark_control_tokens`), so that message text never becomes a control token."""
        if marked:
            try:
                return encode_marked_chat(self.tok, text)
            except ValueError as err:  # the tokenizer makes a control token from plain text
                raise UnencodableText(str(err)) from None
        if self.backend is not None:
            return self.backend.encode(text, add_special_tokens=False).ids
        return self.tok.encode(text, add_special_tokens=False)

    def encode_plans(self, plans: list[list[Unit] | Exception], fast: bool) -> list[Result]:
        """Per conversation: the samples of its units, or the exception that stops it."""
        use_fast = fast and self.backend is not None
        units = [u for p in plans if not isinstance(p, Exception) for u in p
                 if use_fast and not u.marked]
        own_thread = len(units) == sum(len(p) for p in plans if not isinstance(p, Exception))
        encodings = self._encode_batch([u.text for u in units], own_thread) if units else []
        prepared = dict(zip(map(id, units), self._with_pieces(units, encodings, own_thread),
                            strict=True))
        results: list[Result] = []
        for plan in plans:
            try:
                if isinstance(plan, Exception):
                    raise plan
                results.append([self._encode_fast(u, *prepared[id(u)]) if id(u) in prepared
                                 else self._encode_exact(u) for u in plan])
            except (Skipped, ParityError) as err:
                results.append(err)
        return results

    def _encode_batch(self, texts: list[str], own_thread: bool) -> list[Any]:
        """`encode_batch`, on `batch_thread` when set and `own_thread` (a batch of conversations
        that all take the fast path)."""
        if self.batch_thread is None or not own_thread:
            return self.backend.encode_batch(texts, add_special_tokens=False)
        # On a thread of its own, the Rust tokenizer allocates from a malloc arena of its own
        # instead of the one it shares with Python's objects: a tokenize worker spent 5% less
        # CPU per record (alpaca_zh x10, real Qwen tokenizer, 3 interleaved runs; no gain with
        # MALLOC_ARENA_MAX=1, so the arena is the cause). Measured, not explained: in batches
        # that also take the exact path (tool calls written into the text) it cost 7-13% more.
        return self.batch_thread.submit(self.backend.encode_batch, texts,
                                        add_special_tokens=False).result()

    def _with_pieces(self, units: list[Unit], encodings: list[Any], own_thread: bool
                     ) -> list[tuple]:
        """Per unit: (encoding, token starts, per turn (index of the prompt's last added token,
        the prompt's text from that token on)); every such text encoded, in one batch."""
        out = []
        for unit, enc in zip(units, encodings, strict=True):
            ids, offsets = enc.ids, enc.offsets
            starts = [o[0] for o in offsets]
            pieces = []
            for turn in unit.turns:
                j = bisect.bisect_left(starts, turn.prompt_end) - 1
                while j >= 0 and not (ids[j] in self.added_ids
                                      and offsets[j][1] <= turn.prompt_end):
                    j -= 1
                begin = offsets[j][0] if j >= 0 else 0
                pieces.append((max(j, 0), unit.text[begin : turn.prompt_end]))
            out.append((enc, starts, pieces))
        if len(self._pieces) > 100_000:  # templates without added tokens: unbounded tails
            self._pieces.clear()
        new = sorted({p for _, _, ps in out for _, p in ps}.difference(self._pieces))
        if new:
            encoded = self._encode_batch(new, own_thread)
            self._pieces.update((text, e.ids) for text, e in zip(new, encoded, strict=True))
        return out

    def _encode_fast(self, unit: Unit, enc: Any, starts: list[int], pieces: list[tuple]
                     ) -> Encoded:
        ids = enc.ids
        labels = [IGNORE] * len(ids)
        for turn, (j, piece) in zip(unit.turns, pieces, strict=True):
            piece_ids = self._pieces[piece]
            n = j + len(piece_ids)
            if ids[j:n] != piece_ids:
                raise self.parity_error(ids, ids[:j] + piece_ids, turn.message, "prompt")
            m = bisect.bisect_left(starts, turn.turn_end)  # first token after F_k
            end = self._reply_end(ids, n, m)
            if end == m and m and enc.offsets[m - 1][1] > turn.turn_end:
                raise ParityError(f"assistant turn at message {turn.message}: a token spans the "
                                  "end of the turn")
            if turn.train:
                start = max(n, bisect.bisect_left(starts, turn.loss_from))
                labels[start:end] = ids[start:end]
        return Encoded(ids, labels)

    def _reply_end(self, ids: list[int], start: int, stop: int) -> int:
        """End of the supervised reply in ids[start:stop]: through its last control token."""
        for k in range(stop - 1, start - 1, -1):
            if ids[k] in self.control_ids:
                return k + 1
        return stop

    def _encode_exact(self, unit: Unit) -> Encoded:
        """Reference path: every prefix encoded in full (marked text, slow tokenizers)."""
        ids = self.encode_text(unit.text, unit.marked)
        labels = [IGNORE] * len(ids)
        for turn in unit.turns:
            prompt = self.encode_text(unit.text[: turn.prompt_end], unit.marked)
            through = self.encode_text(unit.text[: turn.turn_end], unit.marked)
            for what, part in (("prompt", prompt), ("turn", through)):
                if ids[: len(part)] != part:
                    raise self.parity_error(ids, part, turn.message, what)
            if turn.train:
                n = len(prompt)
                end = n + self._reply_end(through[n:], 0, len(through) - n)
                start = max(n, len(self.encode_text(unit.text[: turn.loss_from], unit.marked)))
                labels[start:end] = ids[start:end]
        return Encoded(ids, labels)

    def parity_error(self, ids: list[int], part: list[int], turn: int, what: str,
                     rendered: bool = False) -> ParityError:
        """The error for a sample whose start is not `part` (what inference encodes)."""
        at = first_difference(ids, part)
        got = self.tok.convert_ids_to_tokens(ids[at : at + 1])
        want = self.tok.convert_ids_to_tokens(part[at : at + 1])
        where = "renders differently from" if rendered else "does not tokenize as"
        return ParityError(
            f"assistant turn at message {turn}: the {what} (as inference encodes it) {where} "
            f"the start of the training sample; first difference at token {at}: the sample has "
            f"{got}, the {what} has {want}; text before it: "
            f"{self.tok.decode(ids[max(0, at - 12) : at])!r}"
        )
