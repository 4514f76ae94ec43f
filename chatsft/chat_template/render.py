"""The one module that uses transformers' private chat-template helpers.

transformers renders chat templates with helpers it does not export (their names start with
an underscore and may change in any release); chatsft needs the same rendering, so that what
it trains on is byte for byte what `apply_chat_template` gives at inference. Every such use
is here, behind a public name, so a transformers upgrade has one place to check (a test
greps that no other module imports a private transformers name).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import jinja2
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import (
    _alias_reasoning_fields,
    _compile_jinja_template,
    _get_control_token_patterns,
    _get_template_variables,
)

__all__ = ["alias_reasoning_fields", "attention_implementation", "compile_template",
           "control_pattern", "control_tokens", "template_variables"]


def control_tokens(tokenizer: PreTrainedTokenizerBase, source: str) -> list[str]:
    """The template's control tokens, as `apply_chat_template`'s sanitizer finds them."""
    return tokenizer._get_control_tokens(source)


def compile_template(source: str) -> jinja2.Template:
    """The template compiled as transformers compiles it (its sandbox, filters and globals)."""
    return _compile_jinja_template(source)


def control_pattern(tokens: Iterable[str]) -> re.Pattern:
    """transformers' regex that finds these control tokens in text."""
    return _get_control_token_patterns(tuple(tokens))[0]


def template_variables(source: str) -> set[str]:
    """The variables the template reads (e.g. `tools`)."""
    return _get_template_variables(source)


def attention_implementation(model: PreTrainedModel) -> str:
    """The attention kernel the loaded model runs (no public accessor in transformers)."""
    return model.config._attn_implementation


def alias_reasoning_fields(messages: list[dict]) -> list[dict]:
    """The messages with reasoning under each field name templates read, as transformers
    passes them to a template."""
    return _alias_reasoning_fields(messages)
