"""chatsft_rouge: the ROUGE-1/2/L F1 of `chatsft.evaluation.metrics` as an `evaluate` module.

Load it by path (never from the Hub): `evaluate.load("/abs/path/chatsft_rouge",
keep_in_memory=True)`. Corpus style: rouge_score F1 with jieba words for Chinese, averaged;
llamafactory style: LLaMA-Factory's rouge_chinese scores.
"""

import chatsft.evaluation.evaluate_module as base


class ChatsftRouge(base.RegistryMetric):
    names = ("rouge1", "rouge2", "rougeL")
    description = "ROUGE-1/2/L F1 (0-100) with jieba segmentation for Chinese."
    urls = ("https://github.com/google-research/google-research/tree/master/rouge",
            "https://github.com/Isaac-JL-Chen/rouge_chinese")
    citation = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    pages = "74--81",
}
"""
