"""Chat-template variables, the same at training and at inference.

Templates read variables besides the messages: `enable_thinking` (Qwen3), `date_string` and the
`strftime_now` function (Llama-3.x writes today's date into the system turn). The tokenize stage
renders with `tokenize.template_kwargs` and a pinned date, so its output does not change from
day to day; the train stage saves both in the tokenizer's `tokenizer_config.json`
(`chat_template_kwargs`, `chat_template_date`), where evaluate, predict, chat and serve read
them back, so inference renders exactly as training did. Plain transformers ignores the two
keys: pass them to `apply_chat_template` yourself (`date_string` for the date).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from chatsft.io import write_json
from chatsft.params import TokenizeParams

KWARGS_KEY, DATE_KEY = "chat_template_kwargs", "chat_template_date"
USED_FILE = "chat_template.json"  # in data/tokenized: what tokenize rendered with
DEFAULT_DATE = TokenizeParams.model_fields["template_date"].default


def strftime_at(date: str | None) -> Callable[[str], str]:
    """`strftime_now` for a template: the pinned ISO date, or the clock when None."""
    if date is None:
        return lambda fmt: dt.datetime.now().strftime(fmt)
    fixed = dt.datetime.fromisoformat(date)
    return fixed.strftime


def render_variables(kwargs: dict, date: str | None) -> dict:
    return {**kwargs, "strftime_now": strftime_at(date)}


def saved_kwargs(tokenizer: PreTrainedTokenizerBase) -> tuple[dict, str | None]:
    """The template variables and date the tokenizer was saved with ({} and the default date
    for a tokenizer chatsft has not saved)."""
    init = getattr(tokenizer, "init_kwargs", {}) or {}
    return dict(init.get(KWARGS_KEY) or {}), init.get(DATE_KEY, DEFAULT_DATE)


def stamp(tokenizer: PreTrainedTokenizerBase, kwargs: dict, date: str | None) -> None:
    """Record the variables and date in the tokenizer, so `save_pretrained` writes them."""
    tokenizer.init_kwargs[KWARGS_KEY] = dict(kwargs)
    tokenizer.init_kwargs[DATE_KEY] = date


def write_used(path: Path, kwargs: dict, date: str | None) -> None:
    """What the tokenize stage rendered with, for the train stage to stamp (`stamp_used`)."""
    write_json(path, {KWARGS_KEY: kwargs, DATE_KEY: date})


def stamp_used(tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """Stamp the tokenizer with the variables the tokenized data was rendered with (data
    tokenized by other means, without the file, leaves the tokenizer as it is)."""
    if not Path(path).is_file():
        return
    used = json.loads(Path(path).read_text(encoding="utf-8"))
    stamp(tokenizer, used[KWARGS_KEY], used[DATE_KEY])
