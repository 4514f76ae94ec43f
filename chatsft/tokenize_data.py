"""The tokenize stage's core: clean splits -> tokenized `datasets` splits, stats, audit."""

from __future__ import annotations

import hashlib
import html
from pathlib import Path

from datasets import Dataset, Features, Sequence, Value
from transformers import PreTrainedTokenizerBase

from chatsft.io import read_jsonl
from chatsft.template import ChatEncoder, TooLong

FEATURES = Features(
    {"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int32"))}
)


def tokenize_split(
    records: list[dict], encoder: ChatEncoder, split: str
) -> tuple[dict[str, list], list[dict], dict]:
    """Encode one split; returns (columns, quarantined records, stats)."""
    cols: dict[str, list] = {"input_ids": [], "labels": []}
    quarantine: list[dict] = []
    stats = {"conversations": 0, "tokens": 0, "supervised_tokens": 0, "truncated": 0,
             "dropped_turns": 0, "too_long": 0}
    for n, rec in enumerate(records):
        stats["conversations"] += 1
        try:
            enc = encoder.encode(rec["messages"])
        except TooLong as err:
            stats["too_long"] += 1
            quarantine.append({"split": split, "index": n, "reason": "too long", "detail": str(err),
                               "record": rec})
            continue
        cols["input_ids"].append(enc.input_ids)
        cols["labels"].append(enc.labels)
        stats["tokens"] += len(enc.input_ids)
        stats["supervised_tokens"] += sum(label != encoder.ignore_index for label in enc.labels)
        stats["truncated"] += enc.dropped_turns > 0
        stats["dropped_turns"] += enc.dropped_turns
    stats["kept"] = len(cols["input_ids"])
    return cols, quarantine, stats


def to_dataset(cols: dict[str, list]) -> Dataset:
    ds = Dataset.from_dict(cols, features=FEATURES)
    # from_dict gives a random fingerprint, which would land in state.json and make the
    # output differ on every run; derive it from the content instead.
    h = hashlib.sha256()
    for ids, labels in zip(cols["input_ids"], cols["labels"], strict=True):
        h.update(repr((ids, labels)).encode())
    ds._fingerprint = h.hexdigest()[:16]
    return ds


def tokenize_all(
    clean_dir: Path, tokenizer: PreTrainedTokenizerBase, encoder: ChatEncoder
) -> tuple[dict[str, Dataset], list[dict], dict]:
    datasets, quarantine, stats = {}, [], {}
    for split in ("train", "validation", "test"):
        records = read_jsonl(clean_dir / f"{split}.jsonl")
        cols, q, s = tokenize_split(records, encoder, split)
        datasets[split] = to_dataset(cols)
        quarantine += q
        stats[split] = s
    return datasets, quarantine, stats


def audit_html(tokenizer: PreTrainedTokenizerBase, ds: Dataset, n: int, ignore_index: int) -> str:
    """Human-readable rendering of the first `n` samples: supervised tokens highlighted."""
    parts = [
        "<!doctype html><meta charset='utf-8'><title>chatsft mask audit</title>",
        "<style>body{font-family:monospace;white-space:pre-wrap}"
        ".s{background:#c8f7c5}.t{border-right:1px solid #ddd}</style>",
        "<p>Green tokens are supervised (their labels are trained); the rest are context.</p>",
    ]
    for i in range(min(n, len(ds))):
        ids, labels = ds[i]["input_ids"], ds[i]["labels"]
        sup = sum(label != ignore_index for label in labels)
        parts.append(f"<h3>sample {i}: {len(ids)} tokens, {sup} supervised</h3><div>")
        for tid, label in zip(ids, labels, strict=True):
            text = html.escape(tokenizer.decode([tid]))
            cls = "t s" if label != ignore_index else "t"
            parts.append(f"<span class='{cls}'>{text}</span>")
        parts.append("</div>")
    return "".join(parts) + "\n"
