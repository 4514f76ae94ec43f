"""The real public files in ../shared/data/real/ clean with no valid record lost."""

from __future__ import annotations

import json

import pytest

from chatsft.data.clean import clean_records
from chatsft.params import DataParams
from tests.conftest import REAL_DATA

ALPACA = ["alpaca_en_demo.json", "alpaca_zh_demo.json", "identity.json"]
GLAIVE = "glaive_toolcall_zh_demo.json"

pytestmark = pytest.mark.skipif(not REAL_DATA.is_dir(), reason="no ../shared/data/real")


def _load(name: str) -> list:
    return json.loads((REAL_DATA / name).read_text(encoding="utf-8"))


def _distinct(items: list) -> list:
    seen, out = set(), []
    for item in items:
        key = json.dumps(item, sort_keys=True, ensure_ascii=False)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _clean(names: list[str], **params):
    params = {"validation_fraction": 0, "test_fraction": 0, **params}
    return clean_records(DataParams(raw=[str(REAL_DATA / n) for n in names], **params))


@pytest.mark.parametrize("name", ALPACA)
def test_alpaca_files_keep_every_distinct_record(name):
    raw = _load(name)
    result = _clean([name])
    expected = [
        {"messages": [{"role": "user", "content": "\n".join(filter(None, (r["instruction"],
                                                                          r["input"])))},
                      {"role": "assistant", "content": r["output"]}]}
        for r in _distinct(raw)]
    assert result.records("train") == expected
    assert {q["reason"] for q in result.quarantine} <= {"duplicate"}
    assert len(result.quarantine) == len(raw) - len(expected)


def _oracle_tool_record(raw: dict) -> dict:
    messages = []
    for turn in raw["conversations"]:
        if turn["from"] == "function_call":
            call = json.loads(turn["value"])
            messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": call["name"],
                                                  "arguments": call["arguments"]}}]})
        else:
            role = {"human": "user", "gpt": "assistant", "observation": "tool"}[turn["from"]]
            messages.append({"role": role, "content": turn["value"]})
    tools = [{"type": "function", "function": t} for t in json.loads(raw["tools"])]
    return {"messages": messages, "tools": tools} if tools else {"messages": messages}


def _orphan_observation(raw: dict) -> bool:
    roles = [t["from"] for t in raw["conversations"]]
    return any(r == "observation" and roles[i - 1] not in ("function_call", "observation")
               for i, r in enumerate(roles))


def test_tool_call_file_is_kept_in_the_openai_form():
    distinct = _distinct(_load(GLAIVE))
    result = _clean([GLAIVE])
    valid = [r for r in distinct if not _orphan_observation(r)]
    assert len(distinct) - len(valid) == 2  # observations after a plain reply: malformed
    assert result.records("train") == [_oracle_tool_record(r) for r in valid]
    reasons = {q["reason"] for q in result.quarantine}
    assert reasons == {"duplicate", "tool result without call"}
    orphans = [json.loads(q["text"]) for q in result.quarantine if q["reason"] != "duplicate"]
    assert all(_orphan_observation(r) for r in orphans)


def test_tool_call_file_in_reject_mode_is_quarantined_as_unsupported_role():
    distinct = _distinct(_load(GLAIVE))
    result = _clean([GLAIVE], tool_calls="reject")
    plain = [r for r in distinct if json.loads(r["tools"]) == [] and not any(
        t["from"] in ("function_call", "observation") for t in r["conversations"])]
    assert result.records("train") == [_oracle_tool_record(r) for r in plain]
    assert {q["reason"] for q in result.quarantine} == {"duplicate", "unsupported role"}


def test_all_real_files_together_account_for_every_record():
    names = [*ALPACA, GLAIVE]
    report = _clean(names, validation_fraction=0.1, test_fraction=0.1).report()
    for name in names:
        s = report["by_source"][str(REAL_DATA / name)]
        assert s["read"] == len(_load(name)) == s["kept"] + s["quarantined"]
