"""Tests for chatsft.evaluation.metrics (the registry) against independently computed values.

Expected numbers come from hand counts (n-gram matches written out in comments) or from
sacrebleu / nltk / rouge_score called directly, never from the code under test.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import jieba
import pytest
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU

from chatsft.evaluation import metrics as tm

REPO_ROOT = Path(__file__).resolve().parents[2]

# English pair, 6 tokens each. Clipped matches / totals:
#   1-grams the,cat,sat,on,mat      5/6
#   2-grams the cat,cat sat,sat on  3/5
#   3-grams the cat sat,cat sat on  2/4
#   4-grams the cat sat on          1/3
# equal lengths -> BP = 1, BLEU = (5/6 * 3/5 * 2/4 * 1/3) ** (1/4) = (1/12) ** (1/4)
EN_PRED, EN_REF = "the cat sat on the mat", "the cat sat on a mat"
EN_BLEU = 100 * (1 / 12) ** 0.25
# Chinese pair: 6 characters each for the zh tokenizer; 4/6, 3/5, 2/4, 1/3 -> (1/15) ** (1/4).
ZH_PRED, ZH_REF = "我喜欢吃苹果", "我喜欢吃香蕉"
ZH_BLEU = 100 * (1 / 15) ** 0.25

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE")

# Runs in a fresh interpreter with an empty Hugging Face cache, with HF_HUB_OFFLINE=1 or with
# no offline variable at all (this process can't test that: tests/conftest.py sets
# HF_HUB_OFFLINE before anything reads it). An audit hook refuses (and records) every DNS
# lookup and internet connection from the start. Besides the cached `load_metric` path it
# calls evaluate.load on each module folder directly.
_NO_NETWORK_SCRIPT = """
import json, sys

attempts = []

def no_network(event, args):
    if event in ("socket.getaddrinfo", "socket.gethostbyname") or (
        event == "socket.connect" and not isinstance(args[1], (str, bytes))  # not AF_UNIX
    ):
        attempts.append(f"{event} {args[1:]!r}")
        raise OSError(f"network disabled by test: {event}")

sys.addaudithook(no_network)
import evaluate
from chatsft.evaluation import metrics as tm

result = tm.compute_text_metrics(["我喜欢吃苹果", "the cat sat on the mat"],
                                 ["我喜欢吃香蕉", "the cat sat on a mat"])
direct = {}
for name in tm.METRIC_NAMES:
    module = evaluate.load(str(tm.METRIC_MODULES_DIR / name), keep_in_memory=True)
    direct[name] = module.compute(predictions=["我喜欢吃苹果"], references=["我喜欢吃苹果"])
