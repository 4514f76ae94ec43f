"""Stage base: models/base/ holds the starting tokenizer (with chat template) and model."""

from chatsft.errors import user_errors_exit
from chatsft.io import atomic_path, read_jsonl, write_json
from chatsft.modeling import build_scratch_model, load_pretrained_tokenizer, train_tokenizer
from chatsft.params import load_params

TRAIN_SPLIT = "data/clean/train.jsonl"
OUT_DIR = "models/base"


def conversation_texts(path: str):
    for rec in read_jsonl(path):
        for m in rec["messages"]:
            yield m["content"]


@user_errors_exit
def main() -> None:
    params = load_params().model
    with atomic_path(OUT_DIR, is_dir=True) as tmp:
        if params.name_or_path == "scratch":
            tokenizer = train_tokenizer(conversation_texts(TRAIN_SPLIT), params.scratch.vocab_size)
            model = build_scratch_model(tokenizer, params.scratch)
            model.save_pretrained(tmp)
            info = {"name_or_path": "scratch", "parameters": model.num_parameters(),
                    "vocab_size": len(tokenizer)}
        else:
            tokenizer, revision = load_pretrained_tokenizer(params)
            info = {"name_or_path": params.name_or_path, "weights_from": params.name_or_path,
                    "revision": revision, "trust_remote_code": params.trust_remote_code}
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "base.json", info)
    print(f"base: {info}")


if __name__ == "__main__":
    main()
