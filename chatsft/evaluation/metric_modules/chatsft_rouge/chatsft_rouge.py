"""chatsft_rouge: ROUGE-1/2/L F1 for chat SFT outputs, offline, with Chinese word segmentation.

An `evaluate` module loaded by path (never from the Hub), e.g.
`evaluate.load("/abs/path/chatsft_rouge", keep_in_memory=True)`. It depends only on
rouge_score and jieba, so it works with no network at all.

Two styles, chosen per `compute()` call:

* "corpus" (default): rouge_score F1 per sample, averaged (a plain mean; the Hub `rouge`
  metric reports a bootstrap median instead). rouge_score's default tokenizer keeps only
  [a-z0-9] and so drops every Chinese character; we pass our own: words are maximal runs of
  Unicode letters/digits, runs containing CJK are segmented with jieba, everything is
  lowercased, punctuation is dropped, no stemming. Plain ASCII English therefore tokenizes
  exactly as rouge_score's default tokenizer does.
* "llamafactory": LLaMA-Factory's ComputeSimilarity ROUGE, i.e. `rouge_chinese.Rouge` on
  space-joined `jieba.cut` tokens, re-implemented here (rouge_chinese is not a dependency).
  Its quirks are kept on purpose: ROUGE-N counts *distinct* n-grams (sets, not multisets),
  tokens keep case and punctuation, F = 2PR/(P+R+1e-8), and each per-sample score is
  rounded to 4 decimals (×100) before averaging.
"""

import logging
import re

import datasets
import evaluate
import jieba
import numpy as np
from rouge_score import rouge_scorer

_DESCRIPTION = """\
ROUGE-1/2/L F1 (0-100) with jieba segmentation for Chinese: averaged rouge_score F1 (corpus
style) or a re-implementation of LLaMA-Factory's rouge_chinese scores (llamafactory style).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model outputs.
    references (list of str): one reference per prediction.
    style (str): "corpus" (default) or "llamafactory".
    per_sample (bool): also return `rouge1_per_sample`, `rouge2_per_sample` and
        `rougeL_per_sample`, lists with one F1 (0-100) per pair.
Returns:
    rouge1, rouge2, rougeL (float): mean F1 over samples, 0-100.
Examples:
    >>> rouge = evaluate.load("/abs/path/chatsft_rouge", keep_in_memory=True)
    >>> rouge.compute(predictions=["我喜欢吃苹果"], references=["我喜欢吃香蕉"])["rouge1"]
    75.0
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    pages = "74--81",
}
"""

STYLES = ("corpus", "llamafactory")
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

# jieba logs its dictionary loading at DEBUG level to stderr on first use; keep logs clean.
jieba.setLogLevel(logging.WARNING)

# Same definition as chatsft_bleu: scripts written without spaces between words.
CJK_RE = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]"
)
# A run of Unicode letters/digits (\w minus underscore): for ASCII this is [a-z0-9]+ after
# lowercasing, which is what rouge_score's default tokenizer keeps.
_WORD_RUN_RE = re.compile(r"[^\W_]+")


class MixedTokenizer:
    """rouge_score tokenizer: jieba words for CJK runs, whole words for everything else."""

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


def corpus_rouge_sample(prediction: str, reference: str) -> dict[str, float]:
    """rouge_score F1 (0-100) of one pair with the mixed-language tokenizer."""
    scores = _SCORER.score(reference, prediction)  # rouge_score takes (target, prediction)
    return {key: scores[key].fmeasure * 100 for key in ROUGE_TYPES}


# ---- LLaMA-Factory style: a faithful re-implementation of rouge_chinese.Rouge.get_scores ----


def _rouge_chinese_cut_sent(para: str) -> list[str]:
    """rouge_chinese's sentence splitter (Rouge.cut_sent), regexes copied verbatim."""
    para = re.sub("([。！？\\?])([^”’])", r"\1\n\2", para)
    para = re.sub("(\\.{6})([^”’])", r"\1\n\2", para)
    para = re.sub("(…{2})([^”’])", r"\1\n\2", para)
    para = re.sub("([。！？\\?][”’])([^，。！？\\?])", r"\1\n\2", para)
    return para.rstrip().split("\n")


def _rouge_chinese_words(text: str) -> list[str]:
    """Words rouge_chinese sees for `" ".join(jieba.cut(text))`.

    It splits into sentences, collapses whitespace in each, then concatenates all the
    sentences' space-separated words (so n-grams may cross sentence boundaries, and a
    whitespace-only "sentence" contributes one empty-string word, as in the original).
    """
    joined = " ".join(jieba.cut(text))
    sentences = [" ".join(s.split()) for s in _rouge_chinese_cut_sent(joined) if len(s) > 0]
    return [word for sentence in sentences for word in sentence.split(" ")]


def _f1(overlap: int, hyp_count: int, ref_count: int) -> float:
    precision = overlap / hyp_count if hyp_count else 0.0
    recall = overlap / ref_count if ref_count else 0.0
    return 2.0 * ((precision * recall) / (precision + recall + 1e-8))


def _distinct_ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


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


def llamafactory_rouge_sample(prediction: str, reference: str) -> dict[str, float]:
    """One pair's ROUGE F (0-100, rounded to 4 decimals) as LLaMA-Factory computes it."""
    # LLaMA-Factory's guard: text with no non-whitespace token scores 0 for every type.
    if not prediction.split() or not reference.split():
        return {key: 0.0 for key in ROUGE_TYPES}
    hyp = _rouge_chinese_words(prediction)
    ref = _rouge_chinese_words(reference)
    result = {}
    for n, key in ((1, "rouge1"), (2, "rouge2")):
        hyp_ngrams, ref_ngrams = _distinct_ngrams(hyp, n), _distinct_ngrams(ref, n)
        overlap = len(hyp_ngrams & ref_ngrams)
        result[key] = _f1(overlap, len(hyp_ngrams), len(ref_ngrams))
    # ROUGE-L counts every word (not distinct ones) and uses the plain LCS length.
    result["rougeL"] = _f1(_lcs_length(ref, hyp), len(hyp), len(ref))
    return {key: round(value * 100, 4) for key, value in result.items()}


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ChatsftRouge(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=[
                "https://github.com/google-research/google-research/tree/master/rouge",
                "https://github.com/Isaac-JL-Chen/rouge_chinese",
            ],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str],
        style: str = "corpus",
        per_sample: bool = False,
    ) -> dict:
        if style not in STYLES:
            raise ValueError(f"Unknown ROUGE style {style!r}; expected one of {STYLES}")
        if len(predictions) != len(references):
            raise ValueError(f"Got {len(predictions)} predictions but {len(references)} references")
        if not predictions:
            raise ValueError("ROUGE needs at least one prediction/reference pair")

        score_sample = llamafactory_rouge_sample if style == "llamafactory" else corpus_rouge_sample
        samples = [score_sample(p, r) for p, r in zip(predictions, references, strict=True)]
        result: dict = {}
        for key in ROUGE_TYPES:
            values = [sample[key] for sample in samples]
            result[key] = float(np.mean(values))
            if per_sample:
                result[f"{key}_per_sample"] = values
        return result
