"""The tokenize stage: real files with zero parity mismatches, quarantine, stats, audit, CLI."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from chatsft import tokenize_data
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.chat_template.parts import ParityError
from chatsft.data.clean import clean_records
from chatsft.errors import UserError
from chatsft.mask_audit import audit_html
from chatsft.params import DataParams, Params
from chatsft.tokenize_data import to_dataset, tokenize_split
from chatsft.tokenize_workers import encode_chunks
from tests.chat_templates import llama3_tokenizer, qwen25_tokenizer
from tests.conftest import REAL_DATA
from tests.test_scratch_template import PLAIN_CHATML

IGNORE = -100
REAL = ["alpaca_en_demo.json", "alpaca_zh_demo.json", "identity.json",
        "glaive_toolcall_zh_demo.json"]
TOOL_RECORD = {
    "messages": [
        {"role": "user", "content": "北京天气怎么样？"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"type": "function", "function": {"name": "weather", "arguments": {"city": "北京"}}}]},
        {"role": "tool", "content": '{"temperature": 21}'},
        {"role": "assistant", "content": "21 度。"}],
    "tools": [{"type": "function", "function": {"name": "weather", "parameters": {}}}],
}


@pytest.fixture(scope="module")
def real_records() -> list[dict]:
    if not REAL_DATA.is_dir():
        pytest.skip("no ../shared/data/real")
    params = DataParams(raw=[str(REAL_DATA / n) for n in REAL], validation_fraction=0,
                        test_fraction=0)
    return clean_records(params).records("train")


def test_real_files_tokenize_with_zero_parity_mismatches(real_records):
    tools = sum("tools" in r or any(m["role"] == "tool" or "tool_calls" in m
                                    for m in r["messages"]) for r in real_records)
    assert len(real_records) > 2000 and tools > 150
    # Qwen2.5-style: every record, tool calls included, in one sample with exact parity.
    cols, quarantine, stats = tokenize_split(real_records, ChatEncoder(qwen25_tokenizer()),
                                             "train")
    assert quarantine == [] and stats["samples"] == len(real_records)
    assert 0 < stats["supervised_fraction"] < 1
    # Llama-3-style: no tool support in the template, so the tool records are quarantined.
    _, quarantine, stats = tokenize_split(real_records, ChatEncoder(llama3_tokenizer()), "train")
    assert stats["quarantined"] == {"unsupported role": tools}
    # The batched path agrees with encoding every prefix in full on the tool conversations.
    enc = ChatEncoder(qwen25_tokenizer())
    with_tools = [r for r in real_records if "tools" in r][:100]
    fast, exact = enc.encode_records(with_tools), enc.encode_records(with_tools, fast=False)
    assert [[(e.input_ids, e.labels) for e in r] for r in fast] == \
        [[(e.input_ids, e.labels) for e in r] for r in exact]


def test_quarantine_and_stats(demo_records, chatml_tokenizer):
    long = {"messages": [{"role": "user", "content": "x " * 300},
                         {"role": "assistant", "content": "ok"}]}
    records = demo_records[:50] + [long, TOOL_RECORD]
    tok = copy.deepcopy(chatml_tokenizer)
    tok.chat_template = PLAIN_CHATML  # without tool sections, so the tool record is unsupported
    enc = ChatEncoder(tok, max_length=48)
    table, quarantine, stats = tokenize_split(records, enc, "train", "data/clean/train.jsonl")
    cols = table.to_pydict()
    reasons = {q["where"]: q["reason"] for q in quarantine}
    assert reasons["line 51"] == "too long" and reasons["line 52"] == "unsupported role"
    assert quarantine[-1]["record"] == TOOL_RECORD
    assert quarantine[-1]["source"] == "data/clean/train.jsonl"
    q = stats["quarantined"]
    assert q["unsupported role"] == 1 and q["too long"] >= 1
    assert stats["kept"] == len(records) - sum(q.values()) == stats["samples"]
    assert stats["truncated"] > 0 and stats["dropped_messages"] >= 2 * stats["truncated"]
    assert stats["longest"] == max(map(len, cols["input_ids"])) <= 48
    assert stats["tokens"] == sum(map(len, cols["input_ids"]))
    assert stats["supervised_tokens"] == sum(v != IGNORE for lab in cols["labels"] for v in lab)


class PidEncoder(ChatEncoder):
    """Notes in `log` the process of every call (results come back from a worker as bytes)."""

    log: Path

    def encode_records(self, records, fast=True):
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        return super().encode_records(records, fast)


def test_num_proc_spreads_a_small_split_over_processes_with_identical_output(
        demo_records, chatml_tokenizer, tmp_path):
    """A split under one chunk (1,024 records) still goes to every process (this one and a
    forked one), and the columns, quarantine and stats are the same as in one process."""
    long = {"messages": [{"role": "user", "content": "x " * 300},
                         {"role": "assistant", "content": "ok"}]}
    base = demo_records * 2  # 800
    records = base[:300] + [long, TOOL_RECORD] + base[300:600]
    for num_proc, expected in ((1, {os.getpid()}), (2, None)):
        encoder = PidEncoder(chatml_tokenizer, max_length=128)
        encoder.log = tmp_path / f"pids{num_proc}"
        chunks = list(encode_chunks(records, encoder, num_proc))
        assert sum(len(c.outcomes) for c in chunks) == len(records)
        pids = {int(x) for x in encoder.log.read_text().split()}
        assert pids == expected if expected else len(pids) == 2 and os.getpid() in pids
    one, two = (tokenize_split(records, ChatEncoder(chatml_tokenizer, max_length=128), "train",
                               num_proc=n) for n in (1, 2))
    assert one[0].equals(two[0]) and one[1:] == two[1:]
    # The columns, built from each chunk's flat arrays, hold exactly the encoder's samples.
    direct = ChatEncoder(chatml_tokenizer, max_length=128).encode_records(records)
    samples = [(e.input_ids, e.labels) for r in direct if not isinstance(r, Exception) for e in r]
    assert list(zip(*two[0].select(["input_ids", "labels"]).to_pydict().values(),
                    strict=True)) == samples
    assert one[2]["samples"] == 600 and one[2]["truncated"] > 0
    assert [q["where"] for q in two[1]] == ["line 301", "line 302"]
    assert to_dataset(one[0])._fingerprint == to_dataset(two[0])._fingerprint


PARITY_BAD = {"messages": [{"role": "user", "content": "Hi"},
                           {"role": "assistant", "content": "\nHello"}]}
PARITY_GOOD = {"messages": [{"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello"}]}


def test_parity_failure_is_quarantined_and_the_split_goes_on():
    """Qwen2.5: a reply starting with a newline makes a BPE token across the prompt's end."""
    records = [PARITY_GOOD] * 9 + [PARITY_BAD]
    cols, quarantine, stats = tokenize_split(records, ChatEncoder(qwen25_tokenizer()),
                                             "validation", max_parity_failures=0.1)
    assert stats["quarantined"] == {"parity": 1} and cols.num_rows == 9
    (q,) = quarantine
    assert q["where"] == "line 10" and q["record"] == PARITY_BAD
    assert "first difference" in q["detail"] and "'ĊĊ'" in q["detail"]


