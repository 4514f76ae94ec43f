"""Text-similarity metrics for generated chat answers: one registry, `METRICS`.

A metric is a function scoring one (prediction, reference) pair on a 0-100 scale, plus, when
the corpus figure is not the mean of those, a function scoring the whole corpus at once. A
new metric is one such function and one line in `METRICS`; the evaluate stage, the
predictions file, `chatsft compare` and the two `evaluate` modules (`metric_modules/`, thin
wrappers for `evaluate.load(path)`) all read the registry.

Two styles, each a column of the registry:

style="corpus" (default)
    * bleu4: ONE corpus-level sacrebleu BLEU-4: clipped n-gram counts and lengths are summed
      over all samples before the geometric mean and a single brevity penalty. Each pair is
      tokenized with sacrebleu's "zh" tokenizer (every Chinese character a token, other text
      as 13a) when its REFERENCE contains Han or kana characters, else with "13a" (WMT word
      tokens); the prediction never decides, and CJK punctuation or full-width forms alone
      do not make a reference Chinese. So a corpus whose references all contain Han or kana
      scores exactly `sacrebleu.corpus_bleu(preds, [refs], tokenize="zh")`, one whose
      references contain none exactly `tokenize="13a"` (an English reply with a full-width
      comma included), and a mixed corpus still gets one score. Per sample: sacrebleu's
      sentence BLEU (exp smoothing, effective order) with the pair's tokenizer.
    * rouge1/rouge2/rougeL: rouge_score F1 per sample, then the mean. Words: jieba words
      for CJK, Unicode letter/digit runs otherwise; lowercased; punctuation dropped (plain
      ASCII English tokenizes exactly as rouge_score's default tokenizer does).
    * exact_match: 100 when the pair is equal after stripping surrounding whitespace, else 0.

style="llamafactory" (to compare with numbers reported by LLaMA-Factory's
ComputeSimilarity in src/llamafactory/train/sft/metric.py and scripts/eval_bleu_rouge.py)
    * bleu4: mean over samples of nltk `sentence_bleu([list(ref)], list(pred),
      smoothing_function=SmoothingFunction().method3)` on CHARACTERS, for every language:
      English is scored on letter n-grams, which gives much higher numbers than word BLEU.
    * rouge1/rouge2/rougeL: `rouge_chinese.Rouge` on space-joined `jieba.cut` tokens
      (re-implemented, same results): case-sensitive, punctuation and whitespace tokens count
      as words, ROUGE-1/2 use DISTINCT n-grams (a repeated word is counted once), ROUGE-L is
      the plain LCS F1, F = 2PR/(P+R+1e-8).
    * every per-sample value is rounded to 4 decimals before averaging, as LLaMA-Factory does.
    * exact_match: as in corpus style (LLaMA-Factory has no such metric).

Why corpus BLEU is our default: BLEU was defined at corpus level, and that is what
sacrebleu, WMT and papers report, so the numbers are comparable and reproducible from the
tokenizer name. An average of sentence BLEUs is a different metric: it needs smoothing,
which decides the score of every short answer, it weights a one-word answer like a long one,
and on characters it stops being comparable with word-level BLEU on English at all.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import jieba
import numpy as np
import sacrebleu
from rouge_score import rouge_scorer
from sacrebleu.metrics.bleu import BLEU

if TYPE_CHECKING:
    import evaluate

# Scripts written without spaces between words: Han ideographs (incl. extensions B+) and
# Japanese kana. Korean Hangul is deliberately absent: Korean separates words with spaces.
_SPACELESS = ("\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
              "\U00020000-\U0003134f")
SPACELESS_RE = re.compile(f"[{_SPACELESS}]")
# The same plus CJK symbols and full-width forms (full-width letters and digits are word
# characters that jieba, not whitespace splitting, should segment).
CJK_RE = re.compile(f"[{_SPACELESS}\u3000-\u303f\uff00-\uffef]")


# ---- BLEU ----

# sacrebleu tokenizers are stateless and memoise their calls: one metric object each.
_SENTENCE_BLEU = {name: BLEU(tokenize=name, effective_order=True) for name in ("13a", "zh")}


def bleu_tokenizer(reference: str) -> str:
    """sacrebleu tokenizer of a pair, from its reference alone: "zh" with Han or kana in it."""
    return "zh" if SPACELESS_RE.search(reference) else "13a"


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU-4, each pair tokenized by `bleu_tokenizer` (one score for mixed corpora)."""
    names = [bleu_tokenizer(r) for r in references]
    tokenize = {name: metric.tokenizer for name, metric in _SENTENCE_BLEU.items()}
    # sacrebleu right-strips each segment before tokenizing; do the same so that
    # tokenize="none" on our output gives exactly sacrebleu's own statistics.
    hyps = [tokenize[n](p.rstrip()) for n, p in zip(names, predictions, strict=True)]
    refs = [tokenize[n](r.rstrip()) for n, r in zip(names, references, strict=True)]
    # force: the text is tokenized on purpose; without it sacrebleu prints "It looks like you
    # forgot to detokenize your test data" at every evaluation (it changes no number).
    return sacrebleu.corpus_bleu(hyps, [refs], tokenize="none", force=True).score


