"""`chatsft.stage.lock_problem` on dvc.lock files cut short where DVC's writes can stop."""

from __future__ import annotations

import re

from chatsft.stage import lock_problem
from tests.conftest import ROOT


def test_a_hash_cut_to_its_leading_digits_is_caught(tmp_path):
    """YAML reads `md5: 8179` as a number; DVC then stops with "'int' object has no attribute
    'endswith'" and no hint of the cause."""
    good = (ROOT / "dvc.lock").read_text()
    lock = tmp_path / "dvc.lock"
    lock.write_text(good)
    assert lock_problem(lock) is None
    at = re.search(r"md5: ([0-9a-f]{32})", good)
    lock.write_text(good[: at.start(1)] + "8179\n")
    assert "has a cut-short hash (8179)" in lock_problem(lock)
    lock.write_text(good[: at.start(1)] + "8179abc\n")
    assert "has a cut-short hash (8179abc)" in lock_problem(lock)
