"""Stage predict: batch inference over predict.input -> `Layout.predictions`."""

from __future__ import annotations

import time
from pathlib import Path

from chatsft.config import Layout, Params
from chatsft.inference.generation import load_for_inference
from chatsft.inference.predict import check_strict, predict_file, summary
from chatsft.io import write_jsonl
from chatsft.model.load import load_tokenizer

SECTIONS = ("predict", "model")


def outputs(layout: Layout) -> list[Path]:
    return [layout.predictions]


def run(params: Params, layout: Layout) -> dict:
    start = time.perf_counter()
    m = params.model
    tokenizer = load_tokenizer(layout.sft, trust_remote_code=m.trust_remote_code)
    model = load_for_inference(layout.sft, m.dtype, m.device_map, m.attn_implementation,
                               trust_remote_code=m.trust_remote_code)
    rows = predict_file(model, tokenizer, params.predict.input, params.predict.generation)
    write_jsonl(layout.predictions, rows)
    output = str(layout.predictions)
    print(f"predict: {summary(rows, output)} in {time.perf_counter() - start:.1f} s")
    check_strict(rows, params.predict.strict, output)
    return {"predictions": len(rows)}
