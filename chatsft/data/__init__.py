"""Data: raw formats to clean ChatML splits (`clean`), the demo set (`demo`), and the
`ChatMLDataProcessor` API. Importing this package loads nothing heavy (no torch, no
transformers, not even pydantic): submodules load on first use."""

from __future__ import annotations

from typing import Any

__all__ = ["ChatMLDataProcessor"]


def __getattr__(name: str) -> Any:
    if name == "ChatMLDataProcessor":
        from chatsft.data.processor import ChatMLDataProcessor

        return ChatMLDataProcessor
    raise AttributeError(f"module 'chatsft.data' has no attribute {name!r}")
