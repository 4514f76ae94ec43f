"""`ChatMLDataProcessor`, the seed project's API over the clean stage's rules."""

from __future__ import annotations

import json

import pytest

from chatsft.data import ChatMLDataProcessor
from chatsft.data.errors import Reject
from chatsft.params import DataParams
from tests.conftest import REAL_DATA


def test_create_save_and_load_round_trip(tmp_path):
    p = ChatMLDataProcessor()
    samples = [p.create_chatml_sample("You are terse.", "2+2?", "4"),
               p.create_chatml_sample(None, "你好", "你好！")]
    assert samples[0] == {"messages": [{"role": "system", "content": "You are terse."},
                                       {"role": "user", "content": "2+2?"},
                                       {"role": "assistant", "content": "4"}]}
    assert [m["role"] for m in samples[1]["messages"]] == ["user", "assistant"]
    for name in ("d.jsonl", "d.json"):
        assert p.save_chatml_data(samples, tmp_path / name) == 2
        assert p.load_chatml_data(tmp_path / name) == samples
    assert json.loads((tmp_path / "d.json").read_text()) == samples


def test_save_refuses_what_the_clean_stage_would_reject(tmp_path):
    p = ChatMLDataProcessor()
    bad = [p.create_chatml_sample(None, "q", "a"), p.create_chatml_sample(None, "q", "  ")]
    with pytest.raises(Reject, match="empty content: sample 1"):
        p.save_chatml_data(bad, tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


def test_load_names_the_file_record_and_reason(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"instruction": "q", "output": "a"}\n{"messages": [{"role": "user"}]}\n')
    with pytest.raises(Reject, match=r"missing field: .*x.jsonl: line 2: messages\[0\]"):
        ChatMLDataProcessor().load_chatml_data(path)


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="no ../shared/data/real")
def test_load_reads_other_formats_and_honours_params():
    identity = ChatMLDataProcessor().load_chatml_data(REAL_DATA / "identity.json")
    assert len(identity) == 91 and identity[0]["messages"][0] == {"role": "user",
                                                                  "content": "hi"}
    no_tools = ChatMLDataProcessor(DataParams(tool_calls="reject"))
    with pytest.raises(Reject, match="unsupported role"):
        no_tools.load_chatml_data(REAL_DATA / "glaive_toolcall_zh_demo.json")