def test_many_parity_failures_stop_with_the_record_and_the_token():
    records = [PARITY_GOOD] * 8 + [PARITY_BAD] * 2
    with pytest.raises(ParityError) as err:
        tokenize_split(records, ChatEncoder(qwen25_tokenizer()), "validation",
                       max_parity_failures=0.1)
    msg = str(err.value)
    assert "data/clean/validation.jsonl: 2 of 10 records" in msg and "line 9" in msg
    assert "'ĊĊ'" in msg and '\\nHello' in msg


def test_dataset_is_deterministic(demo_records, chatml_tokenizer):
    enc = ChatEncoder(chatml_tokenizer)
    cols = tokenize_split(demo_records[:30], enc, "train")[0]
    a, b = to_dataset(cols), to_dataset(tokenize_split(demo_records[:30], enc, "train")[0])
    assert a._fingerprint == b._fingerprint and a[:] == cols.to_pydict()
    other = to_dataset(tokenize_split(demo_records[1:31], enc, "train")[0])
    assert other._fingerprint != a._fingerprint


def test_audit_shows_exactly_the_supervised_tokens(chatml_tokenizer):
    rec = {"messages": [{"role": "user", "content": "Is 1 < 2 & 3 > 2?"},
                        {"role": "assistant", "content": "Yes, 1 < 2."}]}
    cols = tokenize_split([rec], ChatEncoder(chatml_tokenizer), "train")[0]
    page = audit_html(chatml_tokenizer, to_dataset(cols), 8)
    sample = page.split("<div class='sample'>")[1]
    supervised = "".join(re.findall(r"<span class='s[^']*'[^>]*>(.*?)</span>", sample))
    context = "".join(re.findall(r"<span(?: class='c')? title[^>]*>(.*?)</span>", sample))
    assert supervised == "Yes, 1 &lt; 2.&lt;|im_end|&gt;"
    assert "Is 1 &lt; 2 &amp; 3 &gt; 2?" in context and "assistant" in context
    assert page.count("<h3>") == 1


