"""Item 1 of issue 14: an output path that holds something of the other kind (a directory
where a file goes, a file where a directory goes) is an error naming it; nothing of the
user's is removed."""

from __future__ import annotations

import json

import pytest

from chatsft.errors import UserError
from chatsft.io import atomic_path
from tests.reliability.conftest import run

PROMPT = json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n"


def _user_dir(tmp_path):
    precious = tmp_path / "mine"
    precious.mkdir()
    (precious / "thesis.txt").write_text("years of work")
    return precious


def test_item1_output_path_that_is_a_directory_is_never_removed(tmp_path, tiny_model_dir):
    """Item 1: `chatsft predict --output-path DIR` and `chatsft data check --quarantine DIR`
    (real processes) stop with a message naming DIR, which keeps its files."""
    data = tmp_path / "prompts.jsonl"
    data.write_text(PROMPT)
    precious = _user_dir(tmp_path)
    for args in (["predict", "--model-path", str(tiny_model_dir), "--data-path", str(data),
                  "--output-path", str(precious)],
                 ["data", "check", str(data), "--quarantine", str(precious)]):
        proc = run(["-m", "chatsft.cli", *args], tmp_path)
        assert proc.returncode == 1
        assert f"error: {precious}: exists and is a directory, but this output is a file" in (
            proc.stderr)
        assert (precious / "thesis.txt").read_text() == "years of work"
        assert not list(tmp_path.glob(".mine.*"))  # no temporary left either


def test_item1_directory_output_never_replaces_a_file(tmp_path):
    """Item 1, the other way round: a directory output where the user has a file."""
    target = tmp_path / "clean"
    target.write_text("not ours")
    with pytest.raises(UserError, match="exists and is a file, but this output is a "
                       "directory"), atomic_path(target, is_dir=True) as tmp:
        (tmp / "train.jsonl").write_text("{}\n")
    assert target.read_text() == "not ours"
    # An output of the same kind is replaced as before.
    with atomic_path(tmp_path / "out", is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    with atomic_path(tmp_path / "out", is_dir=True) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "out"]
