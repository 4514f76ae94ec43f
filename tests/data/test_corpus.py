"""A corpus of malformed records, each next to a valid one: every malformed record is
quarantined with its expected reason, verbatim, and every valid record is kept unchanged."""

from __future__ import annotations

import json

from tests.data.conftest import chat, line

FN = {"name": "get_weather", "description": "Weather of a city",
      "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
TOOLS = json.dumps([FN])
CALL = json.dumps({"name": "get_weather", "arguments": {"city": "Paris"}})


def sharegpt(*turns: tuple[str, str], **extra: object) -> dict:
    return {"conversations": [{"from": f, "value": v} for f, v in turns], **extra}


# (kind, raw record or raw line bytes, expected reason). max_chars=2000, max_turns=8 and
# control_chars=reject below.
MALFORMED: list[tuple[str, object, str]] = [
    ("truncated line", b'{"messages": [{"role": "user"', "not JSON"),
    ("trailing garbage", b'{"messages": []} extra', "not JSON"),
    ("NaN literal", b'{"instruction": "x", "output": NaN}', "not JSON"),
    ("single quotes", b"{'messages': []}", "not JSON"),
    ("invalid UTF-8 bytes", b'{"instruction": "caf\xe9", "output": "ok"}', "invalid UTF-8"),
    ("top-level array", [chat("a", "b")], "not an object"),
    ("top-level string", "hello", "not an object"),
    ("top-level null", None, "not an object"),
    ("unknown format", {"text": "just text"}, "unknown format"),
    ("messages is a string", {"messages": "hi"}, "wrong type"),
    ("messages is null", {"messages": None}, "missing field"),
    ("message is a string", {"messages": ["hi", "there"]}, "wrong type"),
    ("message without role", {"messages": [{"content": "hi"}]}, "missing field"),
    ("role is a number", {"messages": [{"role": 1, "content": "hi"}]}, "wrong type"),
    ("message without content", {"messages": [{"role": "user"}]}, "missing field"),
    ("content is a number", {"messages": [{"role": "user", "content": 42}]}, "wrong type"),
    ("image content part", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x.png"}}]}]}, "unsupported content"),
    ("unknown role", {"messages": [{"role": "narrator", "content": "Once"},
                                   {"role": "assistant", "content": "upon"}]}, "unknown role"),
    ("legacy function role", {"messages": [{"role": "user", "content": "q"},
                                           {"role": "function", "content": "{}"},
                                           {"role": "assistant", "content": "a"}]},
     "unsupported role"),
    ("sharegpt unknown from", sharegpt(("human", "hi"), ("bot", "hello")), "unknown role"),
    ("sharegpt turn without value", {"conversations": [{"from": "human"}]}, "missing field"),
    ("sharegpt conversations not a list", {"conversations": {"from": "human"}}, "wrong type"),
    ("alpaca without output", {"instruction": "Say hi", "input": ""}, "missing field"),
    ("alpaca instruction is a number", {"instruction": 7, "output": "seven"}, "wrong type"),
    ("alpaca history not pairs", {"instruction": "q", "output": "a", "history": [["only"]]},
     "wrong type"),
    ("no messages", {"messages": []}, "empty conversation"),
    ("system not first", {"messages": [{"role": "user", "content": "q"},
                                       {"role": "system", "content": "s"},
                                       {"role": "assistant", "content": "a"}]},
     "system not first"),
    ("two user turns", {"messages": [{"role": "user", "content": "q1"},
                                     {"role": "user", "content": "q2"},
                                     {"role": "assistant", "content": "a"}]},
     "roles not alternating"),
    ("starts with assistant", {"messages": [{"role": "assistant", "content": "a"},
                                            {"role": "user", "content": "q"},
                                            {"role": "assistant", "content": "b"}]},
     "roles not alternating"),
    ("ends with user", chat("q1", "a1", "q2"), "does not end with assistant"),
    ("no assistant turn", chat("only a question", system="sys"), "no assistant turn"),
    ("empty content", chat("", "answer"), "empty content"),
    ("whitespace-only content", chat("question", " \n\t "), "empty content"),
    ("zero-width-only content", chat("question", "\u200b\u200b"), "empty content"),
    ("lone surrogate", b'{"messages": [{"role": "user", "content": "bad \\ud800 half"}, '
                       b'{"role": "assistant", "content": "ok"}]}', "lone surrogate"),
    ("control character", chat("bell\x07 here", "ok"), "control characters"),
    ("ChatML special token", chat("say <|im_start|>system", "no"), "special token in content"),
    ("Llama-3 special token", chat("q", "done<|eot_id|>"), "special token in content"),
    ("Llama-2 [INST] marker", chat("[INST] hi [/INST]", "hello"), "special token in content"),
    ("DeepSeek special token", chat("x<｜end▁of▁sentence｜>", "y"), "special token in content"),
    ("too many characters", chat("q" * 1500, "a" * 600), "too long"),
    ("too many turns", chat(*[f"t{i}" for i in range(10)]), "too many turns"),
    ("observation without call", sharegpt(("human", "q"), ("gpt", "a"),
                                          ("observation", "{}"), ("gpt", "b"), tools=TOOLS),
     "tool result without call"),
    ("call without result", sharegpt(("human", "weather?"), ("function_call", CALL),
                                     ("gpt", "sunny"), tools=TOOLS),
     "tool call without result"),
    ("call is not JSON", sharegpt(("human", "q"), ("function_call", "get_weather(Paris)"),
                                  ("observation", "{}"), ("gpt", "a"), tools=TOOLS),
     "bad tool call"),
    ("call arguments not an object", sharegpt(
        ("human", "q"), ("function_call", json.dumps({"name": "get_weather", "arguments": 3})),
        ("observation", "{}"), ("gpt", "a"), tools=TOOLS), "bad tool call"),
    ("tool_calls on a user message", {"messages": [
        {"role": "user", "content": "q", "tool_calls": [{"name": "f", "arguments": {}}]},
        {"role": "assistant", "content": "a"}]}, "bad tool call"),
    ("tools not JSON", sharegpt(("human", "q"), ("gpt", "a"), tools="[{broken"), "bad tools"),
    ("tool without a name", sharegpt(("human", "q"), ("gpt", "a"),
                                     tools=json.dumps([{"description": "x"}])), "bad tools"),
    ("call to an undeclared tool", sharegpt(
        ("human", "q"), ("function_call", json.dumps({"name": "rm_rf", "arguments": {}})),
        ("observation", "{}"), ("gpt", "a"), tools=TOOLS), "undeclared tool"),
]

# Valid records of every format: (raw record, expected clean record).
VALID: list[tuple[object, dict]] = [
    (chat("What is 2 + 2?", "4."), chat("What is 2 + 2?", "4.")),
    (chat("Bonjour", "Salut", "Ça va ?", "Oui.", system="Réponds en français."),
     chat("Bonjour", "Salut", "Ça va ?", "Oui.", system="Réponds en français.")),
    (chat("你好", "你好！有什么可以帮你？"), chat("你好", "你好！有什么可以帮你？")),
    (chat("tabs\tand\nnewlines stay", "yes\n\tindeed"),
     chat("tabs\tand\nnewlines stay", "yes\n\tindeed")),
    (chat("Write {{name}} and <b>html</b> and a <s> tag", "Sure: <|not a token"),
     chat("Write {{name}} and <b>html</b> and a <s> tag", "Sure: <|not a token")),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "Hello "}, "there"]},
                   {"role": "assistant", "content": "Hi!"}]}, chat("Hello there", "Hi!")),
    (sharegpt(("human", "Capital of Peru?"), ("gpt", "Lima."), system="Be brief."),
     chat("Capital of Peru?", "Lima.", system="Be brief.")),
    ({"instruction": "Translate", "input": "cat", "output": "chat", "system": ""},
     chat("Translate\ncat", "chat")),
    ({"instruction": "And 3 + 3?", "input": "", "output": "6",
      "history": [["1 + 1?", "2"]], "system": "Math tutor"},
     chat("1 + 1?", "2", "And 3 + 3?", "6", system="Math tutor")),
    (sharegpt(("human", "Weather in Paris?"), ("function_call", CALL),
              ("observation", '{"temp": 21}'), ("gpt", "21 °C."), tools=TOOLS),
     {"messages": [
         {"role": "user", "content": "Weather in Paris?"},
         {"role": "assistant", "content": "", "tool_calls": [
             {"type": "function", "function": {"name": "get_weather",
                                               "arguments": {"city": "Paris"}}}]},
         {"role": "tool", "content": '{"temp": 21}'},
         {"role": "assistant", "content": "21 °C."}],
      "tools": [{"type": "function", "function": FN}]}),
]


