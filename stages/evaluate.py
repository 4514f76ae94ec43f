"""Stage evaluate: metrics/eval.json (perplexity, BLEU, ROUGE), predictions, worst samples."""

from datasets import load_from_disk

from chatsft.errors import user_errors_exit
from chatsft.evaluation.run import evaluate_model, worst_table
from chatsft.io import read_jsonl, write_json, write_jsonl, write_text
from chatsft.modeling import load_model, load_tokenizer
from chatsft.params import load_params

SFT_DIR = "models/sft"
BASE_DIR = "models/base"
TOKENIZED = "data/tokenized"
TEST = "data/clean/test.jsonl"
METRICS = "metrics/eval.json"
PREDICTIONS = "metrics/eval_predictions.jsonl"
WORST = "metrics/eval_worst.md"


@user_errors_exit
def main() -> None:
    params = load_params()
    p = params.evaluate
    tokenized = load_from_disk(TOKENIZED)
    test = read_jsonl(TEST)
    tokenizer = load_tokenizer(SFT_DIR)
    model = load_model(SFT_DIR, params.model.dtype, params.model.device_map)
    metrics, rows = evaluate_model(model, tokenizer, tokenized, test, p,
                                   params.tokenize.ignore_index)
    result = {"sft": metrics}
    if p.compare_base:
        base = load_model(BASE_DIR, params.model.dtype, params.model.device_map)
        result["base"], _ = evaluate_model(base, tokenizer, tokenized, test, p,
                                           params.tokenize.ignore_index)
    write_json(METRICS, result)
    write_jsonl(PREDICTIONS, rows)
    write_text(WORST, worst_table(rows))
    print(f"evaluate: {result}")


if __name__ == "__main__":
    main()
