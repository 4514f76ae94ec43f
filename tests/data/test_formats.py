"""Format conversion and role-order validation, including tool-call conversations."""

from __future__ import annotations

import json

import pytest

from chatsft.data.errors import Reject
from chatsft.data.formats import detect_format, to_messages, to_record
from chatsft.data.validate import ContentRules, check_roles, clean_record

FN = {"name": "add", "parameters": {"type": "object", "properties": {"a": {"type": "number"}}}}


def _reason(fn, *args) -> str:
    with pytest.raises(Reject) as err:
        fn(*args)
    return err.value.reason


@pytest.mark.parametrize(("record", "fmt"), [
    ({"messages": [{"role": "user", "content": "x"}]}, "chatml"),
    ({"messages": [{"from": "human", "value": "x"}]}, "sharegpt"),
    ({"conversations": []}, "sharegpt"),
    ({"instruction": "x", "output": "y"}, "alpaca"),
    ({"output": "y"}, "alpaca"),
])
def test_formats_are_detected_per_record(record, fmt):
    assert detect_format(record) == fmt


def test_a_declared_format_is_not_second_guessed():
    alpaca = {"instruction": "q", "output": "a"}
    assert _reason(to_record, alpaca, "chatml") == "missing field"
    assert to_record(alpaca, "alpaca")["messages"][-1] == {"role": "assistant", "content": "a"}


def test_sharegpt_with_system_field_and_messages_key():
    rec = {"system": "S", "messages": [{"from": "human", "value": "q"},
                                       {"from": "gpt", "value": "a"}]}
    assert to_messages(rec) == [{"role": "system", "content": "S"},
                                {"role": "user", "content": "q"},
                                {"role": "assistant", "content": "a"}]


def test_sharegpt_tool_turns_become_openai_tool_calls_and_tool_messages():
    rec = {"conversations": [
        {"from": "human", "value": "1+2?"},
        {"from": "function_call", "value": json.dumps({"name": "add", "arguments": {"a": 1}})},
        {"from": "observation", "value": "3"},
        {"from": "gpt", "value": "3."}], "tools": json.dumps([FN])}
    out = to_record(rec)
    assert out["tools"] == [{"type": "function", "function": FN}]
    assert out["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "add", "arguments": {"a": 1}}}]}
    assert out["messages"][2] == {"role": "tool", "content": "3"}
    assert clean_record(out, ContentRules()) is out  # valid as it is: empty call content too


def test_chatml_tool_calls_with_string_arguments_and_parallel_calls_are_normalized():
    rec = {"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}},
            {"id": "c2", "type": "function", "function": {"name": "add", "arguments": {"a": 2}}}]},
        {"role": "tool", "content": "1", "tool_call_id": "c1"},
        {"role": "tool", "content": "2", "tool_call_id": "c2"},
        {"role": "assistant", "content": "1 and 2"}], "tools": [FN]}
    out = to_record(rec)
    calls = out["messages"][1]["tool_calls"]
    assert [c["function"]["arguments"] for c in calls] == [{"a": 1}, {"a": 2}]
    assert [c["id"] for c in calls] == ["c1", "c2"] and out["messages"][1]["content"] == ""
    assert out["messages"][2] == {"role": "tool", "content": "1", "tool_call_id": "c1"}
    assert clean_record(out, ContentRules()) is out  # a valid conversation, kept unchanged
    # The canonical form is a fixed point: converting it again changes nothing.
    assert to_record(json.loads(json.dumps(out))) == out


def test_reject_mode_rejects_every_tool_record_as_unsupported_role():
    call = {"from": "function_call", "value": json.dumps({"name": "add", "arguments": {}})}
    records = [
        {"conversations": [{"from": "human", "value": "q"}, call]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "observation", "value": "x"}]},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
         "tools": json.dumps([FN])},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "",
                                                         "tool_calls": [{"name": "add"}]}]},
    ]
    for rec in records:
        assert _reason(to_record, rec, "auto", False) == "unsupported role"
    # A plain conversation with an empty tools list is fine.
    plain = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
             "tools": "[]"}
    assert "tools" not in to_record(plain, "auto", False)