def sentence_bleu(prediction: str, reference: str) -> float:
    """sacrebleu sentence BLEU with the pair's tokenizer."""
    metric = _SENTENCE_BLEU[bleu_tokenizer(reference)]
    return metric.sentence_score(prediction, [reference]).score


def llamafactory_bleu(prediction: str, reference: str) -> float:
    """One sample's BLEU-4 exactly as LLaMA-Factory's ComputeSimilarity computes it."""
    from nltk.translate.bleu_score import SmoothingFunction
    from nltk.translate.bleu_score import sentence_bleu as nltk_sentence_bleu

    score = nltk_sentence_bleu([list(reference)], list(prediction),
                               smoothing_function=SmoothingFunction().method3)
    return round(score * 100, 4)


# ---- ROUGE ----

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
# jieba logs its dictionary loading at DEBUG level to stderr on first use; keep logs clean.
jieba.setLogLevel(logging.WARNING)
# A run of Unicode letters/digits (\w minus underscore): for ASCII this is [a-z0-9]+ after
# lowercasing, which is what rouge_score's default tokenizer keeps.
_WORD_RUN_RE = re.compile(r"[^\W_]+")


class MixedTokenizer:
    """rouge_score tokenizer: jieba words for CJK runs, whole words for everything else
    (rouge_score's default keeps only [a-z0-9] and so drops every Chinese character)."""

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for run in _WORD_RUN_RE.findall(text):
            if CJK_RE.search(run):
                # jieba also splits Latin letters off Han ones ("用Python写" -> 用/Python/写).
                tokens.extend(t.lower() for t in jieba.cut(run) if t.strip())
            else:
                tokens.append(run.lower())
        return tokens


_SCORER = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=MixedTokenizer())


# Cached: the three ROUGE metrics of a pair are asked for one after the other.
@functools.lru_cache(maxsize=64)
def _rouge(prediction: str, reference: str, llamafactory: bool) -> dict[str, float]:
    if llamafactory:
        return _llamafactory_rouge(prediction, reference)
    scores = _SCORER.score(reference, prediction)  # rouge_score takes (target, prediction)
    return {key: scores[key].fmeasure * 100 for key in ROUGE_TYPES}


def rouge(prediction: str, reference: str, key: str, llamafactory: bool = False) -> float:
    """ROUGE F1 `key` (rouge1, rouge2, rougeL) of one pair, in corpus or LLaMA-Factory style."""
    return _rouge(prediction, reference, llamafactory)[key]


def _rouge_chinese_words(text: str) -> list[str]:
    """The words rouge_chinese sees for `" ".join(jieba.cut(text))`: its sentence splitter
    (Rouge.cut_sent, regexes verbatim), whitespace collapsed per sentence, the sentences'
    words concatenated (n-grams may cross sentence boundaries, and a whitespace-only
    "sentence" contributes one empty-string word, as in the original)."""
    para = " ".join(jieba.cut(text))
    para = re.sub("([。！？\\?])([^”’])", r"\1\n\2", para)
    para = re.sub("(\\.{6})([^”’])", r"\1\n\2", para)
    para = re.sub("(…{2})([^”’])", r"\1\n\2", para)
    para = re.sub("([。！？\\?][”’])([^，。！？\\?])", r"\1\n\2", para)
    sentences = [" ".join(s.split()) for s in para.rstrip().split("\n") if len(s) > 0]
    return [word for sentence in sentences for word in sentence.split(" ")]


def _f1(overlap: int, hyp_count: int, ref_count: int) -> float:
    precision = overlap / hyp_count if hyp_count else 0.0
    recall = overlap / ref_count if ref_count else 0.0
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


