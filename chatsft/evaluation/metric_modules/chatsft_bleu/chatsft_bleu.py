"""chatsft_bleu: the BLEU-4 of `chatsft.evaluation.metrics` as an `evaluate` module.

Load it by path (never from the Hub): `evaluate.load("/abs/path/chatsft_bleu",
keep_in_memory=True)`. Corpus style: one sacrebleu corpus BLEU, the tokenizer ("zh" or
"13a") chosen per pair from the reference; llamafactory style: LLaMA-Factory's character-level
nltk sentence BLEU, averaged.
"""

import chatsft.evaluation.evaluate_module as base


class ChatsftBleu(base.RegistryMetric):
    names = ("bleu4",)
    description = "BLEU-4 (0-100), sacrebleu corpus BLEU with per-pair zh/13a tokenization."
    urls = ("https://github.com/mjpost/sacrebleu",)
    citation = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation",
    year = "2018",
    pages = "186--191",
}
"""
