"""Stage evaluate: perplexity, BLEU, ROUGE and tool calls of the fine-tuned model on the test
split, with the untrained base model's scores (stage evaluate_base) beside them."""

from __future__ import annotations

import json
import time
from pathlib import Path

from datasets import load_from_disk
from transformers import PreTrainedTokenizerBase

from chatsft.config import Layout, Params
from chatsft.evaluation.run import evaluate_model, worst_table
from chatsft.inference.generation import load_for_inference
from chatsft.io import read_jsonl, write_json, write_jsonl, write_text
from chatsft.model.load import load_tokenizer

SECTIONS = ("evaluate", "tokenize", "model")


def outputs(layout: Layout) -> list[Path]:
    return [layout.eval_metrics, layout.eval_predictions, layout.eval_worst]


def score(params: Params, model_dir: Path, tokenizer: PreTrainedTokenizerBase,
          layout: Layout) -> tuple[dict, list[dict]]:
    """`evaluate_model` on the model in `model_dir`."""
    m = params.model
    model = load_for_inference(model_dir, m.dtype, m.device_map, m.attn_implementation,
                               trust_remote_code=m.trust_remote_code)
    return evaluate_model(model, tokenizer, load_from_disk(layout.tokenized),
                          read_jsonl(layout.split("test")), params.evaluate)


def run(params: Params, layout: Layout) -> dict:
    start = time.perf_counter()
    tokenizer = load_tokenizer(layout.sft, trust_remote_code=params.model.trust_remote_code)
    metrics, rows = score(params, layout.sft, tokenizer, layout)
    result = {"sft": metrics}
    if params.evaluate.compare_base:
        result["base"] = json.loads(layout.base_eval.read_text(encoding="utf-8"))
    write_json(layout.eval_metrics, result)
    write_jsonl(layout.eval_predictions, rows)
    write_text(layout.eval_worst, worst_table(rows))
    for name, values in result.items():
        print(f"evaluate {name}: {values}")
    print(f"evaluate: {len(rows)} test prompts in {time.perf_counter() - start:.1f} s")
    return result
