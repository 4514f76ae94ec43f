"""Text-similarity metrics for generated chat answers: BLEU-4, ROUGE-1/2/L F1, exact match.

The numbers come from two `evaluate` modules that live in this repository
(`metric_modules/chatsft_bleu` and `metric_modules/chatsft_rouge`) and are loaded by
absolute path. For a local path `evaluate.load` never contacts the Hugging Face Hub: it
copies the script into its dynamic-modules cache (~/.cache/huggingface/modules) and imports
it from there. Only a name that does not exist locally (e.g. "rouge") would be looked up on
the Hub, so `load_metric` refuses unknown names instead of passing them on. No environment
variable (HF_HUB_OFFLINE, HF_EVALUATE_OFFLINE) is needed.

All scores are on a 0-100 scale. Two styles are available:

style="corpus" (default)
    * bleu4: ONE corpus-level sacrebleu BLEU-4: clipped n-gram counts and lengths are summed
      over all samples before the geometric mean and a single brevity penalty. Each pair is
      tokenized with sacrebleu's "zh" tokenizer (every Chinese character is a token, other
      text as 13a) if either side contains CJK text, else with "13a" (WMT word tokens), so
      English, Chinese and mixed corpora all get one standard score.
    * rouge1/rouge2/rougeL: rouge_score F1 per sample, then the mean. Words: jieba words
      for CJK, Unicode letter/digit runs otherwise; lowercased; punctuation dropped.
    * exact_match: share of pairs equal after stripping surrounding whitespace.

style="llamafactory" (to compare with numbers reported by LLaMA-Factory's
ComputeSimilarity in src/llamafactory/train/sft/metric.py and scripts/eval_bleu_rouge.py)
    * bleu4: mean over samples of nltk `sentence_bleu([list(ref)], list(pred),
      smoothing_function=SmoothingFunction().method3)` on CHARACTERS, for every language:
      English is scored on letter n-grams, which gives much higher numbers than word BLEU.
    * rouge1/rouge2/rougeL: `rouge_chinese.Rouge` on space-joined `jieba.cut` tokens
      (re-implemented, same results): case-sensitive, punctuation and whitespace tokens count
      as words, ROUGE-1/2 use DISTINCT n-grams (a repeated word is counted once), ROUGE-L is
      the plain LCS F1.
    * every per-sample value is rounded to 4 decimals before averaging, as LLaMA-Factory does.
    * exact_match: same definition as in corpus style (LLaMA-Factory has no such metric).

Why corpus BLEU is our default: BLEU was defined at corpus level, and that is what
sacrebleu, WMT and papers report, so the numbers are comparable and reproducible from the
tokenizer name. An average of sentence BLEUs is a different metric: it needs smoothing,
which decides the score of every short answer (and the smoothing method changes the
numbers), it weights a one-word answer like a long one, and on characters it stops being
comparable with word-level BLEU on English at all. Use "llamafactory" only to compare with
LLaMA-Factory runs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import evaluate

METRIC_MODULES_DIR = Path(__file__).resolve().parent / "metric_modules"
METRIC_NAMES = ("chatsft_bleu", "chatsft_rouge")
STYLES = ("corpus", "llamafactory")


@functools.cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load one of the in-repo evaluate modules ("chatsft_bleu" or "chatsft_rouge") by path.

    Cached: each module is imported once per process. keep_in_memory=True keeps evaluate
    from writing Arrow cache files and lock files for every compute() call.
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; available: {', '.join(METRIC_NAMES)}")
    # Imported here, not at the top: `import evaluate` pulls in transformers' pipelines
    # (seconds), which commands that never score text should not pay for.
    import evaluate

    path = METRIC_MODULES_DIR / name
    if not (path / f"{name}.py").is_file():
        # Never let evaluate fall back to a Hub lookup for a missing local module.
        raise FileNotFoundError(f"Metric module script not found: {path / f'{name}.py'}")
    return evaluate.load(str(path), keep_in_memory=True)


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


def _exact_match(prediction: str, reference: str) -> float:
    return 100.0 if prediction.strip() == reference.strip() else 0.0


def compute_text_metrics(
    predictions: list[str], references: list[str], style: str = "corpus"
) -> dict[str, float]:
    """bleu4, rouge1, rouge2, rougeL and exact_match (0-100) over all samples.

    style is "corpus" (default) or "llamafactory"; see the module docstring for how they
    differ. Raises ValueError for lists of different lengths, empty lists or unknown style.
    """
    if style not in STYLES:
        raise ValueError(f"Unknown style {style!r}; expected one of {STYLES}")
    _check_inputs(predictions, references)
    bleu = load_metric("chatsft_bleu").compute(
        predictions=predictions, references=references, style=style
    )
    rouge = load_metric("chatsft_rouge").compute(
        predictions=predictions, references=references, style=style
    )
    matches = [_exact_match(p, r) for p, r in zip(predictions, references, strict=True)]
    return {
        "bleu4": float(bleu["bleu"]),
        "rouge1": float(rouge["rouge1"]),
        "rouge2": float(rouge["rouge2"]),
        "rougeL": float(rouge["rougeL"]),
        "exact_match": sum(matches) / len(matches),
    }


def per_sample_scores(predictions: list[str], references: list[str]) -> list[dict[str, float]]:
    """`sample_scores` for many pairs at once (one compute() call per metric, not per pair)."""
    _check_inputs(predictions, references)
    bleu = load_metric("chatsft_bleu").compute(
        predictions=predictions, references=references, per_sample=True
    )
    rouge = load_metric("chatsft_rouge").compute(
        predictions=predictions, references=references, per_sample=True
    )
    return [
        {"bleu4": float(b), "rougeL": float(r), "exact_match": _exact_match(p, ref)}
        for b, r, p, ref in zip(
            bleu["bleu_per_sample"],
            rouge["rougeL_per_sample"],
            predictions,
            references,
            strict=True,
        )
    ]


def sample_scores(prediction: str, reference: str) -> dict[str, float]:
    """Scores of one sample for the per-sample predictions file (0-100).

    bleu4 is sacrebleu's sentence BLEU (exp smoothing, effective order) with the same
    language-aware tokenizer as the corpus score; rougeL is the corpus-style ROUGE-L F1;
    exact_match is 100 or 0. Empty strings score 0 (exact_match 100 if both are empty).
    """
    return per_sample_scores([prediction], [reference])[0]