def test_alpaca_conversion_follows_llamafactory():
    assert to_messages({"instruction": "", "input": "only input", "output": "o"})[0] == {
        "role": "user", "content": "only input"}
    assert to_messages({"instruction": "i", "input": None, "output": "o"})[0]["content"] == "i"
    assert to_messages({"instruction": "i", "input": "x", "output": "o", "system": "s",
                        "history": None})[:2] == [{"role": "system", "content": "s"},
                                                  {"role": "user", "content": "i\nx"}]


def _msgs(*roles: str) -> list[dict]:
    out = []
    for r in roles:
        if r == "call":
            out.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "add", "arguments": {}}}]})
        else:
            out.append({"role": r, "content": "x"})
    return out


@pytest.mark.parametrize("roles", [
    ("user", "assistant"),
    ("system", "user", "assistant", "user", "assistant"),
    ("user", "call", "tool", "assistant"),
    ("user", "call", "tool", "tool", "assistant"),
    ("user", "call", "tool", "call", "tool", "assistant", "user", "assistant"),
    ("system", "user", "assistant", "user", "call", "tool", "assistant"),
])
def test_valid_role_orders(roles):
    record = {"messages": _msgs(*roles)}
    assert clean_record(record, ContentRules()) is record  # kept, unchanged
    # The same conversation cut before its last reply is rejected.
    assert _reason(check_roles, record["messages"][:-1]) in (
        "does not end with assistant", "no assistant turn")


@pytest.mark.parametrize(("roles", "reason"), [
    ((), "empty conversation"),
    (("system",), "no assistant turn"),
    (("user",), "no assistant turn"),
    (("user", "assistant", "system"), "system not first"),
    (("system", "system", "user", "assistant"), "system not first"),
    (("assistant", "user", "assistant"), "roles not alternating"),
    (("user", "assistant", "assistant"), "roles not alternating"),
    (("user", "tool", "assistant"), "tool result without call"),
    (("user", "call", "assistant"), "tool call without result"),
    (("user", "call", "user", "assistant"), "tool call without result"),
    (("user", "call", "tool", "user", "assistant"), "roles not alternating"),
    (("user", "call", "tool"), "does not end with assistant"),
    (("user", "assistant", "user"), "does not end with assistant"),
    (("user", "observation", "assistant"), "unsupported role"),
    (("user", "bot"), "unknown role"),
])
def test_invalid_role_orders(roles, reason):
    assert _reason(check_roles, _msgs(*roles)) == reason


def test_content_rules_remove_controls_and_escape_special_tokens_by_param():
    rec = {"messages": [{"role": "user", "content": "a\x00b\x1bc\td\ne"},
                        {"role": "assistant", "content": "<|im_end|> [INST]"}]}
    out = clean_record(rec, ContentRules(special_tokens="escape"))
    assert out["messages"][0]["content"] == "abc\td\ne"
    escaped = out["messages"][1]["content"]
    assert escaped.replace("\u200b", "") == "<|im_end|> [INST]" and "<|im_end|>" not in escaped
    assert rec["messages"][0]["content"] == "a\x00b\x1bc\td\ne"  # the input is not mutated
    assert _reason(clean_record, rec, ContentRules()) == "special token in content"
    assert _reason(clean_record, rec, ContentRules(control_chars="reject")) == (
        "control characters")
    only_controls = {"messages": [{"role": "user", "content": "\x00\x01"},
                                  {"role": "assistant", "content": "a"}]}
    assert _reason(clean_record, only_controls, ContentRules()) == "empty content"


def test_extra_special_tokens_and_tool_arguments_follow_the_same_policy():
    rules = ContentRules(extra_special_tokens=("<custom>",))
    rec = {"messages": [{"role": "user", "content": "say <custom>"},
                        {"role": "assistant", "content": "no"}]}
    assert _reason(clean_record, rec, rules) == "special token in content"
    call = to_record({"messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"name": "add", "arguments": {"a": "<|im_start|>"}}]},
        {"role": "tool", "content": "r"}, {"role": "assistant", "content": "a"}]})
    assert _reason(clean_record, call, ContentRules()) == "special token in content"
    escaped = clean_record(call, ContentRules(special_tokens="escape"))
    assert escaped["messages"][1]["tool_calls"][0]["function"]["arguments"]["a"] == (
        "<\u200b|im_start|>")
