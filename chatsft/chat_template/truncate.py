"""Drop the oldest exchanges of a conversation until it fits: one rule for training
(tokenize) and for inference (evaluate, predict, chat, serve).

An exchange starts at a user turn and runs to the next one, so tool calls and their results
go with the exchange they belong to; the system prompt always stays. The fewest exchanges are
dropped, found by bisection: dropping more never makes a conversation longer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def drop_oldest(messages: list[dict], encode: Callable[[list[dict]], T],
                too_long: Callable[[T], bool], keep_reply: bool = False
                ) -> tuple[T | None, int | None]:
    """`(encode(shortened), messages dropped)` for the fewest oldest exchanges dropped that
    make the encoding not `too_long`. When even the last exchange alone is too long:
    `(its encoding, None)`; with no exchange to drop: `(None, None)`. `keep_reply`: the
    conversation ends with the reply to train on, whose exchange is never dropped (else the
    last message is the prompt's, and the exchange it starts may be all that is left)."""
    system = 1 if messages and messages[0]["role"] == "system" else 0
    head, body = messages[:system], messages[system:]
    end = max(i for i, m in enumerate(body) if m["role"] == "assistant") if keep_reply \
        else len(body)
    cuts = [i for i, m in enumerate(body) if 0 < i < end and m["role"] == "user"]
    if not cuts:
        return None, None

    def attempt(c: int) -> T:
        return encode(head + body[cuts[c]:])

    lo, hi = -1, len(cuts) - 1  # lo: known too long (no cut); hi: the candidate that fits
    best = attempt(hi)
    if too_long(best):
        return best, None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        res = attempt(mid)
        if too_long(res):
            lo = mid
        else:
            hi, best = mid, res
    return best, cuts[hi]
