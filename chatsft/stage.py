"""How every pipeline stage starts (`stage_main`), and what it does first: refuse a broken
`dvc.lock`, read the params sections it uses (which must be in params.yaml), and remove what
an earlier killed run of it left.

`python -m chatsft.stage` checks `dvc.lock` alone (`make repro` runs it before `dvc repro`,
which cannot start with a broken lock file).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import yaml

from chatsft.config import Layout
from chatsft.errors import UserError, user_errors_exit
from chatsft.io import remove_stale_temporaries
from chatsft.params import Params, load_params

LOCK = "dvc.lock"
MD5 = re.compile(r"[0-9a-f]{32}(\.dir)?")


class BrokenLockError(UserError):
    """dvc.lock cannot be read: DVC writes it in place (no temporary and rename), so a kill
    during its update can leave it empty or cut short."""


def _restore_command(lock: Path) -> str:
    try:
        tracked = subprocess.run(["git", "ls-files", "--error-unmatch", lock.name],
                                 cwd=lock.parent, capture_output=True).returncode == 0
    except OSError:  # no git
        tracked = False
    if tracked:
        return f"git checkout {lock.name}"
    # Without a committed copy: DVC then reruns each stage (or takes it from its run cache).
    return f"rm {lock.name}"


def lock_problem(lock: str | Path = LOCK) -> str | None:
    """Why `lock` is broken, or None when it is absent or what DVC expects."""
    lock = Path(lock)
    if not lock.exists():
        return None
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA  # DVC's own definition of a lock file
    from voluptuous import Invalid

    text = lock.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return "it is empty"
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        return f"it is not valid YAML ({str(err).splitlines()[0]})"
    try:
        COMPILED_LOCKFILE_SCHEMA(data)
    except Invalid as err:
        return f"it is not a DVC lock file ({err})"
    if not data.get("stages"):
        return "it lists no stage"
    for name, stage in data["stages"].items():
        for entry in stage.get("deps", []) + stage.get("outs", []):
            # Cut short inside an entry: its hash (`hash: md5` names the key) is missing, or
            # cut inside, where YAML may read what is left of it as a number.
            value = entry.get(entry.get("hash", "md5"))
            if value is None:
                return f"stage {name}: {entry['path']} has no hash"
            if not isinstance(value, str) or (entry.get("hash", "md5") == "md5"
                                              and not MD5.fullmatch(value)):
                return f"stage {name}: {entry['path']} has a cut-short hash ({value})"
    return None


def check_lock(lock: str | Path = LOCK) -> None:
    """Raise BrokenLockError with the one command that restores a broken `dvc.lock`."""
    lock = Path(lock).resolve()
    problem = lock_problem(lock)
    if problem:
        raise BrokenLockError(
            f"{lock.name} is broken: {problem} (a kill while DVC was updating it?); "
            f"dvc cannot run until it is restored: {_restore_command(lock)}")


def start_stage(sections: Iterable[str], outputs: Iterable[str | Path]) -> Params:
    """A stage's first step: check dvc.lock, load params.yaml requiring `sections`, and remove
    stale temporaries of the stage's `outputs`."""
    check_lock()
    params = load_params(require=tuple(sections))
    if os.environ.get("RANK", "0") == "0":  # one process of a distributed launch cleans up
        for stale in remove_stale_temporaries(*outputs):
            print(f"removed {stale}, left by an interrupted run", file=sys.stderr)
    return params


def stage_main(stage: ModuleType) -> Callable[[], object]:
    """The `main` of `stages/<name>.py`: `stage` (a module of chatsft.pipeline, with SECTIONS,
    `outputs(layout)` and `run(params, layout)`) on params.yaml and the pipeline's Layout."""

    @user_errors_exit
    def main() -> object:
        layout = Layout()
        return stage.run(start_stage(stage.SECTIONS, stage.outputs(layout)), layout)

    return main


@user_errors_exit
def main() -> None:
    check_lock()


if __name__ == "__main__":
    main()
