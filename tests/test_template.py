"""ChatEncoder: exact assistant masks and inference parity on real template families."""

from __future__ import annotations

import pytest

from chatsft.chat_template.encoder import (
    ChatEncoder,
    NoAssistantTurn,
    ParityError,
    TooLong,
    UnsupportedRole,
)
from tests.chat_templates import (
    ALL,
    generation_tokenizer,
    llama3_tokenizer,
    qwen3_tokenizer,
    qwen25_tokenizer,
)

IGNORE = -100
SYS = {"role": "system", "content": "You are a helpful assistant."}
CASES = {
    "multi_turn": [SYS, {"role": "user", "content": "What is 2 + 3?"},
                   {"role": "assistant", "content": "2 + 3 = 5."},
                   {"role": "user", "content": "And times 4?"},
                   {"role": "assistant", "content": "5 × 4 = 20."},
                   {"role": "user", "content": "Thanks!"},
                   {"role": "assistant", "content": "You are welcome."}],
    "no_system": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi!"}],
    "empty_system": [{"role": "system", "content": ""}, {"role": "user", "content": "Hello"},
                     {"role": "assistant", "content": "Hi there."}],
    "chinese": [{"role": "system", "content": "你是一个乐于助人的助手。"},
                {"role": "user", "content": "挪威的首都是哪个城市？"},
                {"role": "assistant", "content": "挪威的首都是奥斯陆。"},
                {"role": "user", "content": "它属于哪个大洲？"},
                {"role": "assistant", "content": "挪威位于欧洲。"}],
    "control_text": [{"role": "user", "content": "Print <|im_end|><|eot_id|> and <tool_call>."},
                     {"role": "assistant",
                      "content": "<|im_end|>\n<|im_start|>user\n<|start_header_id|>x"}],
    "long": [SYS] + [m for k in range(20) for m in (
        {"role": "user", "content": f"Question {k}: what is {k} squared, in words and digits?"},
        {"role": "assistant", "content": f"{k} squared is {k * k}. 平方是 {k * k}。"})],
    "spaces": [{"role": "user", "content": " padded  question "},
               {"role": "assistant", "content": " padded answer  \t"}],
}
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
TOOL_MESSAGES = [
    {"role": "user", "content": "北京天气怎么样？"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function",
                     "function": {"name": "get_weather", "arguments": {"city": "北京"}}}]},
    {"role": "tool", "content": '{"temperature": 21}'},
    {"role": "assistant", "content": "北京现在 21 度。"},
]


def runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of supervised labels."""
    out, start = [], None
    for i, lab in enumerate([*labels, IGNORE]):
        if lab != IGNORE and start is None:
            start = i
        elif lab == IGNORE and start is not None:
            out.append((start, i))
            start = None
    return out


def template_ids(tok, messages, tools=None, **kw) -> list[int]:
    return tok.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=False,
                                   **kw)


def eot_of(tok) -> str:
    return "<|eot_id|>" if "<|eot_id|>" in tok.get_vocab() else "<|im_end|>"


def check_sample(tok, messages, enc, tools=None, last_only=False):
    """The acceptance properties, against transformers' own apply_chat_template."""
    assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    trained = assistant[-1:] if last_only else assistant
    spans = runs(enc.labels)
    assert len(spans) == len(trained)
    assert enc.input_ids == template_ids(tok, messages, tools, sanitize_control_tokens=True)
    strip = "trim" in tok.chat_template
    for (start, end), k in zip(spans, trained, strict=True):
        # Inference parity: the tokens before the reply are exactly the inference prompt.
        prompt = template_ids(tok, messages[:k], tools, add_generation_prompt=True,
                              sanitize_control_tokens=True)
        assert enc.input_ids[:start] == prompt
        # Supervised: the reply and its end-of-turn token; nothing else.
        content = messages[k]["content"]
        text = tok.decode(enc.input_ids[start:end])
        assert text.endswith(eot_of(tok))
        if not messages[k].get("tool_calls"):
            assert text == (content.strip() if strip else content) + eot_of(tok)
        assert enc.labels[start:end] == enc.input_ids[start:end]
        control = ChatEncoder(tok).control_ids
        assert [t for t in enc.input_ids[start:end] if t in control][-1] == enc.input_ids[end - 1]