print(json.dumps({"metrics": result, "direct": direct, "attempts": attempts}))
"""
MODES = {"HF_HUB_OFFLINE=1": {"HF_HUB_OFFLINE": "1"}, "no offline variable": {}}


@pytest.fixture(scope="module", autouse=True)
def no_network_subprocesses(tmp_path_factory):
    """Start the subprocesses first, so that their ~4 s of `import evaluate` overlaps with
    the same import in this process."""
    processes = {}
    for mode, extra in MODES.items():
        env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARS}
        env |= extra | {
            "HF_HOME": str(tmp_path_factory.mktemp("hf_home")),  # nothing cached earlier
            "PYTHONPATH": str(REPO_ROOT),
        }
        processes[mode] = subprocess.Popen(
            [sys.executable, "-c", _NO_NETWORK_SCRIPT], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
    yield processes
    for process in processes.values():
        if process.poll() is None:  # only when the test that reads it was deselected
            process.kill()
            process.communicate()


def test_identical_strings_score_100():
    preds = ["the cat sat on the mat", "我喜欢吃苹果。"]
    for style in tm.STYLES:
        scores = tm.compute_text_metrics(preds, list(preds), style=style)
        assert scores == pytest.approx(dict.fromkeys(scores, 100.0)), style


def test_english_matches_hand_count_and_sacrebleu():
    scores = tm.compute_text_metrics([EN_PRED], [EN_REF])
    assert scores["bleu4"] == pytest.approx(EN_BLEU)
    assert scores["bleu4"] == pytest.approx(sacrebleu.corpus_bleu([EN_PRED], [[EN_REF]]).score)
    # Unigram overlap 5 of 6 on both sides; bigrams 3 of 5; LCS "the cat sat on mat" = 5.
    assert scores["rouge1"] == pytest.approx(100 * 5 / 6)
    assert scores["rouge2"] == pytest.approx(100 * 3 / 5)
    assert scores["rougeL"] == pytest.approx(100 * 5 / 6)
    assert scores["exact_match"] == 0.0


def test_english_corpus_bleu_and_rouge_match_the_libraries():
    preds = ["The cat, it sat on the mat!", "A quick brown fox jumps.", "Hello there"]
    refs = ["The cat sat on the mat.", "The quick brown fox jumped over the dog.", "hello"]
    scores = tm.compute_text_metrics(preds, refs)
    expected_bleu = sacrebleu.corpus_bleu(preds, [refs], tokenize="13a").score
    assert scores["bleu4"] == pytest.approx(expected_bleu)
    # For ASCII English our tokenizer must equal rouge_score's default one.
    default = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    for key in ("rouge1", "rouge2", "rougeL"):
        per_sample = [default.score(r, p)[key].fmeasure for p, r in zip(preds, refs, strict=True)]
        assert scores[key] == pytest.approx(100 * sum(per_sample) / len(per_sample)), key


def test_chinese_matches_sacrebleu_zh_and_jieba_hand_count():
    # The hand count below assumes this segmentation; check it rather than trust it.
    assert jieba.lcut(ZH_PRED) == ["我", "喜欢", "吃", "苹果"]
    assert jieba.lcut(ZH_REF) == ["我", "喜欢", "吃", "香蕉"]
    scores = tm.compute_text_metrics([ZH_PRED], [ZH_REF])
    assert scores["bleu4"] == pytest.approx(ZH_BLEU)
    expected_bleu = sacrebleu.corpus_bleu([ZH_PRED], [[ZH_REF]], tokenize="zh").score
    assert scores["bleu4"] == pytest.approx(expected_bleu)
    # Words 3 of 4 shared; bigrams 我喜欢, 喜欢吃 shared of 3; LCS 我 喜欢 吃 = 3.
    assert scores["rouge1"] == pytest.approx(75.0)
    assert scores["rouge2"] == pytest.approx(100 * 2 / 3)
    assert scores["rougeL"] == pytest.approx(75.0)


def test_chinese_rouge_drops_punctuation_and_lowercases_latin_words():
    assert jieba.lcut("今天天气很好") == ["今天天气", "很", "好"]
    assert jieba.lcut("今天天气不错") == ["今天天气", "不错"]
    # 1 shared word: P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4; "。" and "！" ignored.
    scores = tm.compute_text_metrics(["今天天气很好。"], ["今天天气不错！"])
    assert scores["rouge1"] == pytest.approx(40.0)
    # 用/Python/写/代码 vs 用/python/写/程序: 3 of 4 words shared once lowercased.
    scores = tm.compute_text_metrics(["用Python写代码"], ["用python写程序"])
    assert scores["rouge1"] == pytest.approx(75.0)


def test_mixed_language_corpus_is_one_corpus_score():
    preds, refs = [EN_PRED, ZH_PRED], [EN_REF, ZH_REF]
    scores = tm.compute_text_metrics(preds, refs)
    # Hand count: the two pairs' statistics add up: (9/12 * 6/10 * 4/8 * 2/6) ** (1/4).
    assert scores["bleu4"] == pytest.approx(100 * (9 / 12 * 6 / 10 * 4 / 8 * 2 / 6) ** 0.25)
    # Same via sacrebleu: sum each language's own statistics, then score them once.
    en = sacrebleu.corpus_bleu([EN_PRED], [[EN_REF]], tokenize="13a")
    zh = sacrebleu.corpus_bleu([ZH_PRED], [[ZH_REF]], tokenize="zh")
    expected = BLEU.compute_bleu(
        correct=[a + b for a, b in zip(en.counts, zh.counts, strict=True)],
        total=[a + b for a, b in zip(en.totals, zh.totals, strict=True)],
        sys_len=en.sys_len + zh.sys_len,
        ref_len=en.ref_len + zh.ref_len,
    ).score
    assert scores["bleu4"] == pytest.approx(expected)
    # One tokenizer for the whole corpus would be wrong for one of the languages.
    assert scores["bleu4"] != pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)
    assert scores["rouge1"] == pytest.approx((100 * 5 / 6 + 75.0) / 2)


def _nltk_char_bleu(pred: str, ref: str) -> float:
    bleu = sentence_bleu([list(ref)], list(pred), smoothing_function=SmoothingFunction().method3)
    return round(bleu * 100, 4)


def test_llamafactory_bleu_matches_direct_nltk():
    preds = [EN_PRED, ZH_PRED, "好", "", "Hello world"]
    refs = [EN_REF, ZH_REF, "很好", "空", "hello, world!"]
    scores = tm.compute_text_metrics(preds, refs, style="llamafactory")
    expected = [_nltk_char_bleu(p, r) for p, r in zip(preds, refs, strict=True)]
    assert scores["bleu4"] == pytest.approx(sum(expected) / len(expected))


def test_llamafactory_rouge_hand_counts():
    scores = tm.compute_text_metrics([ZH_PRED], [ZH_REF], style="llamafactory")
    # rouge_chinese F = 2PR/(P+R+1e-8), rounded to 4 decimals after * 100.
    assert scores["rouge1"] == round(100 * 2 * 0.75 * 0.75 / (1.5 + 1e-8), 4)
    assert scores["rouge2"] == round(100 * 2 * (2 / 3) ** 2 / (4 / 3 + 1e-8), 4)
    assert scores["rougeL"] == round(100 * 2 * 0.75 * 0.75 / (1.5 + 1e-8), 4)
    # rouge_chinese counts distinct n-grams: hyp {the, cat} vs ref {the, cat, sat} ->
    # P = 1, R = 2/3; ROUGE-L uses all words: LCS 2, P = 2/4, R = 2/3.
    scores = tm.compute_text_metrics(["the the the cat"], ["the cat sat"], style="llamafactory")
    assert scores["rouge1"] == round(100 * 2 * (2 / 3) / (5 / 3 + 1e-8), 4)
    assert scores["rougeL"] == round(100 * 2 * (1 / 3) / (7 / 6 + 1e-8), 4)
    # Corpus style counts repeats (P = 2/4) and so gives 4/7 instead.
    corpus = tm.compute_text_metrics(["the the the cat"], ["the cat sat"])
    assert corpus["rouge1"] == pytest.approx(100 * 4 / 7)
    # rouge_chinese is case-sensitive.
    assert tm.compute_text_metrics(["Hello"], ["hello"], style="llamafactory")["rouge1"] == 0


def test_sample_scores_use_sentence_bleu_with_the_right_tokenizer():
    en = tm.sample_scores(EN_PRED, EN_REF)
    assert en["bleu4"] == pytest.approx(sacrebleu.sentence_bleu(EN_PRED, [EN_REF]).score)
    assert en["rougeL"] == pytest.approx(100 * 5 / 6)
    assert en["exact_match"] == 0.0
    zh = tm.sample_scores(ZH_PRED, ZH_REF)
    expected = sacrebleu.sentence_bleu(ZH_PRED, [ZH_REF], tokenize="zh").score
    assert zh["bleu4"] == pytest.approx(expected)
    assert tm.sample_scores(" 好的 ", "好的\n") == {
        "bleu4": pytest.approx(100.0),
        "rougeL": pytest.approx(100.0),
        "exact_match": 100.0,
    }
    assert tm.per_sample_scores([EN_PRED, ZH_PRED], [EN_REF, ZH_REF]) == [en, zh]


def test_empty_strings_do_not_crash():
    preds, refs = ["", "abc", "", "  "], ["abc", "", "", ""]
    for style in tm.STYLES:
        scores = tm.compute_text_metrics(preds, refs, style=style)
        assert scores["bleu4"] == 0.0
        assert scores["rouge1"] == scores["rouge2"] == scores["rougeL"] == 0.0
        assert scores["exact_match"] == 50.0  # "" == "" and "  ".strip() == ""
    assert tm.sample_scores("", "") == {"bleu4": 0.0, "rougeL": 0.0, "exact_match": 100.0}
    assert tm.sample_scores("", "abc")["bleu4"] == 0.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="same length, got 2 predictions and 1 references"):
        tm.compute_text_metrics(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="same length"):
        tm.per_sample_scores(["a"], [])
    with pytest.raises(ValueError, match="at least one"):
        tm.compute_text_metrics([], [])
    with pytest.raises(ValueError, match="Unknown style"):
        tm.compute_text_metrics(["a"], ["a"], style="sentence")
    with pytest.raises(ValueError, match="Unknown metric"):
        tm.load_metric("rouge")  # would be a Hub download in evaluate.load


def test_load_metric_is_cached_and_loads_from_the_repo():
    assert tm.load_metric("chatsft_bleu") is tm.load_metric("chatsft_bleu")
    assert tm.load_metric("chatsft_rouge").name == "chatsft_rouge"


@pytest.mark.parametrize("mode", list(MODES))
def test_loading_in_a_fresh_process_needs_no_network(no_network_subprocesses, mode):
    """With or without HF_HUB_OFFLINE, loading the in-repo metric modules by path and
    scoring never touches the network."""
    process = no_network_subprocesses[mode]
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    expected = tm.compute_text_metrics([ZH_PRED, EN_PRED], [ZH_REF, EN_REF])
    assert report["metrics"] == pytest.approx(expected)
    direct = report["direct"]  # identical strings: every score is 100
    assert set(direct) == {"chatsft_bleu", "chatsft_rouge"}
    assert direct["chatsft_bleu"] == pytest.approx({"bleu4": 100.0})
    assert {k: direct["chatsft_rouge"][k] for k in ("rouge1", "rouge2", "rougeL")} == \
        pytest.approx(dict.fromkeys(("rouge1", "rouge2", "rougeL"), 100.0))


# The BLEU docstring's claim: the tokenizer of a pair follows its reference alone, so a corpus
# whose references all have Han or kana scores as sacrebleu's "zh", one whose references have
# none as "13a" -- whatever the predictions hold, full-width punctuation included.
ENGLISH = (["Hello，world！ The cat sat.", "我 think so", "Yes, it is（mostly）."],
           ["Hello, world! The cat sat on the mat.", "I think so，too.", "Yes, it is (mostly)."])
CHINESE = (["今天天气很好。", "I like 苹果！", "好的，我马上去。"],
           ["今天天气不错！", "我喜欢吃苹果。", "好的，我现在就去。"])


@pytest.mark.parametrize(("corpus", "tokenize"), [(ENGLISH, "13a"), (CHINESE, "zh")],
                         ids=["english-with-full-width-punctuation", "chinese"])
def test_one_language_corpus_bleu_equals_sacrebleu(corpus, tokenize):
    preds, refs = corpus
    expected = sacrebleu.corpus_bleu(preds, [refs], tokenize=tokenize)
    assert expected.score > 0
    assert tm.compute_text_metrics(preds, refs)["bleu4"] == pytest.approx(expected.score)
    for pred, ref in zip(preds, refs, strict=True):
        assert tm.sample_scores(pred, ref)["bleu4"] == pytest.approx(
            sacrebleu.sentence_bleu(pred, [ref], tokenize=tokenize).score)


def test_full_width_punctuation_in_an_english_pair_keeps_13a():
    # Deciding from either side would send these pairs to "zh" and split "Hello，world" apart.
    pred, ref = "Hello，world！", "Hello，world! Bye."
    assert tm.bleu_tokenizer(ref) == "13a"
    expected = sacrebleu.corpus_bleu([pred], [[ref]], tokenize="13a").score
    assert expected != pytest.approx(sacrebleu.corpus_bleu([pred], [[ref]], tokenize="zh").score)
    assert tm.compute_text_metrics([pred], [ref])["bleu4"] == pytest.approx(expected)


def test_styles_are_the_params_choices():
    from typing import get_args

    from chatsft.params import EvaluateParams

    assert tm.STYLES == get_args(EvaluateParams.model_fields["bleu_style"].annotation)


def test_a_new_metric_is_one_function_and_one_registry_line(monkeypatch):
    def length_ratio(prediction: str, reference: str) -> float:
        return 100.0 * len(prediction) / max(len(reference), 1)

    monkeypatch.setitem(tm.METRICS["corpus"], "length_ratio", tm.Metric(length_ratio))
    scores = tm.compute_text_metrics(["ab", "abcd"], ["abcd", "abcd"])
    assert scores["length_ratio"] == pytest.approx(75.0)
    assert set(scores) == {"bleu4", "rouge1", "rouge2", "rougeL", "exact_match", "length_ratio"}
    rows = tm.per_sample_scores(["ab"], ["abcd"], names=["length_ratio"])
    assert rows == [{"length_ratio": 50.0}]
    with pytest.raises(ValueError, match="Unknown metric 'chrf'"):
        tm.compute_text_metrics(["a"], ["a"], names=["chrf"])


@pytest.mark.parametrize("style", tm.STYLES)
def test_evaluate_modules_report_the_registry(style):
    preds, refs = [EN_PRED, ZH_PRED, "Hello，world！"], [EN_REF, ZH_REF, "hello world"]
    expected = tm.compute_text_metrics(preds, refs, style)
    samples = tm.per_sample_scores(preds, refs, style, names=None)
    for name, keys in (("chatsft_bleu", ["bleu4"]), ("chatsft_rouge", tm.ROUGE_TYPES)):
        got = tm.load_metric(name).compute(predictions=preds, references=refs, style=style,
                                           per_sample=True)
        for key in keys:
            assert got[key] == pytest.approx(expected[key]), (name, key)
            assert got[f"{key}_per_sample"] == pytest.approx([s[key] for s in samples])


def test_corpus_bleu_does_not_warn_about_tokenized_text(capfd, caplog):
    # Our pre-tokenized text ends in " ." on every line: sacrebleu would warn each evaluation.
    preds = [f"Answer number {i}." for i in range(120)]
    tm.compute_text_metrics(preds, list(preds))
    assert "detokenize" not in capfd.readouterr().err + caplog.text