def test_every_malformed_kind_is_quarantined_with_its_reason_and_valid_records_kept(clean):
    assert len({kind for kind, _, _ in MALFORMED}) >= 30
    items, expected, valid_lines = [line(VALID[0][0])], {}, [1]
    for n, (kind, raw, reason) in enumerate(MALFORMED):
        items.append(raw if isinstance(raw, bytes) else line(raw))
        expected[f"line {len(items)}"] = (kind, reason)
        good = VALID[(n + 1) % len(VALID)][0]
        if n >= len(VALID) - 1:  # later copies must differ, or they are duplicates
            good = chat(f"Question number {n}?", f"Answer number {n}.")
        items.append(line(good))
        valid_lines.append(len(items))
    result = clean(items, max_chars=2000, max_turns=8, control_chars="reject")

    got = {q["where"]: q for q in result.quarantine}
    for where, (kind, reason) in expected.items():
        assert where in got, f"{kind} ({where}) was kept"
        assert got[where]["reason"] == reason, f"{kind}: {got[where]}"
        assert got[where]["detail"] or reason in ("not an object",)
    assert set(got) == set(expected)
    report = result.report()
    assert report["read"] == len(items) and report["kept"] == len(valid_lines)
    assert report["kept"] + report["quarantined"] == report["read"]
    kept = result.records("train")
    expected_kept = [v[1] for v in VALID] + [
        chat(f"Question number {n}?", f"Answer number {n}.")
        for n in range(len(VALID) - 1, len(MALFORMED))]
    assert kept == expected_kept


def test_quarantine_holds_each_rejected_record_verbatim(clean, tmp_path):
    from chatsft.data.clean import write_clean

    raws = [raw for _, raw, _ in MALFORMED]
    items = [line(VALID[0][0])] + [r if isinstance(r, bytes) else line(r) for r in raws]
    result = clean(items, max_chars=2000, max_turns=8, control_chars="reject")
    write_clean(result, tmp_path / "out")
    rows = [json.loads(x) for x in (tmp_path / "out" / "quarantine.jsonl").read_text(
        encoding="utf-8").splitlines()]
    assert len(rows) == len(MALFORMED)
    for row, raw in zip(rows, raws, strict=True):
        assert row["source"] == str(tmp_path / "raw.jsonl")
        assert row["where"].startswith("line ")
        original = raw if isinstance(raw, bytes) else line(raw)
        assert row["text"].encode("utf-8", "surrogateescape") == original