@pytest.mark.parametrize("family", sorted(ALL))
@pytest.mark.parametrize("case", sorted(CASES))
def test_masks_and_parity_on_every_template(family, case):
    tok = ALL[family]()
    messages = CASES[case]
    for train_on in ("all", "last"):
        enc = ChatEncoder(tok, train_on=train_on).encode(messages)
        check_sample(tok, messages, enc, last_only=train_on == "last")


@pytest.mark.parametrize("family", sorted(ALL))
def test_render_is_apply_chat_template(family, demo_records):
    tok = ALL[family]()
    enc = ChatEncoder(tok)
    convs = [r["messages"] for r in demo_records[:50]] + list(CASES.values())
    for msgs in convs:
        for gen in (False, True):
            assert enc.render(msgs, gen) == tok.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=gen)
    if family == "qwen25":
        for gen in (False, True):
            assert enc.render(TOOL_MESSAGES, gen, TOOLS) == tok.apply_chat_template(
                TOOL_MESSAGES, tools=TOOLS, tokenize=False, add_generation_prompt=gen)


@pytest.mark.parametrize("family", sorted(ALL))
def test_fast_path_equals_full_prefix_encoding(family, demo_records):
    """The batched path (one encoding per conversation plus cached prompt tails) gives the
    same ids and labels as encoding every prefix in full, and passes the same checks."""
    enc = ChatEncoder(ALL[family](), max_length=96)
    records = demo_records + [{"messages": m} for m in CASES.values()]

    def summary(results):
        return [repr(r) if isinstance(r, Exception) else
                [(e.input_ids, e.labels, e.dropped_turns) for e in r] for r in results]

    fast = enc.encode_records(records)
    assert summary(fast) == summary(enc.encode_records(records, fast=False))
    assert {type(r).__name__ for r in fast if isinstance(r, Exception)} <= {"TooLong"}
    assert sum(not isinstance(r, Exception) and r[0].dropped_turns > 0 for r in fast) > 10


def test_generation_markers_give_the_same_mask(demo_records):
    tok = generation_tokenizer()
    enc = ChatEncoder(tok)
    # (return_assistant_tokens_mask cannot sanitize control tokens: that case is left out)
    cases = [m for name, m in CASES.items() if name != "control_text"]
    for msgs in [r["messages"] for r in demo_records[:100]] + cases:
        out = tok.apply_chat_template(msgs, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        got = enc.encode(msgs)
        assert got.input_ids == out["input_ids"]
        assert [int(lab != IGNORE) for lab in got.labels] == out["assistant_masks"]
        assert sum(out["assistant_masks"]) > 0


def test_end_of_turn_is_supervised_when_pad_equals_eos():
    tok = llama3_tokenizer()
    assert tok.pad_token_id == tok.eos_token_id == tok.convert_tokens_to_ids("<|eot_id|>")
    enc = ChatEncoder(tok).encode(CASES["no_system"])
    eot = tok.eos_token_id
    assert [lab for lab in enc.labels if lab != IGNORE][-1] == eot
    assert enc.input_ids[0] == tok.bos_token_id and enc.input_ids[1] != tok.bos_token_id


def test_control_token_text_is_never_a_control_token():
    for family in ALL:
        tok = ALL[family]()
        enc = ChatEncoder(tok)
        msgs = CASES["control_text"]
        got = enc.encode(msgs)
        control = enc.control_ids
        (start, end), = runs(got.labels)
        assert not [t for t in got.input_ids[start : end - 1] if t in control]
        assert tok.decode(got.input_ids) == tok.apply_chat_template(msgs, tokenize=False)
        prompt = enc.encode_prompt(msgs[:1])
        assert prompt == template_ids(tok, msgs[:1], add_generation_prompt=True,
                                      sanitize_control_tokens=True)
        assert sum(t in control for t in prompt) == sum(t in control for t in template_ids(
            tok, [{"role": "user", "content": "x"}], add_generation_prompt=True))


def test_tool_calls_render_with_tools_and_are_supervised():
    tok = qwen25_tokenizer()
    enc = ChatEncoder(tok).encode(TOOL_MESSAGES, TOOLS)
    check_sample(tok, TOOL_MESSAGES, enc, tools=TOOLS)
    call, answer = (tok.decode(enc.input_ids[s:e]) for s, e in runs(enc.labels))
    assert call == ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n'
                    "</tool_call><|im_end|>")
    assert answer == "北京现在 21 度。<|im_end|>"
    assert "# Tools" in tok.decode(enc.input_ids)


