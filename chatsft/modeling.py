"""The starting model: a tiny Qwen2 built from scratch, or any causal LM from the hub or disk.

`models/base/` always holds a tokenizer with a chat template and a `base.json` saying where
the weights come from; scratch weights are saved there, hub weights are loaded by pinned
revision rather than copied (a 72B checkpoint should not be duplicated into the pipeline).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

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
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.utils.chat_template_utils import _compile_jinja_template

from chatsft.attention import NAME as VARLEN_SDPA
from chatsft.attention import supports_varlen_sdpa
from chatsft.errors import UserError
from chatsft.io import atomic_path, read_jsonl, write_json
from chatsft.params import ModelParams, ScratchModel

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


class ModelLoadError(UserError):
    """The model or tokenizer cannot be loaded; the message says which and why."""


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
    template = _compile_jinja_template(CHATML_TEMPLATE)
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


def load_pretrained_tokenizer(params: ModelParams) -> tuple[PreTrainedTokenizerBase, str]:
    """Tokenizer of a hub id or local directory, and the resolved revision (commit)."""
    try:
        where = {"revision": params.revision, "trust_remote_code": params.trust_remote_code}
        tok = AutoTokenizer.from_pretrained(params.name_or_path, **where)
        config = AutoConfig.from_pretrained(params.name_or_path, **where)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model.name_or_path={params.name_or_path!r}: {err}") from None
    if not tok.chat_template:
        raise ModelLoadError(
            f"{params.name_or_path}: the tokenizer has no chat template; use an instruct or "
            "chat model, or a tokenizer that carries one"
        )
    if tok.pad_token is None:
        # Our labels come from template spans, never from pad positions, so pad == eos is safe.
        tok.pad_token = tok.eos_token
    revision = getattr(config, "_commit_hash", None) or params.revision
    return tok, revision


def attention_implementation(choice: str = "auto", config=None) -> str:
    """`auto`: flash attention 2 on CUDA when flash-attn is installed; on CPU `sdpa_varlen`
    (SDPA per packed sample, chatsft/attention.py) for models with full attention in every
    layer; else PyTorch SDPA (a block-diagonal mask on packed rows). Each keeps packed samples
    apart."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available():
        return "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    return VARLEN_SDPA if config is not None and supports_varlen_sdpa(config) else "sdpa"


def load_model(base_dir: str | Path, dtype: str = "float32", device_map: str | None = None,
               attn_implementation: str = "auto"):
    """Load the model `models/base` (or a trained `models/sft`) refers to, safetensors only."""
    base_dir = Path(base_dir)
    info_path = base_dir / "base.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    source = info.get("weights_from") or str(base_dir)
    where = {"trust_remote_code": info.get("trust_remote_code", False)}
    if info.get("weights_from"):
        where["revision"] = info.get("revision")
    kwargs = {
        "dtype": "auto" if dtype == "auto" else getattr(torch, dtype),
        "use_safetensors": True,
        **where,
    }
    if device_map:
        kwargs["device_map"] = device_map
    try:
        # Only `auto` looks at the architecture (sliding windows rule out sdpa_varlen).
        config = AutoConfig.from_pretrained(_config_source(source), **where) if (
            attn_implementation == "auto") else None
        kwargs["attn_implementation"] = attention_implementation(attn_implementation, config)
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{source}: cannot load the model: {err}") from None


def _config_source(source: str) -> str:
    """Where the model's config lives: an unmerged LoRA adapter's is its base model's."""
    adapter = Path(source) / "adapter_config.json"
    return json.loads(adapter.read_text())["base_model_name_or_path"] if adapter.is_file() \
        else source


def make_readable(folder: str | Path) -> None:
    """Give `folder` and everything in it the permissions the umask allows (usually 0755 and
    0644), as a plain write would: safetensors writes weights 0600 and a temporary folder is
    0700, which would hide a model in a shared folder from its other users."""
    umask = os.umask(0)
    os.umask(umask)
    folder = Path(folder)
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def load_tokenizer(model_dir: str | Path) -> PreTrainedTokenizerBase:
    info_path = Path(model_dir) / "base.json"
    trust = json.loads(info_path.read_text()).get("trust_remote_code", False) if (
        info_path.exists()) else False
    return AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=trust)


def prepare_base(params: ModelParams, train_split: str | Path, out_dir: str | Path) -> dict:
    """Write the starting point to `out_dir` atomically and return what `base.json` records.

    scratch: a tokenizer trained on the training split's texts and a new Qwen2 model. Otherwise
    only the tokenizer and a pinned reference (hub id or directory, resolved revision): the
    weights are read from there at train time rather than copied.
    """
    with atomic_path(out_dir, is_dir=True) as tmp:
        if params.name_or_path == "scratch":
            tokenizer = train_tokenizer(tokenizer_texts(read_jsonl(train_split)),
                                        params.scratch.vocab_size,
                                        params.scratch.max_position_embeddings)
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
        make_readable(tmp)
    return info
