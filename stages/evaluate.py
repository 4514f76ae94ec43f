"""Stage evaluate: metrics/eval.json (perplexity, BLEU, ROUGE), predictions, worst samples."""

import time

from datasets import load_from_disk

from chatsft.errors import user_errors_exit
from chatsft.evaluation.run import evaluate_model, worst_table
from chatsft.generation import load_for_inference
from chatsft.io import read_jsonl, write_json, write_jsonl, write_text
from chatsft.modeling import load_tokenizer
from chatsft.stage import start_stage

SFT_DIR = "models/sft"
BASE_DIR = "models/base"
TOKENIZED = "data/tokenized"
TEST = "data/clean/test.jsonl"
METRICS = "metrics/eval.json"
PREDICTIONS = "metrics/eval_predictions.jsonl"
WORST = "metrics/eval_worst.md"


@user_errors_exit
def main() -> None:
    start = time.perf_counter()
    params = start_stage(["evaluate", "tokenize", "model"], [METRICS, PREDICTIONS, WORST])
    p, m = params.evaluate, params.model
    tokenized = load_from_disk(TOKENIZED)
    test = read_jsonl(TEST)
    tokenizer = load_tokenizer(SFT_DIR, trust_remote_code=m.trust_remote_code)
    model = load_for_inference(SFT_DIR, m.dtype, m.device_map, m.attn_implementation,
                               trust_remote_code=m.trust_remote_code)
    metrics, rows = evaluate_model(model, tokenizer, tokenized, test, p,
                                   params.tokenize.ignore_index)
    result = {"sft": metrics}
    if p.compare_base:
        del model
        base = load_for_inference(BASE_DIR, m.dtype, m.device_map, m.attn_implementation,
                                  trust_remote_code=m.trust_remote_code)
        result["base"], _ = evaluate_model(base, tokenizer, tokenized, test, p,
                                           params.tokenize.ignore_index)
    write_json(METRICS, result)
    write_jsonl(PREDICTIONS, rows)
    write_text(WORST, worst_table(rows))
    for name, values in result.items():
        print(f"evaluate {name}: {values}")
    print(f"evaluate: {len(rows)} test prompts in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
