"""The server's batcher: a reply never depends on the requests that shared its batch."""

from __future__ import annotations

import threading

import pytest

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.inference.generation import generate_replies, stop_token_ids, top2_margin
from chatsft.params import GenerationParams
from chatsft.serve.batcher import Batcher, Job
from tests.test_generation import prompts_of, widen


@pytest.fixture()
def setup(tiny_model, chatml_tokenizer, demo_records):
    model, tok = widen(tiny_model), chatml_tokenizer
    enc = ChatEncoder(tok)
    return model, tok, enc, stop_token_ids(model, enc), prompts_of(demo_records, 12)


def run_together(batcher: Batcher, jobs: list[Job]) -> list[Job]:
    threads = [threading.Thread(target=batcher.run, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return jobs


def test_batched_greedy_replies_equal_one_at_a_time(setup):
    model, tok, enc, stops, prompts = setup
    batcher = Batcher(model, tok, stops, max_batch=16, window=0.5)
    # Different max_tokens per request: each row stops at its own limit.
    jobs = run_together(batcher, [Job(enc.encode_prompt(p), 6 + i % 3 * 4)
                                  for i, p in enumerate(prompts)])
    batcher.close()
    assert max(batcher.batch_sizes) >= 6  # the requests really shared batches
    same = 0
    for prompt, job in zip(prompts, jobs, strict=True):
        [alone] = generate_replies(model, tok, [prompt],
                                   GenerationParams(max_new_tokens=job.max_tokens))
        assert job.finish_reason in ("stop", "length")
        assert len(job.tokens) <= job.max_tokens
        if job.text.strip() == alone.text and len(job.tokens) == alone.generated_tokens:
            same += 1
            continue
        ids = [t for t in job.tokens if t not in stops]
        k = next(i for i, (s, t) in enumerate(zip(alone.ids + [-1], ids + [-1], strict=False))
                 if s != t)
        margin = top2_margin(model, enc.encode_prompt(prompt) + alone.ids[:k])
        assert margin < 1e-4, f"reply differs at token {k} with a top-2 gap of {margin}"
    assert same >= len(prompts) - 1
    assert len({j.text for j in jobs}) > len(prompts) // 2  # replies depend on the prompt


def test_a_seeded_sample_does_not_depend_on_its_batch(setup):
    model, tok, enc, stops, prompts = setup
    batcher = Batcher(model, tok, stops, max_batch=16, window=0.3)

    def sampled(seed: int) -> Job:
        return Job(enc.encode_prompt(prompts[0]), 10, temperature=1.5, top_p=0.95, seed=seed)

    alone = batcher.run(sampled(7))
    crowd = run_together(batcher, [sampled(7)] + [Job(enc.encode_prompt(p), 10, 1.0, seed=i)
                                                   for i, p in enumerate(prompts[1:6])])
    other_seed = batcher.run(sampled(8))
    batcher.close()
    assert batcher.batch_sizes[-2] == 6
    assert crowd[0].tokens == alone.tokens
    assert other_seed.tokens != alone.tokens


def test_stop_strings_and_cancellation_end_only_their_row(setup):
    model, tok, enc, stops, prompts = setup
    batcher = Batcher(model, tok, stops, max_batch=4, window=0.3)
    full = batcher.run(Job(enc.encode_prompt(prompts[2]), 12))
    stop = full.text.strip()[len(full.text.strip()) // 2:][:3]
    cut = full.text[: full.text.find(stop)]
    first = Job(enc.encode_prompt(prompts[2]), 12, stop=[stop])
    cancelled = Job(enc.encode_prompt(prompts[3]), 12)
    cancelled.cancelled = True
    others = run_together(batcher, [first, cancelled, Job(enc.encode_prompt(prompts[2]), 12)])
    batcher.close()
    assert first.finish_reason == "stop" and first.text == cut and stop not in first.text
    assert len(first.tokens) < len(full.tokens)
    assert cancelled.finish_reason == "cancelled"
    assert others[2].tokens == full.tokens
