"""A split's records encoded in chunks, in this process or over forked worker processes, each
chunk's samples as flat int32 arrays: `tokenize_data` builds the Arrow columns straight from
them, with no Python int per token in the parent (pickling lists of ints back from a worker,
rebuilding them and converting them to Arrow cost more CPU than the workers saved)."""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.chat_template.parts import Encoded

CHUNK = 1024  # most records per batched tokenizer call, and per task sent to a worker
# Fewer records per process than this are not worth a fork: a pool costs ~0.1 CPU-second and
# each child page-faults its way through the parent's copied memory (measured with the real
# Qwen tokenizer, benchmarks/tokenize_real.py).
MIN_CHUNK = 256
PARALLELISM = "TOKENIZERS_PARALLELISM"


@dataclass
class Chunk:
    """Consecutive records' results: per record its exception (`Skipped`, `ParityError`) or
    per sample (length, dropped turns); the kept samples' ids and labels one after another."""

    outcomes: list
    input_ids: np.ndarray
    labels: np.ndarray


def _flat(samples: Sequence[Encoded], field: str, total: int) -> np.ndarray:
    return np.fromiter(itertools.chain.from_iterable(getattr(e, field) for e in samples),
                       dtype=np.int32, count=total)


def encode_chunk(encoder: ChatEncoder, records: Sequence[dict]) -> Chunk:
    """`encoder.encode_records` of `records` as one Chunk, in one batch: the Rust tokenizer
    spends less CPU per token on larger ones (the stage took 13-15% less CPU at 1,024 records
    per batch than at 128 on the real Qwen tokenizer, benchmarks/tokenize_real.py data)."""
    outcomes: list = []
    samples: list[Encoded] = []
    for res in encoder.encode_records(records):
        if isinstance(res, Exception):
            outcomes.append(res)
            continue
        outcomes.append([(len(e.input_ids), e.dropped_turns) for e in res])
        samples += res
    total = sum(len(e.input_ids) for e in samples)
    return Chunk(outcomes, _flat(samples, "input_ids", total), _flat(samples, "labels", total))


# What a forked worker process inherits: the encoder and the records (a worker is sent only
# a range of indices, not the records themselves, which would be pickled to it).
_WORKER: ChatEncoder | None = None
_RECORDS: Sequence[dict] = []


def _start_worker() -> None:
    # A fresh thread: one inherited through fork does not exist in the child.
    _WORKER.masker.batch_thread = ThreadPoolExecutor(1)


def _encode_range(bounds: tuple[int, int]) -> Chunk:
    return encode_chunk(_WORKER, _RECORDS[bounds[0] : bounds[1]])


def chunk_size(n: int, num_proc: int) -> int:
    """Records per chunk: at most CHUNK, and a multiple of `num_proc` chunks of about equal
    size, so that every process gets work (a split of up to CHUNK records used to be one
    chunk, hence one process) and none is left with a short last chunk."""
    if num_proc <= 1:
        return CHUNK
    chunks = num_proc * -(-n // (num_proc * CHUNK))
    return max(MIN_CHUNK, -(-n // max(chunks, 1)))


@contextmanager
def _one_thread_per_process(encoder: ChatEncoder) -> Iterator[None]:
    """While several processes share the cores: the Rust tokenizer without its own thread
    pool (it reads TOKENIZERS_PARALLELISM at every call), here and in the processes forked
    now. A pool already started in this process does not survive a fork, so a child that used
    it would hang: tokenizers only turns it off in the child itself when the variable is
    unset, and a user who set it to true (to silence the fork warning) got a stage that
    never ended. This process's batches run on a thread of their own (`Masker`)."""
    saved = os.environ.get(PARALLELISM)
    os.environ[PARALLELISM] = "false"
    encoder.masker.batch_thread = ThreadPoolExecutor(1)
    try:
        yield
    finally:
        encoder.masker.batch_thread.shutdown()
        encoder.masker.batch_thread = None
        if saved is None:
            os.environ.pop(PARALLELISM, None)
        else:
            os.environ[PARALLELISM] = saved


def encode_chunks(records: Sequence[dict], encoder: ChatEncoder, num_proc: int = 1
                  ) -> Iterator[Chunk]:
    """Every record encoded, in order, in chunks over `num_proc` processes: this one and
    `num_proc - 1` forked ones (rendering the template is Python, one core per process). The
    results are the same with any number of processes: each record is encoded on its own."""
    size = chunk_size(len(records), num_proc)
    bounds = [(b, min(b + size, len(records))) for b in range(0, len(records), size)]
    procs = min(num_proc, len(bounds))
    if procs <= 1:
        for start, stop in bounds:
            yield encode_chunk(encoder, records[start:stop])
        return
    global _WORKER, _RECORDS
    _WORKER, _RECORDS = encoder, records
    try:
        # This process takes every procs-th chunk itself: a fork fewer (each forked worker
        # page-faults through its first chunk, ~0.1 CPU-s) and its memory is already warm.
        with (_one_thread_per_process(encoder),
              multiprocessing.get_context("fork").Pool(procs - 1, _start_worker) as pool):
            forked = {i: pool.apply_async(_encode_range, (b,))
                      for i, b in enumerate(bounds) if i % procs}
            for i, (start, stop) in enumerate(bounds):
                yield forked.pop(i).get() if i % procs else encode_chunk(encoder,
                                                                         records[start:stop])
    finally:
        _WORKER, _RECORDS = None, []
