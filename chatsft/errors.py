"""User mistakes end a stage with one clear message and exit status 1, never a traceback.

Every error a user can cause (bad params, bad files, a model that cannot load) subclasses
`UserError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake in the user's params, data or model; the message says where and why."""


def user_errors_exit(fn: Callable[..., object]) -> Callable[..., object]:
    """Run `fn`; a UserError (or a missing file) prints `error: ...` and exits with status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None

    return wrapper
