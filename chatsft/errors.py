"""User mistakes end a stage with one clear message and exit status 1, never a traceback.

Every error a user can cause (bad params, bad files, a model that cannot load) subclasses
`UserError`; anything else is a bug and keeps its traceback. A full disk and a closed output
pipe are the user's environment, not bugs: they get one line too.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Below this, a failed write is taken to be a full disk: torch.save reports ENOSPC only as
# "unexpected pos ..." (a RuntimeError), and nothing else in its message says why.
NEARLY_FULL = 1 << 20


class UserError(Exception):
    """A mistake in the user's params, data or model; the message says where and why."""


class DiskFullError(UserError):
    """A write failed for lack of space; what was being written has been removed."""


def is_disk_full(err: BaseException, where: str | Path | None = None) -> bool:
    """ENOSPC/EDQUOT from Python's I/O or safetensors' writer ("os error 28"), or any failed
    write while the disk of `where` has (almost) no free space left."""
    if isinstance(err, OSError) and err.errno in DISK_FULL:
        return True
    if "No space left on device" in str(err) or "os error 28" in str(err):
        return True
    if where is None:
        return False
    path = Path(where)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free < NEARLY_FULL
    except OSError:
        return False


@contextlib.contextmanager
def disk_full_errors(where: str | Path) -> Iterator[None]:
    """Turn a failed write on a full disk under `where` into a DiskFullError."""
    try:
        yield
    except UserError:
        raise
    except Exception as err:
        if not is_disk_full(err, where):
            raise
        raise DiskFullError(f"{where}: disk full (no space left on device); nothing was "
                            "written there: free some space and run again") from None


def user_errors_exit(fn: Callable[..., object]) -> Callable[..., object]:
    """Run `fn`; a UserError, a missing file, a full disk or a closed output pipe prints
    `error: ...` and exits with status 1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, FileNotFoundError) as err:
            message = str(err)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and keep Python from failing
            # again when it flushes stdout at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            message = "output closed before the end (broken pipe)"
        except OSError as err:
            if err.errno not in DISK_FULL:
                raise
            message = f"disk full: {err}; nothing was written there: free some space and " \
                "run again"
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(1) from None

    return wrapper
