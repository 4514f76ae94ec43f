"""Stage evaluate_base: the untrained base model's scores, which the evaluate stage reports
beside the fine-tuned model's.

They depend only on the base model, the data and the evaluate params, so they are a stage of
their own (cached by DVC): an experiment on a train param does not score the base again.
"""

from __future__ import annotations

from pathlib import Path

from chatsft.config import Layout, Params
from chatsft.io import write_json
from chatsft.model.load import load_tokenizer
from chatsft.pipeline.evaluate import SECTIONS, score
from chatsft.template_kwargs import USED_FILE, stamp_used

__all__ = ["SECTIONS", "outputs", "run"]


def outputs(layout: Layout) -> list[Path]:
    return [layout.base_eval]


def run(params: Params, layout: Layout) -> dict:
    """The base model's scores ({} with evaluate.compare_base off), rendered with the
    template variables the fine-tuned model is saved with."""
    result = {}
    if params.evaluate.compare_base:
        tokenizer = load_tokenizer(layout.base, trust_remote_code=params.model.trust_remote_code)
        stamp_used(tokenizer, layout.tokenized / USED_FILE)
        result, _ = score(params, layout.base, tokenizer, layout)
        print(f"evaluate_base: {result}")
    write_json(layout.base_eval, result)
    return result
