"""The scratch model: chatsft's ChatML template (with tool calls), a byte-level BPE tokenizer
trained on the training split, and a small Qwen2 built from `model.scratch`'s sizes."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import torch
from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from chatsft.chat_template.render import compile_template
from chatsft.params import ScratchModel

CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Tool markers, added (not special) tokens as in Qwen2.5/Qwen3: one token each for the model to
# emit and for a parser to find, and, being in the template, control tokens: the same text
# typed inside a message is encoded as plain text, so data cannot forge a call or a result.
TOOL_TOKENS = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"]
# Qwen2.5-Instruct's tool layout (the tools list in the system turn, each call as
# `<tool_call>` JSON in the assistant turn, results in a user turn as `<tool_response>`), but
# without its default system prompt. Without tools or tool messages the output is plain ChatML.
_TOOLS_SYSTEM = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' }}"
    "{%- for tool in tools %}{{- '\\n' }}{{- tool | tojson }}{%- endfor %}"
    "{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\"name\": "
    "<function-name>, \"arguments\": <args-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- endif %}"
)
_TOOL_CALLS = (
    "{%- for tool_call in message['tool_calls'] %}"
    "{%- if not loop.first or message['content'] %}{{- '\\n' }}{%- endif %}"
    "{%- if tool_call['function'] is defined %}{%- set tool_call = tool_call['function'] %}"
    "{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + tool_call['name'] + '\", \"arguments\": ' }}"
    "{%- if tool_call['arguments'] is string %}{{- tool_call['arguments'] }}"
    "{%- else %}{{- tool_call['arguments'] | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
)
_TOOL_RESULT = (
    "{%- if loop.first or messages[loop.index0 - 1]['role'] != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1]['role'] != 'tool' %}"
    "{{- '<|im_end|>\\n' }}{%- endif %}"
)


def _chatml(markers: bool) -> str:
    """The scratch template; `markers` puts `{% generation %}` around each reply."""
    start, end = ("{% generation %}", "{% endgeneration %}") if markers else ("", "")
    return (
        _TOOLS_SYSTEM
        + "{%- for message in messages %}"
        "{%- if loop.first and message['role'] == 'system' and tools %}"
        "{%- elif message['role'] == 'assistant' %}"
        "{{- '<|im_start|>assistant\\n' }}" + start + "{{- message['content'] }}"
        "{%- if message['tool_calls'] %}" + _TOOL_CALLS + "{%- endif %}"
        "{{- '<|im_end|>' }}" + end + "{{- '\\n' }}"
        "{%- elif message['role'] == 'tool' %}" + _TOOL_RESULT
        + "{%- else %}"
        "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
        "{%- endif %}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )


CHATML_TEMPLATE = _chatml(markers=False)
# The same rendering with `{% generation %}` markers around each reply and its <|im_end|>
# (what chatsft supervises), for tools that need them: transformers'
# return_assistant_tokens_mask, TRL's assistant_only_loss.
CHATML_GENERATION_TEMPLATE = _chatml(markers=True)
# Qwen2's pre-tokenizer split (GPT-4 style, single digits).
QWEN_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int,
                    model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the ChatML special tokens, the tool markers and the
    chat template; `model_max_length` is the model's context (max_position_embeddings)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=CHATML_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=model_max_length,
    )
    out.add_tokens([AddedToken(t, special=False, normalized=False) for t in TOOL_TOKENS])
    return out


def tokenizer_texts(records: Iterable[dict]) -> Iterator[str]:
    """What the scratch tokenizer learns from: the text of every message and, for records
    that use tools, their whole rendering between control tokens (the tools prompt, tool
    definitions, call JSON, results), which the model reads and writes as much as content."""
    template = compile_template(CHATML_TEMPLATE)
    control = re.compile("|".join(map(re.escape, CHATML_SPECIALS + TOOL_TOKENS)))
    for rec in records:
        messages, tools = rec["messages"], rec.get("tools")
        if tools or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
            text = template.render(messages=messages, tools=tools, add_generation_prompt=False)
            yield from (t for t in control.split(text) if t)
        else:
            yield from (m["content"] for m in messages)


def build_scratch_model(
    tokenizer: PreTrainedTokenizerBase, sizes: ScratchModel
) -> Qwen2ForCausalLM:
    torch.manual_seed(sizes.seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_hidden_layers,
        num_attention_heads=sizes.num_attention_heads,
        num_key_value_heads=sizes.num_key_value_heads,
        max_position_embeddings=sizes.max_position_embeddings,
        rope_theta=sizes.rope_theta,
        tie_word_embeddings=sizes.tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    return model
