"""Issue 13 acceptance, in process: reasoning on real tokenizers (`tests/families.py`).

`reasoning_content` and inline think blocks render exactly as the official Qwen3 template
renders them, and each `tokenize.*` reasoning choice changes the labels as documented:
`train_on_reasoning: false` (no loss on the think block), `mask_empty_think` (none on empty
ones), `enable_thinking: false` (the empty think block is in the prompt).
"""

from __future__ import annotations

import re

import pytest

from chatsft.data.formats import to_record
from chatsft.inference.generation import decode_reply
from tests.families import (
    FAMILIES,
    IGNORE,
    encoder,
    real_data,
    reasoning_raw,
    reasoning_records,
    results,
    runs,
    supervised_texts,
    tokenizer,
    with_reasoning,
)


def test_reasoning_renders_as_the_official_template():
    tok, enc = tokenizer("qwen3"), encoder("qwen3")
    inline_seen = field_seen = 0
    for raw, rec in reasoning_records():
        msgs = rec["messages"]
        raw_msgs = raw.get("messages")
        for cut in range(1, len(msgs) + 1):
            for gen in (False, True):
                ours = enc.render(msgs[:cut], add_generation_prompt=gen)
                assert ours == tok.apply_chat_template(msgs[:cut], tokenize=False,
                                                       add_generation_prompt=gen)
                if raw_msgs is not None:  # the inline form, rendered by the official template
                    assert ours == tok.apply_chat_template(raw_msgs[:cut], tokenize=False,
                                                           add_generation_prompt=gen)
        for m in raw_msgs or []:
            inline_seen += "</think>" in m["content"]
            field_seen += "reasoning_content" in m
        assert not any("</think>" in m["content"] for m in msgs)  # clean moved it out
    assert inline_seen >= 5 and field_seen >= 5


def test_inline_think_block_is_normalised_like_reasoning_content():
    for raw, rec in reasoning_records():
        msgs = raw.get("messages") or []
        if not any("reasoning_content" in m for m in msgs):
            continue
        inline = [{"role": m["role"], "content": f"<think>\n{m['reasoning_content']}\n</think>"
                   f"\n\n{m['content']}"} if "reasoning_content" in m else m for m in msgs]
        assert to_record({"messages": inline}) == rec



def test_train_reasoning_false_puts_no_loss_on_the_think_block():
    checked = 0
    for _, rec in reasoning_records():
        turns = with_reasoning(rec)
        # Qwen3 renders every trained turn as the last one (one sample per turn): with its
        # think block, empty or not.
        assert supervised_texts("qwen3", rec) == [
            f"<think>\n{r}\n</think>\n\n{a}<|im_end|>" for r, a in turns]
        assert supervised_texts("qwen3", rec, train_reasoning=False) == [
            f"{a}<|im_end|>" for _, a in turns]
        ids = [s.input_ids for s in results("qwen3", rec)]
        assert [s.input_ids for s in results("qwen3", rec, train_reasoning=False)] == ids
        checked += len(turns)
    assert checked >= 20


THINK_BLOCK = re.compile(r"<think>\n.*?\n</think>\s*", re.S)


@pytest.mark.parametrize("name", FAMILIES)
def test_train_reasoning_false_drops_the_think_block_in_every_family(name):
    """Templates that do not render reasoning get it inline; train_reasoning=False still takes
    the loss off exactly the think block, in plain and tool-call turns, and changes no token."""
    en = real_data("alpaca_en_demo.json")[300:320]
    glaive = real_data("glaive_toolcall_zh_demo.json")[140:150]
    changed = 0
    for rec in map(to_record, reasoning_raw(en, glaive)):
        if rec.get("tools") and not encoder(name)._info(rec["tools"]).supports_tools:
            continue
        full = supervised_texts(name, rec)
        assert supervised_texts(name, rec, train_reasoning=False) == [
            THINK_BLOCK.sub("", t, count=1) if t.startswith("<think>") else t for t in full]
        assert [s.input_ids for s in results(name, rec, train_reasoning=False)] == [
            s.input_ids for s in results(name, rec)]
        changed += sum(t.startswith("<think>") for t in full)
    assert changed >= 10


@pytest.mark.parametrize("name", FAMILIES)
def test_a_trained_reply_decodes_to_its_answer_and_reasoning(name):
    """What a model trained on these labels generates (the supervised tokens, end-of-turn
    included) comes back through decode_reply as the record's answer, reasoning apart: what
    evaluate and predict report."""
    enc = encoder(name)
    stops = enc.end_of_turn_ids()
    checked = 0
    for _, rec in reasoning_records():
        turns = [m for m in rec["messages"] if m["role"] == "assistant"]
        replies = [s.input_ids[a:b] for s in results(name, rec) for a, b in runs(s.labels)]
        assert len(replies) == len(turns)
        for tokens, turn in zip(replies, turns, strict=True):
            assert tokens[-1] in stops
            reply = decode_reply(tokenizer(name), tokens, stops)
            assert reply.text == turn["content"].strip()
            reasoning = turn.get("reasoning_content")
            if reasoning is None and name == "qwen3":
                reasoning = ""  # Qwen3 writes an empty think block for a turn without one
            assert reply.reasoning == reasoning
            checked += 1
    assert checked >= 20


def test_mask_empty_think_masks_empty_think_blocks_only():
    empty = nonempty = 0
    for _, rec in reasoning_records():
        want = [f"{a}<|im_end|>" if not r else f"<think>\n{r}\n</think>\n\n{a}<|im_end|>"
                for r, a in with_reasoning(rec)]
        assert supervised_texts("qwen3", rec, mask_empty_think=True) == want
        empty += sum(not r for r, _ in with_reasoning(rec))
        nonempty += sum(bool(r) for r, _ in with_reasoning(rec))
    plain = to_record(real_data("alpaca_en_demo.json")[0])  # no reasoning: an empty think block
    answer = plain["messages"][-1]["content"]
    assert supervised_texts("qwen3", plain) == [f"<think>\n\n</think>\n\n{answer}<|im_end|>"]
    assert supervised_texts("qwen3", plain, mask_empty_think=True) == [f"{answer}<|im_end|>"]
    assert empty >= 5 and nonempty >= 5


def test_enable_thinking_false_puts_the_empty_think_block_in_the_prompt():
    tok, enc = tokenizer("qwen3"), encoder("qwen3", enable_thinking=False)
    think = set(tok.convert_tokens_to_ids(["<think>", "</think>"]))
    for raw in real_data("alpaca_zh_demo.json")[:20] + real_data("alpaca_en_demo.json")[:20]:
        rec = to_record(raw)
        msgs = rec["messages"]
        prompt = enc.encode_prompt(msgs[:-1])
        assert prompt == tok.apply_chat_template(msgs[:-1], add_generation_prompt=True,
                                                 enable_thinking=False, return_dict=False)
        assert tok.decode(prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        (sample,) = results("qwen3", rec, enable_thinking=False)
        assert sample.input_ids[: len(prompt)] == prompt
        assert supervised_texts("qwen3", rec, enable_thinking=False) == [
            f"{msgs[-1]['content']}<|im_end|>"]
        assert not think & {t for t, lab in zip(sample.input_ids, sample.labels, strict=True)
                            if lab != IGNORE}
