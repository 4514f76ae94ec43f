"""Tiny real tokenizers with the chat templates of real model families, built offline.

- `qwen25_tokenizer`: Qwen2.5-Instruct's specials, added `<tool_call>` tokens and template,
  tools section and default system prompt included (`chatsft.builtin_templates`).
- `llama3_tokenizer`: Llama-3-Instruct's specials (`<|begin_of_text|>`, `<|start_header_id|>`,
  `<|end_header_id|>`, `<|eot_id|>`), its BOS-adding post-processor and template; pad == eos.
- `generation_tokenizer`: ChatML with `{% generation %}` markers around each assistant reply
  and its `<|im_end|>`, for `return_assistant_tokens_mask`.
- `qwen3_tokenizer`: a Qwen3-style template that renders an empty think block only for the
  assistant turns after the last user message, so earlier turns render differently in a
  longer conversation (the "drops earlier reasoning" exception).
"""

from __future__ import annotations

import copy
import functools

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
from tokenizers.processors import TemplateProcessing
from transformers import PreTrainedTokenizerFast

from chatsft.builtin_templates import QWEN25_TEMPLATE
from chatsft.model.scratch import CHATML_GENERATION_TEMPLATE, train_tokenizer

# Meta-Llama-3-8B-Instruct's template, verbatim.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>",
                   "<|reserved_special_token_1|>", "<|start_header_id|>", "<|end_header_id|>",
                   "<|reserved_special_token_2|>", "<|reserved_special_token_3|>", "<|eot_id|>"]
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


QWEN3_TEMPLATE = (
    "{%- set ns = namespace(last_query=-1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_query = loop.index0 %}"
    "{%- endif %}{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' and loop.index0 > ns.last_query %}"
    "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

TOOL_TEXTS = [
    '{"name": "get_weather", "arguments": {"city": "北京"}}',
    '{"type": "function", "function": {"name": "get_weather", "description": "天气"}}',
    "<tools> </tools> <tool_response> </tool_response> You are Qwen, created by Alibaba Cloud.",
    # Qwen's tool prompt separates paragraphs with "\n\n", a single token in real vocabularies.
    *["# Tools\n\nYou may call one or more functions.\n\nParagraphs\n\nare separated."] * 40,
]


@functools.lru_cache(maxsize=1)
def training_texts() -> tuple[str, ...]:
    from chatsft.data.demo import generate_demo

    recs = generate_demo(seed=0, n=400)
    return tuple(m["content"] for r in recs for m in r["messages"]) + tuple(TOOL_TEXTS)


def _copy(tok: PreTrainedTokenizerFast) -> PreTrainedTokenizerFast:
    return copy.deepcopy(tok)


@functools.lru_cache(maxsize=1)
def _qwen25() -> PreTrainedTokenizerFast:
    tok = train_tokenizer(training_texts(), vocab_size=700)
    # Added, not special, as in Qwen2.5.
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t in ("<tool_call>", "</tool_call>")])
    tok.chat_template = QWEN25_TEMPLATE
    return tok


def qwen25_tokenizer() -> PreTrainedTokenizerFast:
    return _copy(_qwen25())


@functools.lru_cache(maxsize=1)
def _llama3() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=LLAMA3_SPECIALS, min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(training_texts(), trainer)
    bos = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )
    out = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
        chat_template=LLAMA3_TEMPLATE, model_max_length=1_000_000,
    )
    out.pad_token = out.eos_token  # as chatsft.model.load does for tokenizers without a pad
    return out


def llama3_tokenizer() -> PreTrainedTokenizerFast:
    return _copy(_llama3())


def _chatml_variant(template: str) -> PreTrainedTokenizerFast:
    tok = _copy(_qwen25())
    tok.chat_template = template
    return tok


def generation_tokenizer() -> PreTrainedTokenizerFast:
    return _chatml_variant(CHATML_GENERATION_TEMPLATE)


def qwen3_tokenizer() -> PreTrainedTokenizerFast:
    return _chatml_variant(QWEN3_TEMPLATE)


ALL = {"qwen25": qwen25_tokenizer, "llama3": llama3_tokenizer,
       "generation": generation_tokenizer}
