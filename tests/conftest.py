"""Session fixtures: tiny real tokenizers and models, built once, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
# Next to the checkout (../shared), or the machine's shared folder for a worktree elsewhere.
REAL_DATA = next((p for p in (ROOT.parent / "shared" / "data" / "real",
                              Path("/work/shared/data/real")) if p.is_dir()),
                 ROOT.parent / "shared" / "data" / "real")


@pytest.fixture(scope="session")
def demo_records() -> list[dict]:
    from chatsft.data.demo import generate_demo

    return generate_demo(seed=0, n=400)


@pytest.fixture(scope="session")
def chatml_tokenizer(demo_records):
    """A byte-level BPE tokenizer with Qwen2.5's ChatML specials and template."""
    from chatsft.model.scratch import train_tokenizer

    texts = (m["content"] for r in demo_records for m in r["messages"])
    return train_tokenizer(texts, vocab_size=600)


@pytest.fixture(scope="session")
def tiny_sizes():
    from chatsft.params import ScratchModel

    return ScratchModel(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=512, seed=0,
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, chatml_tokenizer, tiny_sizes) -> Path:
    """A saved tiny Qwen2 model + tokenizer directory (like models/base for scratch)."""
    from chatsft.model.scratch import build_scratch_model

    out = tmp_path_factory.mktemp("tiny_model")
    model = build_scratch_model(chatml_tokenizer, tiny_sizes)
    model.save_pretrained(out)
    chatml_tokenizer.save_pretrained(out)
    return out


@pytest.fixture()
def tiny_model(tiny_model_dir):
    """A fresh copy of the tiny model for each test (tests may train it)."""
    from chatsft.model.load import load_model

    return load_model(tiny_model_dir)


# The reproduced pipeline clone shared by the end-to-end and experiment tests.
from tests.pipeline_clone import pipeline_repo  # noqa: E402, F401


@pytest.fixture(scope="session")
def bigram_model_dir(tmp_path_factory, chatml_tokenizer, tiny_sizes):
    """Factory of saved tiny Qwen2 models whose next token depends only on the current one:
    `make(transitions, default)` (see `tests.bigram.bigram_model`). `eos_token` replaces the
    tokenizer's and model's eos (like a base model's <|endoftext|>).
    """
    import copy

    from tests.bigram import bigram_model

    def make(transitions: dict[int, int], default: int | None, eos_token: str | None = None,
             max_position_embeddings: int = 512) -> Path:
        tok = copy.deepcopy(chatml_tokenizer)
        sizes = tiny_sizes.model_copy(update={"max_position_embeddings": max_position_embeddings})
        model = bigram_model(tok, sizes, transitions, default)
        if eos_token:
            tok.eos_token = eos_token
            model.generation_config.eos_token_id = [tok.convert_tokens_to_ids(eos_token)]
        out = tmp_path_factory.mktemp("bigram")
        model.save_pretrained(out)
        tok.save_pretrained(out)
        return out

    return make


@pytest.fixture(scope="session")
def two_word_model(bigram_model_dir, chatml_tokenizer) -> tuple[Path, str]:
    """A model that answers every prompt with the same two words, then <|im_end|>; and that
    answer, decoded."""
    from tests.test_generation import prompt_end, words

    tok = chatml_tokenizer
    a, b = words(tok, 2)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    path = bigram_model_dir({prompt_end(tok): a, a: b, b: im_end}, default=b)
    return path, tok.decode([a, b])
