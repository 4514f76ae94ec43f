"""The tokenize stage's core: clean splits -> tokenized `datasets` splits and stats (the mask
audit page is chatsft/mask_audit.py)."""

from __future__ import annotations

import gc
import hashlib
import json
import math
import multiprocessing
import os
from array import array
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
from datasets import Dataset, DatasetDict, DatasetInfo, Features, Sequence, Value
from datasets.table import InMemoryTable
from transformers import PreTrainedTokenizerBase

from chatsft.batching.packing import IGNORE, pack_stats
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.chat_template.parts import Encoded, ParityError, TooLong
from chatsft.config import EPOCH, SPLITS
from chatsft.io import atomic_path, read_jsonl, write_jsonl
from chatsft.params import TokenizeParams
from chatsft.template_kwargs import USED_FILE, write_used

# `source`: the record's data.raw entry (written by clean), for the loss per source.
FEATURES = Features({"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int32")),
                     "source": Value("string")})
CHUNK = 1024  # most records per batched tokenizer call
# Fewer records per process than this are not worth a fork: a pool costs ~0.1 CPU-second and
# each child page-faults its way through the parent's copied memory (measured with the real
# Qwen tokenizer, benchmarks/tokenize_real.py).
MIN_CHUNK = 256
# Above this share of a split quarantined as too long, the stage warns and suggests a
# max_length: a silent loss of that size changes what the model learns.
TOO_LONG_WARNING = 0.05
KEEP_SHARE = 0.99


# What a forked worker process inherits: the encoder and the records (a worker is sent only
# a range of indices, not the records themselves, which would be pickled to it).
_WORKER: ChatEncoder | None = None
_RECORDS: list[dict] = []


def _encode_range(bounds: tuple[int, int]) -> tuple[list, bytes, bytes]:
    """A worker's results, with every sample's ids and labels in two int32 buffers: pickling
    those back is a copy, where lists of Python ints are pickled and rebuilt one int at a
    time. Per record: its exception, or (length, dropped turns) per sample."""
    results = _WORKER.encode_records(_RECORDS[bounds[0] : bounds[1]])
    ids, labels, shapes = array("i"), array("i"), []
    for res in results:
        if isinstance(res, Exception):
            shapes.append(res)
            continue
        shapes.append([(len(e.input_ids), e.dropped_turns) for e in res])
        for e in res:
            ids.extend(e.input_ids)
            labels.extend(e.labels)
    return shapes, ids.tobytes(), labels.tobytes()


def _unpack(shapes: list, ids_bytes: bytes, labels_bytes: bytes) -> list:
    ids, labels = array("i"), array("i")
    ids.frombytes(ids_bytes)
    labels.frombytes(labels_bytes)
    ids, labels = ids.tolist(), labels.tolist()
    out, at = [], 0
    for shape in shapes:
        if isinstance(shape, Exception):
            out.append(shape)
            continue
        samples = []
        for n, dropped in shape:
            samples.append(Encoded(ids[at : at + n], labels[at : at + n], dropped))
            at += n
        out.append(samples)
    return out