def _lcs_length(x: list[str], y: list[str]) -> int:
    previous = [0] * (len(y) + 1)
    for x_word in x:
        current = [0]
        for j, y_word in enumerate(y, start=1):
            if x_word == y_word:
                current.append(previous[j - 1] + 1)
            else:
                current.append(max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def _llamafactory_rouge(prediction: str, reference: str) -> dict[str, float]:
    # LLaMA-Factory's guard: text with no non-whitespace token scores 0 for every type.
    if not prediction.split() or not reference.split():
        return dict.fromkeys(ROUGE_TYPES, 0.0)
    hyp, ref = _rouge_chinese_words(prediction), _rouge_chinese_words(reference)
    result = {}
    for n, key in ((1, "rouge1"), (2, "rouge2")):  # distinct n-grams, as rouge_chinese
        hyp_ngrams = {tuple(hyp[i: i + n]) for i in range(len(hyp) - n + 1)}
        ref_ngrams = {tuple(ref[i: i + n]) for i in range(len(ref) - n + 1)}
        result[key] = _f1(len(hyp_ngrams & ref_ngrams), len(hyp_ngrams), len(ref_ngrams))
    # ROUGE-L counts every word (not distinct ones) and uses the plain LCS length.
    result["rougeL"] = _f1(_lcs_length(ref, hyp), len(hyp), len(ref))
    return {key: round(value * 100, 4) for key, value in result.items()}


def exact_match(prediction: str, reference: str) -> float:
    return 100.0 if prediction.strip() == reference.strip() else 0.0


# ---- the registry ----

@dataclass(frozen=True)
class Metric:
    sample: Callable[[str, str], float]  # one pair's score, 0-100
    # The corpus score when it is not the mean of the samples' scores.
    corpus: Callable[[list[str], list[str]], float] | None = None


def _rouge_metrics(llamafactory: bool) -> dict[str, Metric]:
    return {key: Metric(functools.partial(rouge, key=key, llamafactory=llamafactory))
            for key in ROUGE_TYPES}


METRICS: dict[str, dict[str, Metric]] = {  # style -> metric name -> Metric
    "corpus": {
        "bleu4": Metric(sentence_bleu, corpus=corpus_bleu),
        **_rouge_metrics(llamafactory=False),
        "exact_match": Metric(exact_match),
    },
    "llamafactory": {
        "bleu4": Metric(llamafactory_bleu),
        **_rouge_metrics(llamafactory=True),
        "exact_match": Metric(exact_match),
    },
}
STYLES = tuple(METRICS)
# The scores of each reply in metrics/eval_predictions.jsonl and `chatsft compare`.
PER_SAMPLE = ("bleu4", "rougeL", "exact_match")


def _select(style: str, names: Iterable[str] | None) -> dict[str, Metric]:
    if style not in METRICS:
        raise ValueError(f"Unknown style {style!r}; expected one of {STYLES}")
    metrics = METRICS[style]
    names = None if names is None else tuple(names)
    unknown = [n for n in names or () if n not in metrics]
    if unknown:
        raise ValueError(f"Unknown metric {unknown[0]!r}; available: {', '.join(metrics)}")
    return {n: metrics[n] for n in names} if names is not None else metrics


def _check_inputs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(
            "predictions and references must have the same length, got "
            f"{len(predictions)} predictions and {len(references)} references"
        )
    if not predictions:
        raise ValueError("need at least one prediction/reference pair, got none")
    for i, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(prediction, str) or not isinstance(reference, str):
            raise TypeError(
                f"sample {i}: prediction and reference must be str, got "
                f"{type(prediction).__name__} and {type(reference).__name__}"
            )


def compute_text_metrics(predictions: list[str], references: list[str], style: str = "corpus",
                         names: Iterable[str] | None = None) -> dict[str, float]:
    """Corpus scores (0-100) of the metrics `names` (default: all of the style's: bleu4,
    rouge1, rouge2, rougeL, exact_match). Raises ValueError for lists of different lengths,
    empty lists, an unknown style or metric."""
    metrics = _select(style, names)
    _check_inputs(predictions, references)
    means = [n for n, m in metrics.items() if m.corpus is None]
    # Pair by pair, so that metrics sharing work on a pair (ROUGE) hit their cache.
    samples = [[metrics[n].sample(p, r) for n in means]
               for p, r in zip(predictions, references, strict=True)]
    # np.mean, not sum()/len(): LLaMA-Factory averages with numpy (pairwise sums).
    result = {n: float(np.mean([row[i] for row in samples])) for i, n in enumerate(means)}
    for n, m in metrics.items():
        if m.corpus is not None:
            result[n] = float(m.corpus(predictions, references))
    return {n: result[n] for n in metrics}


def per_sample_scores(predictions: list[str], references: list[str], style: str = "corpus",
                      names: Iterable[str] | None = PER_SAMPLE) -> list[dict[str, float]]:
    """`sample_scores` of each pair (default: bleu4, rougeL, exact_match)."""
    metrics = _select(style, names)
    _check_inputs(predictions, references)
    return [{n: float(m.sample(p, r)) for n, m in metrics.items()}
            for p, r in zip(predictions, references, strict=True)]


def sample_scores(prediction: str, reference: str) -> dict[str, float]:
    """One pair's bleu4 (sentence BLEU), rougeL and exact_match (0-100), corpus style.
    Empty strings score 0 (exact_match 100 if both are empty)."""
    return per_sample_scores([prediction], [reference])[0]


# ---- the same metrics as `evaluate` modules ----

METRIC_MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"
METRIC_NAMES = ("chatsft_bleu", "chatsft_rouge")


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """One of the in-repo evaluate modules ("chatsft_bleu" or "chatsft_rouge"), by path.

    For a local path `evaluate.load` never contacts the Hugging Face Hub (it copies the script
    into its modules cache and imports it); only a name that does not exist locally would be
    looked up there, so unknown names are refused. Cached: one import per process;
    keep_in_memory=True keeps evaluate from writing Arrow and lock files at each compute().
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(METRIC_NAMES)}")
    # Imported here: `import evaluate` pulls in transformers' pipelines (seconds).
    import evaluate

    path = METRIC_MODULES_DIR / name
    if not (path / f"{name}.py").is_file():
        raise FileNotFoundError(f"Metric module script not found: {path / f'{name}.py'}")
    return evaluate.load(str(path), keep_in_memory=True)