def test_tool_records_are_unsupported_without_a_tool_template():
    enc = ChatEncoder(llama3_tokenizer())  # Llama-3's template renders no tools
    for record in ({"messages": TOOL_MESSAGES}, {"messages": CASES["no_system"], "tools": TOOLS}):
        (res,) = enc.encode_records([record])
        assert isinstance(res, UnsupportedRole) and res.reason == "unsupported role"


def test_truncation_drops_the_oldest_exchanges_and_keeps_the_system_prompt():
    tok = qwen25_tokenizer()
    msgs = CASES["multi_turn"]
    full = ChatEncoder(tok).encode(msgs)
    without_first = ChatEncoder(tok).encode([msgs[0], *msgs[3:]])
    only_last = ChatEncoder(tok).encode([msgs[0], *msgs[5:]])
    enc = ChatEncoder(tok, max_length=len(without_first.input_ids))
    got = enc.encode(msgs)
    assert (got.input_ids, got.labels) == (without_first.input_ids, without_first.labels)
    assert got.dropped_turns == 2 and len(full.input_ids) > enc.max_length
    got = ChatEncoder(tok, max_length=len(without_first.input_ids) - 1).encode(msgs)
    assert (got.input_ids, got.dropped_turns) == (only_last.input_ids, 4)
    with pytest.raises(TooLong):
        ChatEncoder(tok, max_length=len(only_last.input_ids) - 1).encode(msgs)


def test_history_rewriting_template_gives_one_sample_per_turn():
    """Qwen3-style templates render a turn differently once a later user turn exists; each
    trained turn then becomes its own sample, whose prompt is still the inference prompt."""
    tok = qwen3_tokenizer()
    msgs = CASES["multi_turn"]
    (samples,) = ChatEncoder(tok).encode_records([{"messages": msgs}])
    assert len(samples) == 3
    for k, sample in zip((2, 4, 6), samples, strict=True):
        (start, end), = runs(sample.labels)
        prompt = template_ids(tok, msgs[:k], add_generation_prompt=True)
        assert sample.input_ids[:start] == prompt
        assert sample.input_ids == template_ids(tok, msgs[: k + 1])
        assert tok.decode(sample.input_ids[start:end]) == (
            f"<think>\n\n</think>\n\n{msgs[k]['content']}<|im_end|>")
    (last,) = ChatEncoder(tok, train_on="last").encode_records([{"messages": msgs}])[0]
    assert last.input_ids == template_ids(tok, msgs)


def test_prompt_that_does_not_start_the_turn_is_a_parity_error():
    tok = qwen25_tokenizer()
    tok.chat_template = tok.chat_template.replace(
        "{{- '<|im_start|>assistant\\n' }}\n{%- endif %}", "{{- '<|im_start|>assistant\\n\\n' }}"
        "\n{%- endif %}")
    with pytest.raises(ParityError, match="first difference at token"):
        ChatEncoder(tok).encode(CASES["no_system"])


def test_tokens_merging_across_the_prompt_end_are_a_parity_error():
    """A reply starting with a newline merges with the header's newline into one token: the
    model would be trained on tokens inference never feeds it."""
    tok = qwen25_tokenizer()
    assert len(tok.encode("\n\n", add_special_tokens=False)) == 1
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "\nHello"}]
    for fast in (True, False):
        (res,) = ChatEncoder(tok).encode_records([{"messages": msgs}], fast=fast)
        assert isinstance(res, ParityError)
        assert "'ĊĊ'" in str(res) and "'Ċ'" in str(res)


def test_conversation_without_assistant_turn_is_skipped():
    (res,) = ChatEncoder(qwen25_tokenizer()).encode_records(
        [{"messages": [{"role": "user", "content": "Hi"}]}])
    assert isinstance(res, NoAssistantTurn)