def _workspace(tmp_path, tokenizer, records: list[dict]):
    tokenizer.save_pretrained(tmp_path / "models" / "base")
    clean = tmp_path / "data" / "clean"
    clean.mkdir(parents=True)
    for split, recs in (("train", records), ("validation", records[:5]), ("test", [])):
        (clean / f"{split}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    params = Params().model_dump()
    params["tokenize"].update(max_length=64, audit_samples=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")


def _run_stage(cwd, monkeypatch) -> None:
    """`python -m stages.tokenize` in `cwd`, in this process (imports are slow to repeat)."""
    from stages.tokenize import main

    monkeypatch.chdir(cwd)
    main()


def test_stage_writes_datasets_stats_quarantine_and_audit(tmp_path, demo_records, monkeypatch):
    records = demo_records[:40] + [TOOL_RECORD]
    _workspace(tmp_path, qwen25_tokenizer(), records)
    _run_stage(tmp_path, monkeypatch)
    from datasets import load_from_disk

    ds = load_from_disk(str(tmp_path / "data" / "tokenized"))
    quarantine = (tmp_path / "data" / "tokenized" / "quarantine.jsonl").read_text()
    stats = json.loads((tmp_path / "metrics" / "tokenize.json").read_text())
    assert all(json.loads(x)["reason"] == "too long" for x in quarantine.splitlines())
    assert stats["train"]["samples"] == len(ds["train"]) and len(ds["test"]) == 0
    assert stats["train"]["kept"] + stats["validation"]["kept"] + len(
        quarantine.splitlines()) == len(records) + 5
    assert set(stats["packing"]) == {"capacity", "rows", "real_tokens", "padding_fraction",
                                     "supervised_fraction"}
    assert stats["packing"]["real_tokens"] == stats["train"]["tokens"]
    assert (tmp_path / "metrics" / "mask_audit.html").read_text().count("<h3>") == 3


def test_stage_fails_on_a_parity_mismatch_naming_record_and_token(tmp_path, demo_records,
                                                                   monkeypatch, capsys):
    bad = {"messages": [{"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "\nHello"}]}
    _workspace(tmp_path, qwen25_tokenizer(), demo_records[:3] + [bad])
    with pytest.raises(SystemExit) as stop:
        _run_stage(tmp_path, monkeypatch)
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "data/clean/train.jsonl: 1 of 4 records" in err and "line 4" in err
    assert "'ĊĊ'" in err and "max_parity_failures" in err
    assert not (tmp_path / "data" / "tokenized").exists()


def test_stage_quarantines_a_rare_parity_failure_and_goes_on(tmp_path, demo_records,
                                                             monkeypatch):
    """One record in 151 (under tokenize.max_parity_failures, 1%) does not stop the stage."""
    _workspace(tmp_path, qwen25_tokenizer(), demo_records[:150] + [PARITY_BAD])
    _run_stage(tmp_path, monkeypatch)
    quarantine = [json.loads(x) for x in
                  (tmp_path / "data" / "tokenized" / "quarantine.jsonl").read_text().splitlines()]
    parity = [q for q in quarantine if q["reason"] == "parity"]
    assert [(q["where"], q["record"]) for q in parity] == [("line 151", PARITY_BAD)]
    stats = json.loads((tmp_path / "metrics" / "tokenize.json").read_text())
    assert stats["train"]["quarantined"].get("parity") == 1


def test_a_split_over_one_arrow_column_stops_with_a_clear_error(demo_records, chatml_tokenizer,
                                                                 monkeypatch):
    monkeypatch.setattr(tokenize_data, "INT32_MAX", 100)
    with pytest.raises(UserError, match=r"data/clean/train.jsonl: [\d,]+ tokens, more than one "
                       r"Arrow column holds \(100\)"):
        tokenize_split(demo_records[:5], ChatEncoder(chatml_tokenizer), "train")