def chunk_size(n: int, num_proc: int) -> int:
    """Records per chunk: at most CHUNK, and a multiple of `num_proc` chunks of about equal
    size, so that every process gets work (a split of up to CHUNK records used to be one
    chunk, hence one process) and none is left with a short last chunk."""
    if num_proc <= 1:
        return CHUNK
    chunks = num_proc * -(-n // (num_proc * CHUNK))
    return max(MIN_CHUNK, -(-n // max(chunks, 1)))


def encode_all(records: list[dict], encoder: ChatEncoder, num_proc: int = 1) -> Iterator:
    """`encoder.encode_records` of every record, in order, in chunks over `num_proc` forked
    processes (rendering the template is Python, one core per process). The results are the
    same with any number of processes: each record is encoded on its own."""
    size = chunk_size(len(records), num_proc)
    bounds = [(b, min(b + size, len(records))) for b in range(0, len(records), size)]
    if num_proc <= 1 or len(bounds) <= 1:
        for start, stop in bounds:
            yield from encoder.encode_records(records[start:stop])
        return
    global _WORKER, _RECORDS
    _WORKER, _RECORDS = encoder, records
    try:
        with multiprocessing.get_context("fork").Pool(min(num_proc, len(bounds))) as pool:
            for results in pool.imap(_encode_range, bounds):
                yield from _unpack(*results)
    finally:
        _WORKER, _RECORDS = None, []


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """CPython's cyclic collector walks every element of every list at each full collection,
    and the columns grow to millions of token ids. Merging 10 workers' results took 2.2x as
    long with it on (0.128 s vs 0.058 s for 10,000 samples); one process on the real Qwen
    tokenizer went from 1.82 to 1.53 s on 10,000 alpaca_zh conversations (one run each).
    Nothing built here forms reference cycles, so collection waits until the split is done."""
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
) -> tuple[dict[str, list], list[dict], dict]:
    """Encode one split; returns (columns, quarantined records, stats).

    A record the template cannot render, or whose last assistant turn cannot fit, is
    quarantined with its reason. So is a record whose training tokens differ from what
    inference would feed the model (`parity`, with the first differing token: a BPE token
    across a turn boundary, say); more than `max_parity_failures` of the split stops the stage,
    since then the template or tokenizer, not the data, is at fault."""
    with _no_cyclic_gc():
        return _tokenize_split(records, encoder, split, source, num_proc, max_parity_failures)


def _tokenize_split(records: list[dict], encoder: ChatEncoder, split: str, source: str | None,
                    num_proc: int, max_parity_failures: float
                    ) -> tuple[dict[str, list], list[dict], dict]:
    source = source or f"data/clean/{split}.jsonl"
    cols: dict[str, list] = {"input_ids": [], "labels": [], "source": [], EPOCH: []}
    quarantine: list[dict] = []
    reasons: Counter = Counter()
    needed: list[int] = []  # tokens the too-long conversations need to be kept
    truncated = dropped = split_conversations = supervised = 0
    for n, (rec, res) in enumerate(zip(records, encode_all(records, encoder, num_proc),
                                       strict=True), start=1):
        if isinstance(res, Exception):
            reason = "parity" if isinstance(res, ParityError) else res.reason
            reasons[reason] += 1
            if isinstance(res, TooLong) and res.needed is not None:
                needed.append(res.needed)
            quarantine.append({"source": source, "where": f"line {n}",
                               "reason": reason, "detail": str(res), "record": rec})
            continue
        truncated += res[0].dropped_turns > 0
        dropped += res[0].dropped_turns
        split_conversations += len(res) > 1
        for enc in res:
            cols["input_ids"].append(enc.input_ids)
            cols["labels"].append(enc.labels)
            cols["source"].append(rec.get("source", ""))
            cols[EPOCH].append(rec.get(EPOCH, 0))
            supervised += len(enc.labels) - enc.labels.count(IGNORE)
    if not any(cols[EPOCH]):  # one draw for every epoch: no column
        del cols[EPOCH]
    failed = reasons["parity"]
    if failed and failed > max_parity_failures * len(records):
        first = next(q for q in quarantine if q["reason"] == "parity")
        preview = json.dumps(first["record"], ensure_ascii=False)
        raise ParityError(
            f"{source}: {failed} of {len(records)} records tokenize differently for training "
            f"than for inference (more than tokenize.max_parity_failures="
            f"{max_parity_failures}); the template or tokenizer needs fixing. First, "
            f"{first['where']}: {first['detail']}\n  record: {preview[:400]}")
    tokens = sum(map(len, cols["input_ids"]))
    stats = {
        "conversations": len(records),
        "kept": len(records) - len(quarantine),
        "samples": len(cols["input_ids"]),
        "quarantined": dict(sorted(reasons.items())),
        "truncated": truncated,
        "dropped_messages": dropped,
        "split_by_turn": split_conversations,
        "tokens": tokens,
        "supervised_tokens": supervised,
        "supervised_fraction": round(supervised / tokens, 6) if tokens else 0.0,
        "longest": max(map(len, cols["input_ids"]), default=0),
        "too_long_fraction": round(len(needed) / len(records), 6) if records else 0.0,
        "max_length_keeping_99pct": length_keeping(len(records) - len(quarantine), needed),
    }
    return cols, quarantine, stats


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


def to_dataset(cols: dict[str, list]) -> Dataset:
    """The columns as a Dataset, straight to Arrow (Dataset.from_dict encodes row by row,
    twice as slow). Its fingerprint is set from the content, through the private
    `Dataset._fingerprint` (datasets has no public way): the random one it would otherwise get
    lands in `state.json` and makes data/tokenized differ on every run, so DVC would see a new
    output and rerun train each time."""
    ids = pa.list_(pa.int32())
    columns = {"input_ids": pa.array(cols["input_ids"], type=ids),
               "labels": pa.array(cols["labels"], type=ids),
               "source": pa.array(cols.get("source") or [""] * len(cols["input_ids"]),
                                  type=pa.string())}
    features = FEATURES
    if EPOCH in cols:
        columns[EPOCH] = pa.array(cols[EPOCH], type=pa.int32())
        features = Features({**FEATURES, EPOCH: Value("int32")})
    table = pa.table(columns)
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
    train_cols: dict[str, list] = {"input_ids": [], "labels": []}
    for split in SPLITS:
        path = Path(clean_dir) / f"{split}.jsonl"
        cols, q, s = tokenize_split(read_jsonl(path), encoder, split, str(path), num_proc,
                                    max_parity_failures)
        datasets[split] = to_dataset(cols)
        quarantine += q
        stats[split] = s
        if split == "train":
            train_cols = cols
    capacity = encoder.max_length or max(map(len, train_cols["input_ids"]), default=1)
    stats["packing"] = {"capacity": capacity, **pack_stats(
        train_cols["input_ids"], train_cols["labels"], capacity)}
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
