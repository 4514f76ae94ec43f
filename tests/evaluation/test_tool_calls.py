"""Tool-call scoring: the test turns, parsing replies, and the two accuracies in evaluate."""

from __future__ import annotations

import pytest
from datasets import DatasetDict

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.evaluation.run import evaluate_model, worst_table
from chatsft.evaluation.tool_calls import judge, parse_calls, score_tool_calls, tool_turns
from chatsft.inference.generation import fit_prompt, load_for_inference
from chatsft.model.load import load_tokenizer
from chatsft.params import EvaluateParams, GenerationParams

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]
WEATHER = {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}


def call_message(*calls: dict) -> dict:
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": c} for c in calls]}


RECORD = {"tools": TOOLS, "messages": [
    {"role": "user", "content": "Weather in Paris for 2 days?"}, call_message(WEATHER),
    {"role": "tool", "content": '{"temperature": 18}'},
    {"role": "assistant", "content": "It is 18°C in Paris."},
    {"role": "user", "content": "And Rome, tomorrow?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function", "function": {  # OpenAI style: arguments as a string
         "name": "get_weather", "arguments": '{"city": "Rome", "days": 1}'}}]},
    {"role": "tool", "content": '{"temperature": 20}'},
    {"role": "assistant", "content": "It is 20°C in Rome."}]}


def block(name: str, args: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {args}}}\n</tool_call>'


def test_every_calling_turn_is_a_test_turn_with_its_prompt_and_tools():
    plain = {"messages": [{"role": "user", "content": "Hi"},
                          {"role": "assistant", "content": "Hello"}]}
    turns = tool_turns([plain, RECORD])
    assert [(t.record, len(t.prompt), t.tools) for t in turns] == [(1, 1, TOOLS),
                                                                  (1, 5, TOOLS)]
    assert turns[0].calls == [WEATHER]
    assert turns[1].calls == [{"name": "get_weather", "arguments": {"city": "Rome", "days": 1}}]


@pytest.mark.parametrize(("reply", "name_ok", "args_ok"), [
    (block("get_weather", '{"city": "Paris", "days": 2}'), True, True),
    (block("get_weather", '{"days": 2.0, "city": "Paris"}'), True, True),  # order, 2 == 2.0
    ("Sure.\n" + block("get_weather", '{"days":2,"city":"Paris"}'), True, True),
    (block("get_weather", '{"city": "Paris", "days": "2"}'), True, False),  # a string
    (block("get_weather", '{"city": "Paris"}'), True, False),
    (block("get_time", '{"city": "Paris", "days": 2}'), False, False),
    (block("get_weather", '{"city": "Paris", "days": 2'), False, False),  # not JSON
    (block("get_weather", '{"city": "Paris", "days": 2}') * 2, False, False),  # two calls
    ("It is sunny in Paris.", False, False),
    ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}', False,
     False),  # not closed
])
def test_judge(reply, name_ok, args_ok):
    assert judge(reply, [WEATHER]) == (name_ok, args_ok)


def test_parse_calls_keeps_order_and_marks_bad_blocks():
    text = block("a", "{}") + "\n" + block("b", '{"x": [1]}') + "<tool_call>[1]</tool_call>"
    assert parse_calls(text) == [{"name": "a", "arguments": {}},
                                 {"name": "b", "arguments": {"x": [1]}}, None]


def test_scores_are_fractions_over_the_calling_turns():
    refs = [[WEATHER]] * 4
    preds = [block("get_weather", '{"city": "Paris", "days": 2}'),
             block("get_weather", '{"city": "Rome", "days": 2}'), "no call", ""]
    assert score_tool_calls(preds, refs) == {"tool_call_turns": 4,
                                             "tool_call_name_accuracy": 0.5,
                                             "tool_call_arguments_exact": 0.25}
    assert score_tool_calls([], []) == {}


def test_prompts_carry_the_record_tools(chatml_tokenizer):
    enc = ChatEncoder(chatml_tokenizer)
    ids, dropped = fit_prompt(enc, RECORD["messages"][:5], None, TOOLS)
    text = chatml_tokenizer.decode(ids)
    assert dropped == 0 and '"name": "get_weather"' in text and "<tools>" in text
    assert ids == chatml_tokenizer.apply_chat_template(
        RECORD["messages"][:5], tools=TOOLS, add_generation_prompt=True, return_dict=False)


def test_evaluate_scores_tool_calls_beside_the_text_metrics(two_word_model):
    path, answer = two_word_model
    model, tok = load_for_inference(str(path)), load_tokenizer(path)
    plain = {"messages": [{"role": "user", "content": "Q?"},
                          {"role": "assistant", "content": answer.strip()}]}
    params = EvaluateParams(generation=GenerationParams(max_new_tokens=8), compare_base=False)
    # A tools prompt longer than the context window (512) is left out and counted, once for
    # its final reply and once for its call, instead of stopping the evaluation.
    huge = {"tools": [{"type": "function", "function": {"name": "f", "description": "x " * 600}}],
            "messages": RECORD["messages"][:4]}
    metrics, rows = evaluate_model(model, tok, DatasetDict(), [plain, RECORD, huge], params)
    test = metrics["test"]
    assert test["samples"] == 2 and test["tool_call_turns"] == 2
    assert test["prompts_too_long"] == 2
    # The model only ever says its two words: never a call.
    assert test["tool_call_name_accuracy"] == test["tool_call_arguments_exact"] == 0.0
    text_rows, call_rows = rows[:2], rows[2:]
    assert [r["reference"] for r in text_rows] == [answer.strip(), "It is 20°C in Rome."]
    assert [(r["index"], len(r["prompt"])) for r in call_rows] == [(1, 1), (1, 5)]
    assert call_rows[0]["reference_tool_calls"] == [WEATHER]
    assert all(r["prediction"] == answer.strip() and r["tool_call_name_ok"] is False
               for r in call_rows)
    assert "Rome" in worst_table(rows)  # the table lists text replies only
    metrics, rows = evaluate_model(model, tok, DatasetDict(), [plain], params)
    assert "tool_call_turns" not in metrics["test"] and len(rows) == 1


def test_llama_style_bare_json_calls_are_scored():
    """Llama-3.x templates write a call as the whole reply, arguments under "parameters"."""
    reply = '{"name": "get_weather", "parameters": {"city": "Paris"}}'
    assert parse_calls(reply) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert judge(reply, [{"name": "get_weather", "arguments": {"city": "Paris"}}]) == (True, True)
    assert judge(reply, [{"name": "get_weather", "arguments": {"city": "Rome"}}]) == (True, False)
    assert parse_calls("Paris is the capital.") == []
