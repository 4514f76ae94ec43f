"""Stage hardest: the loss of every training conversation under the fine-tuned model; the
highest-loss ones, with the model's reply, to `Layout.hardest_md` and `Layout.hardest_rows`
(`chatsft data exclude` takes their ids)."""

from __future__ import annotations

import time
from pathlib import Path

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.config import Layout, Params
from chatsft.evaluation.hardest import hardest, hardest_markdown
from chatsft.inference.generation import load_for_inference
from chatsft.io import read_jsonl, write_jsonl, write_text
from chatsft.model.load import load_tokenizer

SECTIONS = ("hardest", "evaluate", "tokenize", "model")


def outputs(layout: Layout) -> list[Path]:
    return [layout.hardest_md, layout.hardest_rows]


def run(params: Params, layout: Layout) -> dict:
    start = time.perf_counter()
    m, t = params.model, params.tokenize
    tokenizer = load_tokenizer(layout.sft, trust_remote_code=m.trust_remote_code)
    model = load_for_inference(layout.sft, m.dtype, m.device_map, m.attn_implementation,
                               trust_remote_code=m.trust_remote_code)
    # The template variables are those the fine-tuned model was saved with: tokenize's.
    encoder = ChatEncoder(tokenizer, train_on=t.train_on, max_length=t.max_length,
                          train_reasoning=t.train_on_reasoning,
                          mask_empty_think=t.mask_empty_think)
    train = layout.split("train")
    rows, summary = hardest(model, tokenizer, encoder, read_jsonl(train), t.max_length,
                            params.hardest.samples, params.evaluate.generation, str(train))
    write_jsonl(layout.hardest_rows, rows)
    write_text(layout.hardest_md, hardest_markdown(rows, summary))
    print(f"hardest: {summary} in {time.perf_counter() - start:.1f} s; see {layout.hardest_md}")
    return summary
