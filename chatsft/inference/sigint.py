"""Ctrl-C for the main thread only, for `chatsft chat` (no torch import here: the blocking must
start before torch starts its threads)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


@contextlib.contextmanager
def sigint_blocked() -> Iterator[None]:
    """Threads started inside never take a Ctrl-C (they inherit the blocked SIGINT). The kernel
    gives a process's SIGINT to any thread not blocking it; one given to another thread trips
    Python's flag but does not interrupt readline's select() in the main thread, so the prompt
    does not answer it (tests/test_chat.py once saw ten Ctrl-Cs in a row go unanswered)."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
