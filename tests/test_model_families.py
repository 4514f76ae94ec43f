"""Issue 13 acceptance, in process: ChatEncoder on the real tokenizers of four model families
(`tests/families.py`): masks, prompts, end-of-turn tokens, added ChatML tokens, template date.

Masks are checked against an independent reference, transformers' own
`apply_chat_template(..., return_assistant_tokens_mask=True)` on a `{% generation %}`-marked copy of
each template (`tests/family_templates.py`), on hundreds of real conversations.
"""

from __future__ import annotations

import datetime as dt

import pytest
from transformers import AutoTokenizer

import chatsft.template_kwargs
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.chat_template.parts import UnsupportedRole
from chatsft.model.load import ModelLoadError, apply_chat_template_choice
from tests.families import (
    FAMILIES,
    IGNORE,
    conversations,
    encoder,
    load,
    reference,
    supervised,
    template_messages,
    tokenizer,
    tokenizer_dir,
)
from tests.family_templates import LLAMA32_DATE_TEMPLATE

# -- masks and parity on real conversations --------------------------------------------------

@pytest.mark.parametrize("name", FAMILIES)
def test_marked_reference_renders_as_the_template(name):
    """The markers change nothing in the text: the reference is the family's template."""
    tok, kwargs = tokenizer(name), dict(FAMILIES[name].kwargs)
    for rec in conversations()[::7]:
        msgs, tools = template_messages(name, rec["messages"]), rec.get("tools")
        if tools and not encoder(name)._info(tools).supports_tools:
            continue
        for gen, cut in ((False, len(msgs)), (True, len(msgs) - 1)):
            marked = tok.apply_chat_template(msgs[:cut], tools=tools, tokenize=False,
                                             chat_template=FAMILIES[name].marked,
                                             add_generation_prompt=gen, **kwargs)
            assert marked == tok.apply_chat_template(msgs[:cut], tools=tools, tokenize=False,
                                                     add_generation_prompt=gen, **kwargs)


@pytest.mark.parametrize("name", FAMILIES)
def test_labels_equal_the_generation_reference(name):
    records = conversations()
    enc = encoder(name)
    quarantined, compared = [], 0
    for rec, res in zip(records, enc.encode_records(records), strict=True):
        msgs, tools = rec["messages"], rec.get("tools")
        if isinstance(res, Exception):
            quarantined.append((rec, res))
            continue
        turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
        # One sample of the whole conversation, or (Qwen3 renders earlier turns differently)
        # one sample per turn k: messages[:k+1], supervised on turn k only.
        cuts = [(len(msgs), False)] if len(res) == 1 else [(k + 1, True) for k in turns]
        assert len(res) == len(cuts)
        for sample, (cut, last_only) in zip(res, cuts, strict=True):
            ids, mask = reference(name, msgs[:cut], tools, last_only)
            assert sample.input_ids == ids
            assert supervised(sample.labels) == mask, (
                f"{name}: labels differ from the reference: "
                f"{tokenizer(name).decode(ids)!r}")
            assert all(lab in (IGNORE, t) for lab, t in zip(sample.labels, ids, strict=True))
            compared += 1
    without_tools = not enc._info([{"type": "function", "function": {"name": "f"}}]
                                  ).supports_tools
    if without_tools:  # chatsft's ChatML has no tool sections: those records are refused
        assert {type(err) for rec, err in quarantined if rec.get("tools")} == {UnsupportedRole}
        quarantined = [(rec, err) for rec, err in quarantined if not rec.get("tools")]
    assert len(quarantined) < 0.01 * len(records), [str(err) for _, err in quarantined]
    assert compared >= 250


@pytest.mark.parametrize("name", FAMILIES)
def test_prompts_equal_apply_chat_template(name):
    """Inference parity: encode_prompt(messages[:k]) is exactly the generation prompt of
    transformers' apply_chat_template with the same template kwargs."""
    tok, enc, kwargs = tokenizer(name), encoder(name), dict(FAMILIES[name].kwargs)
    checked = 0
    for rec in conversations()[::3]:
        msgs, tools = rec["messages"], rec.get("tools")
        if tools and not enc._info(tools).supports_tools:
            continue
        for k in (i for i, m in enumerate(msgs) if m["role"] == "assistant"):
            want = tok.apply_chat_template(template_messages(name, msgs[:k]), tools=tools,
                                           add_generation_prompt=True, tokenize=True,
                                           return_dict=False, **kwargs)
            assert enc.encode_prompt(msgs[:k], tools) == want
            checked += 1
    assert checked >= 100


def test_chatml_on_llama_adds_its_control_tokens():
    tok, added, before = load("llama+chatml")
    assert tok.convert_ids_to_tokens(added) == ["<|im_start|>", "<|im_end|>"]
    assert sorted(added) == [before, before + 1]
    assert all(tok.added_tokens_decoder[i].special for i in added)
    for name in ("qwen3", "qwen2.5", "llama3.1"):
        assert load(name)[1] == []  # their tokenizers already have every control token
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == added[0] and ids[-1] == added[1]


def test_base_tokenizer_without_template_needs_a_chat_template_choice():
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir(FAMILIES["llama3.1"])))
    assert not tok.chat_template  # the Llama-3.2 tokenizer is shipped without one
    with pytest.raises(ModelLoadError, match="model.chat_template to one of chatml"):
        apply_chat_template_choice(tok, "auto", "llama-3.2")


@pytest.mark.parametrize("name", FAMILIES)
def test_end_of_turn_is_the_templates_only(name):
    tok = tokenizer(name)
    end = "<|eot_id|>" if name == "llama3.1" else "<|im_end|>"
    ends = ChatEncoder(tok).end_of_turn_ids()
    # <|eom_id|> closes Llama's built-in (ipython) tool calls only, which no record here uses.
    assert tok.convert_ids_to_tokens(sorted(ends)) == [end]
    assert not ends & set(tok.convert_tokens_to_ids(["<think>", "</think>"]))


# -- template date -----------------------------------------------------------------------------

def _clock(day: dt.datetime) -> type:
    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return day

    return Clock


@pytest.fixture(scope="module")
def dated_tokenizer():
    """The Llama-3.2 tokenizer with a template that writes today's date (`strftime_now`)."""
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir(FAMILIES["llama3.1"])))
    tok.chat_template = LLAMA32_DATE_TEMPLATE
    return tok


DAYS = (dt.datetime(2026, 12, 2, 9), dt.datetime(2027, 3, 15, 23))
DATED = [{"role": "user", "content": "What day is it?"},
         {"role": "assistant", "content": "Look at the system prompt."}]


def _on(day: dt.datetime, monkeypatch, make) -> tuple[list[int], str]:
    with monkeypatch.context() as patch:
        patch.setattr(dt, "datetime", _clock(day))
        enc = make()
        return enc.encode(DATED).input_ids, enc.render(DATED)


def test_template_date_pins_strftime_now(dated_tokenizer, monkeypatch):
    """The tokenize stage run on two days gives the same tokens when the date is pinned, and
    follows the clock when it is None (`template_date` given alone, as inference may)."""
    def encoder_on(date):
        return lambda: ChatEncoder(dated_tokenizer, template_date=date)

    pinned = [_on(day, monkeypatch, encoder_on("2026-01-01")) for day in DAYS]
    assert pinned[0] == pinned[1]
    assert "Today Date: 01 Jan 2026\n" in pinned[0][1]
    clock = [_on(day, monkeypatch, encoder_on(None)) for day in DAYS]
    assert clock[0][0] != clock[1][0]
    assert "Today Date: 02 Dec 2026\n" in clock[0][1]
    assert "Today Date: 15 Mar 2027\n" in clock[1][1]


def test_saved_template_date_is_used_at_inference(dated_tokenizer, monkeypatch):
    tok = dated_tokenizer
    saved = dict(tok.init_kwargs)
    chatsft.template_kwargs.stamp(tok, {}, "2025-07-04")
    try:
        runs = [_on(day, monkeypatch, lambda: ChatEncoder(tok)) for day in DAYS]
    finally:
        tok.init_kwargs.clear()
        tok.init_kwargs.update(saved)
    assert runs[0] == runs[1]
    assert "Today Date: 04 Jul 2025\n" in runs[0][1]
