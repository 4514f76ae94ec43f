"""data.resample_each_epoch: one draw of the training mixture per epoch, each at its ratio."""

from __future__ import annotations

import re

import pytest

from chatsft.data.clean import clean_records
from chatsft.params import DataParams, ParamsError, parse_params
from tests.data.test_mixing import _sources


def _without_epoch(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "epoch"} for r in records]


def test_each_epoch_draws_its_own_mixture_at_the_ratio(tmp_path):
    a, b = _sources(tmp_path, (1000, 200))  # a: far more records than its 30% share
    params = DataParams(raw=[{"path": a, "ratio": 0.3}, {"path": b, "ratio": 0.7}], seed=1,
                        resample_each_epoch=True)
    result = clean_records(params, epochs=3)
    train = result.records("train")
    epochs = {e: [r for r in train if r["epoch"] == e] for e in range(3)}
    assert sum(map(len, epochs.values())) == len(train)
    # The first epoch's draw is the one draw made without resampling.
    assert _without_epoch(epochs[0]) == clean_records(
        params.model_copy(update={"resample_each_epoch": False})).records("train")
    drawn_from_a = []
    for records in epochs.values():
        from_a = [r["messages"][0]["content"] for r in records
                  if r["messages"][0]["content"].startswith("a ")]
        assert abs(len(from_a) / len(records) - 0.3) < 0.01
        drawn_from_a.append(set(from_a))
    assert drawn_from_a[0] != drawn_from_a[1] != drawn_from_a[2]  # fresh draws
    mixture = result.report()["mixture"]
    assert [m["seed"] for m in mixture["epochs"]] == ["1", "1/epoch2", "1/epoch3"]
    for m in mixture["epochs"]:
        assert abs(m["sources"][a]["share_conversations"] - 0.3) < 0.01
    # A record of `a` is unsampled only when no epoch drew it.
    report = result.report()["by_source"][a]
    a_train = report["kept"] + report["unsampled"] - report["written"]["validation"] - (
        report["written"]["test"])
    assert report["unsampled"] == a_train - len(set().union(*drawn_from_a))
    assert report["kept"] + report["quarantined"] + report["unsampled"] == report["read"]
    assert clean_records(params, epochs=3).splits == result.splits  # deterministic


def test_fractional_weights_are_redrawn_each_epoch(tmp_path):
    a, b = _sources(tmp_path, (300, 300))
    params = DataParams(raw=[{"path": a, "weight": 1.5}, b], seed=3, resample_each_epoch=True)
    train = clean_records(params, epochs=2).records("train")
    doubled = [{r["messages"][0]["content"] for r in train if r["epoch"] == e
                and sum(x["messages"] == r["messages"] and x["epoch"] == e for x in train) == 2}
               for e in (0, 1)]
    assert doubled[0] and doubled[1] and doubled[0] != doubled[1]


def test_resampling_without_anything_to_draw_is_an_error_naming_the_key():
    with pytest.raises(ParamsError, match=re.escape("resample_each_epoch: no source has a ratio")):
        parse_params({"data": {"raw": ["a.jsonl"], "resample_each_epoch": True}})
