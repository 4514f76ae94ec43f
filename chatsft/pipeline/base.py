"""Stage base: the starting tokenizer (with chat template) and model."""

from __future__ import annotations

from pathlib import Path

from chatsft.config import Layout, Params
from chatsft.model.load import prepare_base

SECTIONS = ("model",)


def outputs(layout: Layout) -> list[Path]:
    return [layout.base]


def run(params: Params, layout: Layout) -> dict:
    info = prepare_base(params.model, layout.split("train"), layout.base)
    print(f"base: {info}")
    return info
