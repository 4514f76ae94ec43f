"""Mixing ratios, the hardest samples and the user's exclusions through real `dvc repro` runs
in a temporary clone (three small pipelines: CI runs it, `make test-ci`)."""

from __future__ import annotations

import json
import re
import sys

import pytest

from tests.pipeline_clone import SMALL, clone_repo, ran, run, set_params, stale

CJK = re.compile("[\u4e00-\u9fff]")
DOWNSTREAM_OF_CLEAN = {"clean", "base", "tokenize", "train", "evaluate", "evaluate_base",
                       "hardest", "predict"}


def _shares(repo) -> dict[str, float]:
    mixture = json.loads((repo / "metrics/clean.json").read_text())["mixture"]
    return {k: v["share_conversations"] for k, v in mixture["sources"].items()}


def _raw(en: float, zh: float) -> dict:
    return {"data": {"raw": [{"path": "data/en.jsonl", "ratio": en},
                             {"path": "data/zh.jsonl", "ratio": zh}]}}


@pytest.mark.ci
def test_ratios_hardest_and_exclusions_through_dvc(tmp_path):
    repo = clone_repo(tmp_path, SMALL)
    lines = (repo / "data/demo.jsonl").read_text(encoding="utf-8").splitlines()
    zh = [x for x in lines if CJK.search(json.loads(x)["messages"][-1]["content"])]
    (repo / "data/zh.jsonl").write_text("\n".join(zh) + "\n", encoding="utf-8")
    (repo / "data/en.jsonl").write_text("\n".join(sorted(set(lines) - set(zh))) + "\n",
                                        encoding="utf-8")
    set_params(repo, _raw(0.7, 0.3))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run([*git, "commit", "-qm", "two sources at 70/30"], repo)
    shares = _shares(repo)
    assert abs(shares["data/zh.jsonl"] - 0.3) < 0.01 and abs(shares["data/en.jsonl"] - 0.7) < 0.01

    # The hardest training conversations, by id.
    rows = [json.loads(x) for x in (repo / "metrics/hardest.jsonl").read_text().splitlines()]
    assert len(rows) == 20 and rows[0]["loss"] >= rows[-1]["loss"]
    train_ids = {json.loads(x)["id"] for x in (repo / "data/clean/train.jsonl").open()}
    assert {r["id"] for r in rows} <= train_ids
    assert "**model reply**" in (repo / "metrics/hardest.md").read_text()

    # A ratio change: dvc params diff shows it, and clean onwards reruns.
    set_params(repo, _raw(0.5, 0.5))
    diff = run(["dvc", "params", "diff", "--json"], repo).stdout
    assert "data.raw" in diff and "0.5" in diff, diff
    assert stale(repo) == {"clean"}
    out = run(["dvc", "repro"], repo).stdout
    assert ran(out)[0] == "clean" and set(ran(out)) <= DOWNSTREAM_OF_CLEAN
    assert all(abs(s - 0.5) < 0.01 for s in _shares(repo).values())

    # Excluding the hardest one: quarantined on the next repro.
    top = json.loads((repo / "metrics/hardest.jsonl").read_text().splitlines()[0])["id"]
    run([sys.executable, "-m", "chatsft.cli", "data", "exclude", top], repo)
    assert stale(repo) == {"clean"}
    run(["dvc", "repro"], repo)
    quarantine = [json.loads(x) for x in (repo / "data/clean/quarantine.jsonl").open()]
    assert [q["reason"] for q in quarantine if top in q["detail"]] == ["excluded by user"]
    assert top not in {json.loads(x)["id"] for x in (repo / "data/clean/train.jsonl").open()}

    # One draw per epoch: train.epochs is a dependency of clean, which records each seed.
    set_params(repo, {"data": {"resample_each_epoch": True}, "train": {"epochs": 3}})
    assert stale(repo) == {"clean", "train"}
    run(["dvc", "repro"], repo)
    epochs = json.loads((repo / "metrics/clean.json").read_text())["mixture"]["epochs"]
    assert [e["seed"] for e in epochs] == ["42", "42/epoch2", "42/epoch3"]
    assert all(abs(e["sources"]["data/zh.jsonl"]["share_conversations"] - 0.5) < 0.01
               for e in epochs)
    assert json.loads((repo / "metrics/train.json").read_text())["epoch_draws"] == 3
