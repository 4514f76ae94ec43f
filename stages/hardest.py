"""Stage hardest: the loss of every training conversation under models/sft; the highest-loss
ones, with the model's reply, to metrics/hardest.{md,jsonl}."""

import time

from chatsft.errors import user_errors_exit
from chatsft.evaluation.hardest import hardest, hardest_markdown
from chatsft.generation import load_for_inference
from chatsft.io import read_jsonl, write_jsonl, write_text
from chatsft.modeling import load_tokenizer
from chatsft.stage import start_stage
from chatsft.template import ChatEncoder

SFT_DIR = "models/sft"
TRAIN = "data/clean/train.jsonl"
MARKDOWN = "metrics/hardest.md"
ROWS = "metrics/hardest.jsonl"


@user_errors_exit
def main() -> None:
    start = time.perf_counter()
    params = start_stage(["hardest", "evaluate", "tokenize", "model"], [MARKDOWN, ROWS])
    m, t = params.model, params.tokenize
    tokenizer = load_tokenizer(SFT_DIR, trust_remote_code=m.trust_remote_code)
    model = load_for_inference(SFT_DIR, m.dtype, m.device_map, m.attn_implementation,
                               trust_remote_code=m.trust_remote_code)
    # The template variables are those models/sft was saved with: the tokenize stage's.
    encoder = ChatEncoder(tokenizer, train_on=t.train_on, ignore_index=t.ignore_index,
                          max_length=t.max_length, train_reasoning=t.train_on_reasoning,
                          mask_empty_think=t.mask_empty_think)
    rows, summary = hardest(model, tokenizer, encoder, read_jsonl(TRAIN), t.max_length,
                            params.hardest.samples, params.evaluate.generation, TRAIN)
    write_jsonl(ROWS, rows)
    write_text(MARKDOWN, hardest_markdown(rows, summary))
    print(f"hardest: {summary} in {time.perf_counter() - start:.1f} s; see {MARKDOWN}")


if __name__ == "__main__":
    main()
