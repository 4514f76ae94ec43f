"""Generation: stop tokens, batching with left padding, decoding params, context fitting."""

from __future__ import annotations

import pytest
import torch

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.inference.generation import (
    PromptTooLong,
    fit_prompt,
    generate_replies,
    load_for_inference,
    stop_token_ids,
    top2_margin,
)
from chatsft.model.load import load_tokenizer
from chatsft.params import GenerationParams

USER = [{"role": "user", "content": "Say something."}]


def words(tok, n: int) -> list[int]:
    """n ids of whole-word tokens (a leading space, letters only)."""
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    found = [i for t, i in vocab if t.startswith("Ġ") and t[1:].isalpha() and len(t) > 3]
    return found[:n]


def prompt_end(tok) -> int:
    """The last token of every prompt (the newline after the assistant header)."""
    return ChatEncoder(tok).encode_prompt(USER)[-1]


def widen(model, std: float = 0.3):
    """Wider weights than the default init, seeded: replies then depend on the whole prompt
    (with the default init every prompt gets the same repeated token, hiding mistakes)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for w in model.parameters():
            if w.dim() == 2:
                w.normal_(0.0, std)
    return model


def prompts_of(records, n: int) -> list[list[dict]]:
    """n prompts of different lengths: each record up to its last assistant turn."""
    out = []
    for r in records[:n]:
        msgs = r["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        out.append(msgs[:last])
    return out


def test_generation_stops_at_the_end_of_turn_token_not_only_eos(bigram_model_dir,
                                                                 chatml_tokenizer):
    tok = chatml_tokenizer
    a, b, c = words(tok, 3)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    # A base model's eos is <|endoftext|>; the chat template ends turns with <|im_end|>.
    path = bigram_model_dir({prompt_end(tok): a, a: b, b: im_end, im_end: c}, default=c,
                            eos_token="<|endoftext|>")
    model, tok = load_for_inference(str(path)), load_tokenizer(path)
    assert tok.eos_token == "<|endoftext|>" and model.generation_config.eos_token_id != [im_end]
    assert im_end in stop_token_ids(model, ChatEncoder(tok))

    [reply] = generate_replies(model, tok, [USER], GenerationParams(max_new_tokens=10))
    assert reply.ids == [a, b]
    assert reply.text == tok.decode([a, b]).strip()
    assert reply.generated_tokens == 3  # a, b and <|im_end|>

    # Stopping at eos alone would run past the end of the turn.
    ids = torch.tensor([ChatEncoder(tok).encode_prompt(USER)])
    plain = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                           max_new_tokens=5, do_sample=False)[0, ids.shape[1]:].tolist()
    assert plain[:4] == [a, b, im_end, c]


def test_a_reply_without_stop_token_ends_at_max_new_tokens(bigram_model_dir, chatml_tokenizer):
    tok = chatml_tokenizer
    [a] = words(tok, 1)
    path = bigram_model_dir({prompt_end(tok): a}, default=a)
    model, tok = load_for_inference(str(path)), load_tokenizer(path)
    [reply] = generate_replies(model, tok, [USER], GenerationParams(max_new_tokens=7))
    assert reply.generated_tokens == 7 and reply.ids == [a] * 7


def test_batched_greedy_equals_one_at_a_time(tiny_model, chatml_tokenizer, demo_records):
    """Left padding with the mask-derived positions: the same greedy tokens as each prompt
    alone (fp32), except where the alone run had a near tie between its top two logits."""
    tok, model = chatml_tokenizer, widen(tiny_model)
    prompts = prompts_of(demo_records, 12)
    lengths = {len(ChatEncoder(tok).encode_prompt(p)) for p in prompts}
    assert len(lengths) >= 6  # a batch really mixes lengths, so rows are padded
    p = GenerationParams(batch_size=5, max_new_tokens=12)
    batched = generate_replies(model, tok, prompts, p)
    alone = [generate_replies(model, tok, [x], p)[0] for x in prompts]
    same = 0
    for prompt, x, y in zip(prompts, alone, batched, strict=True):
        if x.ids == y.ids:
            same += 1
            continue
        k = next(i for i, (s, t) in enumerate(zip(x.ids + [-1], y.ids + [-1], strict=False))
                 if s != t)
        margin = top2_margin(model, ChatEncoder(tok).encode_prompt(prompt) + x.ids[:k])
        assert margin < 1e-4, f"reply differs at token {k} with a top-2 gap of {margin}"
    assert same >= len(prompts) - 1
    assert len({tuple(x.ids) for x in alone}) == len(prompts)  # replies depend on the prompt
    assert all(len(x.ids) > 3 for x in alone)  # several steps through the KV cache


def test_sampling_is_seeded_and_top_k_zero_means_off(bigram_model_dir, chatml_tokenizer):
    """All non-special next tokens equally likely: the sample shows which are allowed."""
    path = bigram_model_dir({}, default=None)
    model, tok = load_for_inference(str(path)), load_tokenizer(path)
    prompts = [USER] * 6

    def sample(**kw) -> list[list[int]]:
        p = GenerationParams(do_sample=True, max_new_tokens=20, batch_size=3, **kw)
        return [r.ids for r in generate_replies(model, tok, prompts, p)]

    first = sample(seed=1)
    assert first == sample(seed=1)
    assert first != sample(seed=2)
    # transformers would fill an unset top_k with its default 50.
    assert len({t for ids in first for t in ids}) > 50
    assert len({t for ids in sample(seed=1, top_k=5) for t in ids}) <= 5


def test_fit_prompt_drops_the_oldest_exchanges_and_keeps_the_system_prompt(chatml_tokenizer):
    enc = ChatEncoder(chatml_tokenizer)
    system = [{"role": "system", "content": "Be brief."}]
    turns = []
    for i in range(3):
        turns += [{"role": "user", "content": f"Question number {i}?"},
                  {"role": "assistant", "content": f"Answer number {i}."}]
    last = [{"role": "user", "content": "And now?"}]
    kept = system + turns[4:] + last
    ids, dropped = fit_prompt(enc, system + turns + last, len(enc.encode_prompt(kept)))
    assert (ids, dropped) == (enc.encode_prompt(kept), 4)
    assert fit_prompt(enc, system + turns + last, None)[1] == 0
    with pytest.raises(PromptTooLong):
        fit_prompt(enc, system + turns + last, len(enc.encode_prompt(system + last)) - 1)


def test_a_prompt_longer_than_the_context_gets_an_error_the_others_replies(
        tiny_model, chatml_tokenizer):
    long = [{"role": "user", "content": "word " * 300}]
    p = GenerationParams(max_new_tokens=8)
    short, too_long, again = generate_replies(tiny_model, chatml_tokenizer, [USER, long, USER],
                                              p, max_context=128)
    assert short == again == generate_replies(tiny_model, chatml_tokenizer, [USER], p)[0]
    assert short.error is None and short.generated_tokens > 0
    assert too_long.error.startswith("prompt too long: ") and too_long.error.endswith(
        " tokens > 120")
    assert (too_long.text, too_long.generated_tokens) == ("", 0)
