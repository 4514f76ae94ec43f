"""The tokenize stage's core: clean splits -> tokenized `datasets` splits and stats (the mask
audit page is chatsft/mask_audit.py)."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, DatasetInfo, Features, Sequence, Value
from datasets.table import InMemoryTable
from transformers import PreTrainedTokenizerBase

from chatsft.batching.packing import IGNORE, pack_stats
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.chat_template.parts import ParityError, TooLong
from chatsft.config import EPOCH, SPLITS
from chatsft.errors import UserError
from chatsft.io import atomic_path, read_jsonl, write_jsonl
from chatsft.params import TokenizeParams
from chatsft.template_kwargs import USED_FILE, write_used
from chatsft.tokenize_workers import encode_chunks

# `source`: the record's data.raw entry (written by clean), for the loss per source.
FEATURES = Features({"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int32")),
                     "source": Value("string")})
# Above this share of a split quarantined as too long, the stage warns and suggests a
# max_length: a silent loss of that size changes what the model learns.
TOO_LONG_WARNING = 0.05
KEEP_SHARE = 0.99
INT32_MAX = 2**31 - 1


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """CPython's cyclic collector walks every tracked object at each full collection: the
    records and, while a batch is encoded, every sample's lists. With it paused one process
    spent 2-3% less CPU on 10,000 alpaca_zh / 3,360 multi-turn conversations on the real Qwen
    tokenizer (3.21 vs 3.30 s, 9.93 vs 10.13 s, mean of 4 interleaved runs: about the noise),
    and merging 10 workers' results took 2.2x less time when they were lists of ints (0.058 vs
    0.128 s). Nothing built here forms reference cycles, so collection waits until the split
    is done."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def tokenize_split(
    records: list[dict], encoder: ChatEncoder, split: str, source: str | None = None,
    num_proc: int = 1, max_parity_failures: float = 0.0,
) -> tuple[pa.Table, list[dict], dict]:
    """Encode one split; returns (its samples' columns, quarantined records, stats).

    A record the template cannot render, or whose last assistant turn cannot fit, is
    quarantined with its reason. So is a record whose training tokens differ from what
    inference would feed the model (`parity`, with the first differing token: a BPE token
    across a turn boundary, say); more than `max_parity_failures` of the split stops the stage,
    since then the template or tokenizer, not the data, is at fault."""
    with _no_cyclic_gc():
        return _tokenize_split(records, encoder, split, source, num_proc, max_parity_failures)


def _tokenize_split(records: list[dict], encoder: ChatEncoder, split: str, source: str | None,
                    num_proc: int, max_parity_failures: float
                    ) -> tuple[pa.Table, list[dict], dict]:
    source = source or f"data/clean/{split}.jsonl"
    lengths: list[int] = []
    sources: list[str] = []
    epochs: list[int] = []
    ids: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    quarantine: list[dict] = []
    reasons: Counter = Counter()
    needed: list[int] = []  # tokens the too-long conversations need to be kept
    truncated = dropped = split_conversations = 0
    n = 0  # records seen
    for chunk in encode_chunks(records, encoder, num_proc):
        ids.append(chunk.input_ids)
        labels.append(chunk.labels)
        for res in chunk.outcomes:
            rec, n = records[n], n + 1
            if isinstance(res, Exception):
                reason = "parity" if isinstance(res, ParityError) else res.reason
                reasons[reason] += 1
                if isinstance(res, TooLong) and res.needed is not None:
                    needed.append(res.needed)
                quarantine.append({"source": source, "where": f"line {n}",
                                   "reason": reason, "detail": str(res), "record": rec})
                continue
            truncated += res[0][1] > 0  # (length, dropped turns) per sample
            dropped += res[0][1]
            split_conversations += len(res) > 1
            lengths += (length for length, _ in res)
            sources += [rec.get("source", "")] * len(res)
            epochs += [rec.get(EPOCH, 0)] * len(res)
    if n != len(records):  # every record has exactly one outcome
        raise RuntimeError(f"{source}: {n} outcomes for {len(records)} records")
    failed = reasons["parity"]
    if failed and failed > max_parity_failures * len(records):
        first = next(q for q in quarantine if q["reason"] == "parity")
        preview = json.dumps(first["record"], ensure_ascii=False)
        raise ParityError(
            f"{source}: {failed} of {len(records)} records tokenize differently for training "
            f"than for inference (more than tokenize.max_parity_failures="
            f"{max_parity_failures}); the template or tokenizer needs fixing. First, "
            f"{first['where']}: {first['detail']}\n  record: {preview[:400]}")
    flat_ids = np.concatenate(ids) if ids else np.zeros(0, np.int32)
    flat_labels = np.concatenate(labels) if labels else np.zeros(0, np.int32)
    tokens, supervised = len(flat_ids), int(np.count_nonzero(flat_labels != IGNORE))
    if tokens > INT32_MAX:
        raise UserError(f"{source}: {tokens:,} tokens, more than one Arrow column holds "
                        f"({INT32_MAX:,}); split the data into several data.raw files")
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]
                                      ).astype(np.int32))
    columns = {"input_ids": pa.ListArray.from_arrays(offsets, pa.array(flat_ids)),
               "labels": pa.ListArray.from_arrays(offsets, pa.array(flat_labels)),
               "source": pa.array(sources, type=pa.string())}
    if any(epochs):  # else one draw for every epoch: no column
        columns[EPOCH] = pa.array(epochs, type=pa.int32())
    stats = {
        "conversations": len(records),
        "kept": len(records) - len(quarantine),
        "samples": len(lengths),
        "quarantined": dict(sorted(reasons.items())),
        "truncated": truncated,
        "dropped_messages": dropped,
        "split_by_turn": split_conversations,
        "tokens": tokens,
        "supervised_tokens": supervised,
        "supervised_fraction": round(supervised / tokens, 6) if tokens else 0.0,
        "longest": max(lengths, default=0),
        "too_long_fraction": round(len(needed) / len(records), 6) if records else 0.0,
        "max_length_keeping_99pct": length_keeping(len(records) - len(quarantine), needed),
    }
    return pa.table(columns), quarantine, stats


