"""Quiet logs: what the libraries print that a user cannot act on is silenced where it
arises; progress bars stay for long work (training, generation, big downloads and loads)."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

# Weights loaded from local files under this size take seconds: no "Loading weights" bar.
SMALL_WEIGHTS = 1 << 30


def weights_bytes(source: str | Path) -> int | None:
    """Size of a local model folder's weight files; None for a hub id (not on disk yet)."""
    path = Path(source)
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


@contextlib.contextmanager
def loading_bar_for(source: str | Path) -> Iterator[None]:
    """transformers' progress bars off while loading small local weights (the bar of a 2 MB
    model flashes past and only clutters a stage's log); on for a hub id or big weights."""
    from transformers.utils import logging as hf_logging

    size = weights_bytes(source)
    quiet = size is not None and size < SMALL_WEIGHTS
    was_on = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was_on:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def peft_deprecations_silenced() -> Iterator[None]:
    """peft still reads `model.is_gradient_checkpointing`, which transformers 5 deprecates
    with a FutureWarning at every LoRA run: peft's to fix, nothing the user can change."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield
