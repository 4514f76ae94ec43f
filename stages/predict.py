"""Stage predict: batch inference over predict.input -> models/predictions.jsonl."""

import time

from chatsft.errors import user_errors_exit
from chatsft.generation import load_for_inference
from chatsft.io import write_jsonl
from chatsft.modeling import load_tokenizer
from chatsft.predict import check_strict, predict_file, summary
from chatsft.stage import start_stage

SFT_DIR = "models/sft"
OUTPUT = "models/predictions.jsonl"


@user_errors_exit
def main() -> None:
    start = time.perf_counter()
    params = start_stage(["predict", "model"], [OUTPUT])
    m = params.model
    tokenizer = load_tokenizer(SFT_DIR, trust_remote_code=m.trust_remote_code)
    model = load_for_inference(SFT_DIR, m.dtype, m.device_map, m.attn_implementation,
                               trust_remote_code=m.trust_remote_code)
    rows = predict_file(model, tokenizer, params.predict.input, params.predict.generation)
    write_jsonl(OUTPUT, rows)
    print(f"predict: {summary(rows, OUTPUT)} in {time.perf_counter() - start:.1f} s")
    check_strict(rows, params.predict.strict, OUTPUT)


if __name__ == "__main__":
    main()