def length_keeping(kept: int, needed: list[int], share: float = KEEP_SHARE) -> int | None:
    """The smallest max_length that would keep `share` of the conversations that are either
    kept now or too long (`needed`: the tokens each of those needs), or None when the current
    one already does."""
    target = math.ceil(share * (kept + len(needed)))
    if kept >= target:
        return None
    return sorted(needed)[target - kept - 1]


def too_long_warnings(stats: dict, max_length: int | None) -> list[str]:
    """One line per split that lost more than TOO_LONG_WARNING of its conversations as too
    long, with the max_length that would keep 99% of them."""
    out = []
    for split in SPLITS:
        s = stats[split]
        if s["too_long_fraction"] > TOO_LONG_WARNING:
            out.append(
                f"{split}: {s['quarantined']['too long']} of {s['conversations']} conversations "
                f"({s['too_long_fraction']:.1%}) do not fit in tokenize.max_length {max_length} "
                f"even with only their last exchange and were quarantined; tokenize.max_length "
                f"{s['max_length_keeping_99pct']} would keep {KEEP_SHARE:.0%}")
    return out


def to_dataset(table: pa.Table) -> Dataset:
    """`tokenize_split`'s columns as a Dataset. Its fingerprint is set from the content,
    through the private `Dataset._fingerprint` (datasets has no public way): the random one it
    would otherwise get lands in `state.json` and makes data/tokenized differ on every run, so
    DVC would see a new output and rerun train each time."""
    features = FEATURES
    if EPOCH in table.column_names:
        features = Features({**FEATURES, EPOCH: Value("int32")})
    h = hashlib.sha256()
    for column in table.columns:
        for chunk in column.chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
    ds = Dataset(InMemoryTable(table), info=DatasetInfo(features=features))
    ds._fingerprint = h.hexdigest()[:16]
    return ds


def save_splits(datasets: dict[str, Dataset], path: str | Path) -> None:
    """`DatasetDict.save_to_disk`, with one shard for an empty split: by default it writes
    none, and `load_from_disk` then fails (datasets 5)."""
    shards = {name: 1 for name, ds in datasets.items() if len(ds) == 0}
    DatasetDict(datasets).save_to_disk(str(path), num_shards=shards or None)


def tokenize_all(
    clean_dir: Path, encoder: ChatEncoder, num_proc: int = 1, max_parity_failures: float = 0.0,
) -> tuple[dict[str, Dataset], list[dict], dict]:
    """All splits; stats per split plus `packing`, the packed layout of the train split."""
    datasets, quarantine, stats = {}, [], {}
    for split in SPLITS:
        path = Path(clean_dir) / f"{split}.jsonl"
        table, q, s = tokenize_split(read_jsonl(path), encoder, split, str(path), num_proc,
                                     max_parity_failures)
        datasets[split] = to_dataset(table)
        quarantine += q
        stats[split] = s
    train = datasets["train"].data.table
    lengths = pc.list_value_length(train["input_ids"]).to_numpy()
    labels = pc.list_flatten(train["labels"]).to_numpy()
    # packing masks each sample's first label (pack_rows), so it is not counted
    firsts = pc.list_element(train["labels"], 0).to_numpy() if len(lengths) else labels
    supervised = int(np.count_nonzero(labels != IGNORE) - np.count_nonzero(firsts != IGNORE))
    capacity = encoder.max_length or int(lengths.max(initial=1))
    stats["packing"] = {"capacity": capacity,
                        **pack_stats(lengths.tolist(), supervised, capacity)}
    stats["warnings"] = too_long_warnings(stats, encoder.max_length)
    return datasets, quarantine, stats


def write_tokenized(
    clean_dir: Path, tokenizer: PreTrainedTokenizerBase, params: TokenizeParams, out_dir: Path
) -> tuple[dict[str, Dataset], list[dict], dict]:
    """The tokenize stage's output: `tokenize_all`, saved atomically to `out_dir` with the
    quarantined records in `quarantine.jsonl` and the template variables it rendered with in
    `chat_template.json` (`USED_FILE`); returns what `tokenize_all` returns."""
    kwargs = params.chat_template_kwargs()
    encoder = ChatEncoder(tokenizer, train_on=params.train_on, max_length=params.max_length,
                          template_kwargs=kwargs, template_date=params.template_date,
                          train_reasoning=params.train_on_reasoning,
                          mask_empty_think=params.mask_empty_think)
    datasets, quarantine, stats = tokenize_all(
        clean_dir, encoder, params.num_proc or os.cpu_count() or 1,
        params.max_parity_failures)
    with atomic_path(out_dir, is_dir=True) as tmp:
        save_splits(datasets, tmp)
        write_jsonl(tmp / "quarantine.jsonl", quarantine)
        write_used(tmp / USED_FILE, kwargs, params.template_date)
    return datasets, quarantine, stats
