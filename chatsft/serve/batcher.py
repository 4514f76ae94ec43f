"""Batched generation for the server: requests arriving within a short window share one
`model.generate` call (left padding, KV cache), and no reply depends on its batch companions.

Why not plain `generate` settings: one call has one sampling configuration and one random
stream for the whole batch, so a request's sampled reply would change with its neighbours, and
`max_new_tokens` and stop strings are per call. Two small hooks make every row independent:

- `RowSampler`, a logits processor, samples each sampling row with the request's own
  temperature, top_p and seeded `torch.Generator`, and leaves only the drawn token, so the
  (greedy) decoding of `generate` picks it; greedy rows are untouched.
- `RowMonitor`, a stopping criterion called after every step, records each row's new token,
  ends the row at a stop token, its own `max_tokens`, a stop string or a cancellation, and
  notifies the request (streaming). `generate` then pads finished rows and stops when all are.

Greedy rows therefore get the tokens they would get alone, up to float rounding of the padded
attention (tested), and a seeded sampling row draws from its own stream.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor, StoppingCriteria

from chatsft.inference.generation import generation_config, left_pad
from chatsft.params import GenerationParams


@dataclass(eq=False)
class Job:
    """One request's generation; the worker thread fills `tokens`, `text`, `finish_reason`."""

    prompt: list[int]
    max_tokens: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    notify: Callable[[], None] = lambda: None  # called from the worker thread on each update
    tokens: list[int] = field(default_factory=list)  # generated, stop token included
    text: str = ""  # the reply so far (before any stop token or stop string)
    finish_reason: str | None = None  # "stop", "length", "cancelled" or "error"
    error: str | None = None
    cancelled: bool = False
    generator: torch.Generator | None = None


class RowSampler(LogitsProcessor):
    """Samples each sampling row from its own generator; leaves greedy rows alone."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs = jobs

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        for i, job in enumerate(self.jobs):
            if job.temperature <= 0 or job.finish_reason:
                continue
            probs = torch.softmax(scores[i].float() / job.temperature, dim=-1)
            if job.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                outside = sorted_probs.cumsum(0) - sorted_probs >= job.top_p  # top one stays
                probs[order[outside]] = 0.0
            token = torch.multinomial(probs, 1, generator=job.generator)
            scores[i] = float("-inf")
            scores[i, token] = 0.0
        return scores


class RowMonitor(StoppingCriteria):
    """Records each row's new token and says which rows are finished."""

    def __init__(self, jobs: list[Job], stops: set[int], decode: Callable[[list[int]], str]):
        self.jobs, self.stops, self.decode = jobs, stops, decode

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs):
        last = input_ids[:, -1].tolist()
        done = []
        for job, token in zip(self.jobs, last, strict=True):
            if not job.finish_reason:
                self._step(job, token)
            done.append(job.finish_reason is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    def _step(self, job: Job, token: int) -> None:
        job.tokens.append(token)
        if token in self.stops:
            job.finish_reason = "stop"
        else:
            job.text = self.decode(job.tokens)
            cut = min((k for k in (job.text.find(s) for s in job.stop) if k >= 0), default=-1)
            if cut >= 0:
                job.text, job.finish_reason = job.text[:cut], "stop"
            elif job.cancelled:
                job.finish_reason = "cancelled"
            elif len(job.tokens) >= job.max_tokens:
                job.finish_reason = "length"
        job.notify()


class Batcher:
    """A worker thread running the submitted jobs in batches of up to `max_batch`, gathering
    for `window` seconds after the first job of a batch arrives."""

    def __init__(self, model, tokenizer, stops: list[int], max_batch: int = 32,
                 window: float = 0.01) -> None:
        self.model, self.tok = model.eval(), tokenizer
        self.stops = sorted(stops)
        self.max_batch, self.window = max_batch, window
        self.device = next(model.parameters()).device
        self.batch_sizes: list[int] = []  # of the recent batches, for tests and benchmarks
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="chatsft-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        if self._closed:
            raise RuntimeError("the batcher is closed")
        if job.temperature > 0:
            job.generator = torch.Generator(device=self.device)
            job.generator.manual_seed(job.seed if job.seed is not None else secrets.randbits(63))
        self._queue.put(job)

    def close(self) -> None:
        """Finish every submitted job, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join()

    def run(self, job: Job) -> Job:
        """Submit `job` and wait for it (for callers in other threads)."""
        finished = threading.Event()
        previous = job.notify

        def notify() -> None:
            previous()
            if job.finish_reason:
                finished.set()

        job.notify = notify
        self.submit(job)
        finished.wait()
        return job

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            jobs, deadline = [first], time.monotonic() + self.window
            while len(jobs) < self.max_batch:
                try:
                    job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                jobs.append(job)
            self._generate(jobs)

    def _decode(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens, skip_special_tokens=True)

    @torch.inference_mode()
    def _generate(self, jobs: list[Job]) -> None:
        self.batch_sizes = self.batch_sizes[-999:] + [len(jobs)]
        live = [j for j in jobs if not j.cancelled]
        for job in jobs:
            if job.cancelled:
                job.finish_reason = "cancelled"
                job.notify()
        if not live:
            return
        ids, mask = left_pad([j.prompt for j in live], self.tok.pad_token_id)
        try:
            self.model.generate(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                generation_config=generation_config(
                    self.stops, self.tok.pad_token_id,
                    GenerationParams(max_new_tokens=max(j.max_tokens for j in live))),
                logits_processor=[RowSampler(live)],
                stopping_criteria=[RowMonitor(live, set(self.stops), self._decode)],
            )
        except Exception as err:  # one failed batch fails its requests, not the server
            for job in live:
                if not job.finish_reason:
                    job.error, job.finish_reason = f"{type(err).__name__}: {err}", "error"
                    job.notify()
            return
        for job in live:  # rows generate() ended before their monitor did (max length)
            if not job.finish_reason:
                job.finish_reason = "length"
                job.notify()
