"""chatsft_bleu: BLEU-4 for chat SFT outputs, offline and language-aware.

An `evaluate` module loaded by path (never from the Hub), e.g.
`evaluate.load("/abs/path/chatsft_bleu", keep_in_memory=True)`. It depends only on
sacrebleu and nltk, so it works with no network at all.

Two styles, chosen per `compute()` call:

* "corpus" (default): one corpus-level sacrebleu BLEU-4 over all samples. Each
  (prediction, reference) pair is tokenized with sacrebleu's `zh` tokenizer when either
  side contains CJK characters and with `13a` otherwise. Both sides of a pair must share
  a tokenizer or their n-grams could never match. The pre-tokenized text is scored with
  tokenize="none", so a corpus mixing Chinese and English still gets a single score; for a
  one-language corpus this equals `sacrebleu.corpus_bleu(..., tokenize="zh"|"13a")`.
* "llamafactory": LLaMA-Factory's ComputeSimilarity BLEU: nltk `sentence_bleu` on
  characters with smoothing method3, rounded to 4 decimals per sample (×100) and averaged.
"""

import re

import datasets
import evaluate
import numpy as np
import sacrebleu
from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu
from sacrebleu.metrics.bleu import BLEU
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
from sacrebleu.tokenizers.tokenizer_zh import TokenizerZh

_DESCRIPTION = """\
BLEU-4 (0-100) that picks sacrebleu's `zh` or `13a` tokenizer per sample pair (corpus
style), or reproduces LLaMA-Factory's character-level nltk sentence BLEU (llamafactory style).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): model outputs.
    references (list of str): one reference per prediction.
    style (str): "corpus" (default) or "llamafactory".
    per_sample (bool): also return `bleu_per_sample`, a list with one score per pair
        (sacrebleu sentence BLEU in corpus style, the nltk score in llamafactory style).
Returns:
    bleu (float): BLEU-4 on a 0-100 scale.
    tokenizers (str): tokenizers used in corpus style ("13a", "zh" or "13a+zh"),
        "nltk-chars" in llamafactory style.
Examples:
    >>> bleu = evaluate.load("/abs/path/chatsft_bleu", keep_in_memory=True)
    >>> round(bleu.compute(predictions=["我喜欢猫"], references=["我喜欢猫"])["bleu"], 2)
    100.0
"""

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation",
    year = "2018",
    pages = "186--191",
}
"""

STYLES = ("corpus", "llamafactory")

# Scripts written without spaces between words: Han ideographs (incl. extensions B+),
# Japanese kana, CJK punctuation and full-width forms. Korean Hangul is deliberately absent:
# Korean separates words with spaces, so 13a suits it.
CJK_RE = re.compile(
    "[\u3000-\u303f\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\uff00-\uffef\U00020000-\U0003134f]"
)

# sacrebleu tokenizers are stateless and memoise their calls, so share one of each.
_TOKENIZERS = {"13a": Tokenizer13a(), "zh": TokenizerZh()}
# Sentence BLEU as in sacrebleu.sentence_bleu (exp smoothing, effective order).
_SENTENCE_BLEU = {name: BLEU(tokenize=name, effective_order=True) for name in _TOKENIZERS}


def tokenizer_for(prediction: str, reference: str) -> str:
    """sacrebleu tokenizer name for one pair: "zh" if either side has CJK text, else "13a"."""
    return "zh" if CJK_RE.search(prediction) or CJK_RE.search(reference) else "13a"


def corpus_bleu(predictions: list[str], references: list[str]) -> tuple[float, str]:
    """Corpus BLEU-4 with per-pair language-aware tokenization; returns (score, tokenizers)."""
    names = [tokenizer_for(p, r) for p, r in zip(predictions, references, strict=True)]
    # sacrebleu right-strips each segment before tokenizing; do the same so that
    # tokenize="none" on our output gives exactly sacrebleu's own statistics.
    hyps = [_TOKENIZERS[n](p.rstrip()) for n, p in zip(names, predictions, strict=True)]
    refs = [_TOKENIZERS[n](r.rstrip()) for n, r in zip(names, references, strict=True)]
    score = sacrebleu.corpus_bleu(hyps, [refs], tokenize="none").score
    return score, "+".join(sorted(set(names)))


def sentence_bleu_score(prediction: str, reference: str) -> float:
    """sacrebleu sentence BLEU (0-100) with the pair's language-aware tokenizer."""
    metric = _SENTENCE_BLEU[tokenizer_for(prediction, reference)]
    return metric.sentence_score(prediction, [reference]).score


def llamafactory_bleu(prediction: str, reference: str) -> float:
    """One sample's BLEU-4 exactly as LLaMA-Factory's ComputeSimilarity computes it."""
    score = sentence_bleu(
        [list(reference)], list(prediction), smoothing_function=SmoothingFunction().method3
    )
    return round(score * 100, 4)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ChatsftBleu(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(
        self,
        predictions: list[str],
        references: list[str],
        style: str = "corpus",
        per_sample: bool = False,
    ) -> dict:
        if style not in STYLES:
            raise ValueError(f"Unknown BLEU style {style!r}; expected one of {STYLES}")
        if len(predictions) != len(references):
            raise ValueError(f"Got {len(predictions)} predictions but {len(references)} references")
        if not predictions:
            raise ValueError("BLEU needs at least one prediction/reference pair")

        if style == "llamafactory":
            scores = [llamafactory_bleu(p, r) for p, r in zip(predictions, references, strict=True)]
            # np.mean, not sum()/len(): LLaMA-Factory averages with numpy (pairwise sums).
            result = {"bleu": float(np.mean(scores)), "tokenizers": "nltk-chars"}
            if per_sample:
                result["bleu_per_sample"] = scores
            return result

        score, names = corpus_bleu(predictions, references)
        result = {"bleu": score, "tokenizers": names}
        if per_sample:
            result["bleu_per_sample"] = [
                sentence_bleu_score(p, r) for p, r in zip(predictions, references, strict=True)
            ]
        return result
