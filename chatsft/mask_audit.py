"""metrics/mask_audit.html: a few train samples, each token coloured by whether the loss
trains it, to check the masks by eye."""

from __future__ import annotations

import html

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from chatsft.batching.packing import IGNORE

STYLE = (
    "body{font-family:sans-serif;max-width:70em;margin:auto}"
    ".sample{font-family:monospace;white-space:pre-wrap;line-height:1.7;border:1px solid #ccc;"
    "padding:.5em}"
    "span{border-right:1px solid #e4e4e4}"
    ".s{background:#b7ecb4}.c{font-weight:bold;color:#8a3b00}.n{color:#999}"
)


def _token_spans(tokenizer: PreTrainedTokenizerBase, ids: list[int], labels: list[int]
                 ) -> list[str]:
    """One <span> per token; tokens that are parts of one character are shown together."""
    special = set(tokenizer.added_tokens_decoder)
    out, pending = [], []
    for k, (tid, label) in enumerate(zip(ids, labels, strict=True)):
        pending.append(tid)
        text = tokenizer.decode(pending)
        if text.endswith("\ufffd") and k + 1 < len(ids) and len(pending) < 4:
            continue  # an incomplete UTF-8 character: wait for its other bytes
        classes = " ".join(["s"] * (label != IGNORE) + ["c"] * (tid in special))
        shown = html.escape(text).replace("\n", "<i class='n'>\u21b5</i>\n")
        attrs = f" class='{classes}'" if classes else ""
        out.append(f"<span{attrs} title='ids {pending}, label {label}'>{shown}</span>")
        pending = []
    return out


def audit_html(tokenizer: PreTrainedTokenizerBase, ds: Dataset, n: int) -> str:
    """Human-readable rendering of `n` samples spread over the split: supervised tokens on
    green; hover a token for its id and label."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>chatsft mask audit</title>",
        f"<style>{STYLE}</style><h1>Mask audit</h1>",
        "<p>Tokens on <span class='s'>green</span> are supervised (the loss trains them); the "
        "rest is context. <span class='c'>Bold</span>: added/control tokens; "
        "<i class='n'>\u21b5</i>: newline. Each assistant reply and the end-of-turn token "
        "after it should be green, and nothing else.</p>",
    ]
    picks = sorted({i * len(ds) // n for i in range(n)} if n and len(ds) else set())
    for i in picks:
        row = ds[i]
        ids, labels = row["input_ids"], row["labels"]
        sup = sum(label != IGNORE for label in labels)
        parts.append(f"<h3>train sample {i}: {len(ids)} tokens, {sup} supervised</h3>"
                     "<div class='sample'>")
        parts += _token_spans(tokenizer, ids, labels)
        parts.append("</div>")
    return "".join(parts) + "\n"
