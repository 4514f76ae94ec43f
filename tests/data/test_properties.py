"""Property-based tests: valid conversations survive unchanged; any record is kept or
quarantined, never lost and never a crash."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatsft.data.clean import clean_records, quarantine_lines, write_clean
from chatsft.data.validate import BLANK, ContentRules
from chatsft.params import DataParams

RULES = ContentRules()
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# Any text a valid message may hold: every code point but controls (tab and newline are
# fine) and surrogates, not blank, no special-token strings.
letters = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\t\n <|>[]")
content = st.text(letters, min_size=1, max_size=40).filter(
    lambda t: not BLANK.fullmatch(t) and not RULES.suspect.search(t))
call = st.builds(lambda name, args: {"type": "function",
                                     "function": {"name": name, "arguments": args}},
                 st.sampled_from(["add", "search"]),
                 st.dictionaries(st.text(max_size=5),
                                 st.integers() | st.text("abc xyz", max_size=5), max_size=3))


@st.composite
def conversations(draw) -> dict:
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(content)})
    tools = draw(st.booleans())
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(content)})
        if tools:
            for _ in range(draw(st.integers(0, 2))):
                calls = draw(st.lists(call, min_size=1, max_size=2))
                messages.append({"role": "assistant", "content": "", "tool_calls": calls})
                messages += [{"role": "tool", "content": draw(content)}
                             for _ in range(draw(st.integers(1, 2)))]
        messages.append({"role": "assistant", "content": draw(content)})
    record = {"messages": messages}
    if tools:
        record["tools"] = [{"type": "function", "function": {"name": n, "parameters": {}}}
                           for n in ("add", "search")]
    return record


def _clean_file(lines: list[bytes], source: dict | None = None, **params) -> tuple:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw.jsonl"
        path.write_bytes(b"\n".join(lines) + b"\n")
        raw = [{"path": str(path), **(source or {})}]
        result = clean_records(DataParams(raw=raw, **params), strict=False)
        write_clean(result, Path(tmp) / "out")  # writing never fails either
        return result, result.report()


@SETTINGS
@given(conversations(), st.sampled_from(["auto", "chatml"]))
def test_any_valid_conversation_survives_cleaning_unchanged(record, fmt):
    from chatsft.params import Source

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw.jsonl"
        path.write_text(json.dumps(record) + "\n")
        params = DataParams(raw=[Source(path=str(path), format=fmt)], validation_fraction=0,
                            test_fraction=0)
        result = clean_records(params)
    assert result.records("train") == [record]


json_leaf = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
             | st.text(st.characters(), max_size=8)
             | st.sampled_from(["user", "assistant", "system", "tool", "human", "gpt",
                                "function_call", "observation", "", " ", "<|im_end|>",
                                "\ud800", "a\x00b"]))
keys = st.sampled_from(["messages", "conversations", "role", "content", "from", "value",
                        "instruction", "input", "output", "history", "system", "tools",
                        "tool_calls", "name", "arguments", "type", "function", "text", "x"])
json_values = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner,
                                                                            max_size=5),
    max_leaves=25)
raw_lines = (json_values.map(lambda v: json.dumps(v).encode())
             | conversations().map(lambda v: json.dumps(v).encode())
             | st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b))


@SETTINGS
@given(st.lists(raw_lines, min_size=1, max_size=12), st.sampled_from(["keep", "reject"]),
       st.none() | st.integers(1, 12), st.sampled_from([1.0, 0.3, 0.5, 1.5, 2.0, 2.5]))
def test_any_record_is_kept_or_quarantined_never_lost_never_a_crash(lines, tool_calls,
                                                                   max_samples, weight):
    first = json.dumps({"messages": [{"role": "user", "content": "first"},
                                     {"role": "assistant", "content": "line"}]}).encode()
    result, report = _clean_file([first, *lines], {"max_samples": max_samples, "weight": weight},
                                 tool_calls=tool_calls, validation_fraction=0.3,
                                 test_fraction=0.3)
    read = 1 + sum(1 for x in lines if x.strip())
    assert report["read"] == read == report["kept"] + report["quarantined"] + report["unsampled"]
    (source,) = report["by_source"].values()
    assert source["read"] == source["kept"] + source["quarantined"] + source["unsampled"]
    assert len(result.quarantine) == report["quarantined"]
    # Kept records are the distinct lines written (train may repeat them, by the weight).
    lines_out = [x for split in result.splits.values() for x in split]
    assert len(set(lines_out)) == report["kept"]
    assert len(lines_out) == sum(source["written"].values()) == sum(report["splits"].values())
    if max_samples is not None:
        assert report["kept"] <= max_samples
    for entry in result.quarantine:
        assert entry["reason"] and isinstance(entry["detail"], str)
    for entry, out in zip(result.quarantine, quarantine_lines(result.quarantine), strict=True):
        back = json.loads(out)
        assert back == json.loads(json.dumps(entry))  # verbatim, surrogates included
