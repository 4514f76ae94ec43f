"""Replies in the template's tool-call format become OpenAI tool calls; the rest stays text."""

from __future__ import annotations

import json

import pytest

from chatsft.serve.tools import BadRequest, split_reply, template_messages


def test_tool_call_blocks_become_calls_and_reasoning_is_split_off():
    text = ('<think>\nThe user wants weather.\n</think>\n\nLet me check.\n<tool_call>\n'
            '{"name": "get_weather", "arguments": {"city": "北京"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "get_time", "arguments": "{\\"tz\\": \\"UTC\\"}"}\n'
            '</tool_call>')
    reasoning, content, calls = split_reply(text, parse_calls=True)
    assert reasoning == "The user wants weather." and content == "Let me check."
    assert [c["function"]["name"] for c in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "北京"}
    assert json.loads(calls[1]["function"]["arguments"]) == {"tz": "UTC"}
    assert len({c["id"] for c in calls}) == 2


def test_malformed_blocks_and_templates_without_tools_keep_the_text():
    broken = '<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>'
    assert split_reply(broken, parse_calls=True) == (None, broken, [])
    nameless = '<tool_call>{"arguments": {}}</tool_call>'
    assert split_reply(nameless, parse_calls=True) == (None, nameless, [])
    call = '<tool_call>{"name": "f", "arguments": {}}</tool_call>'
    assert split_reply(call, parse_calls=False) == (None, call, [])


def test_history_tool_calls_take_the_training_data_form():
    [msg] = template_messages([{"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "f", "arguments": '{"x": 1}'}}]}])
    assert msg["content"] == ""
    assert msg["tool_calls"] == [{"type": "function", "id": "call_1",
                                  "function": {"name": "f", "arguments": {"x": 1}}}]
    with pytest.raises(BadRequest, match="arguments"):
        template_messages([{"role": "assistant", "tool_calls": [
            {"function": {"name": "f", "arguments": "not json"}}]}])
