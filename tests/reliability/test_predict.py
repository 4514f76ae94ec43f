"""Item 6 of issue 14: a batch job survives bad records. Every input line of `chatsft
predict` and of the predict stage gets exactly one output line, in order: a reply or an
`error` with the reason; the summary counts them; only `--strict` (`predict.strict`) makes
errors an exit status of 1."""

from __future__ import annotations

import json
import re
import shutil

import yaml

from tests.reliability.conftest import run


def _msg(role: str, text: str) -> dict:
    return {"role": role, "content": text}


LONG = "many words " * 120
LINES = [
    json.dumps({"messages": [_msg("user", "hi")]}),
    '{"messages": [{"role": "user", "content": "cut',  # not JSON
    json.dumps({"messages": [_msg("user", "hi"), _msg("assistant", "hello")]}),
    json.dumps({"messages": [_msg("user", LONG)]}),  # too long even alone
    # Too long as a whole: the oldest exchange is dropped, the rest is answered.
    json.dumps({"messages": [_msg("user", LONG), _msg("assistant", "ok"),
                             _msg("user", "and now?")]}),
    json.dumps({"conversations": [{"from": "human", "value": "你好"}]}),
]


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _check(rows: list[dict], data) -> None:
    assert len(rows) == len(LINES)
    assert [r.get("error") for r in rows][:3] == [None, "not JSON",
                                                  "does not end with a user turn"]
    assert re.fullmatch(r"prompt too long: \d+ tokens > 60", rows[3]["error"])
    assert rows[1]["where"] == f"{data}: line 2" and rows[3]["where"] == f"{data}: line 4"
    assert [("reply" in r) for r in rows] == [True, False, False, False, True, True]
    assert rows[4]["messages"][-1]["content"] == "and now?"
    assert rows[5]["messages"] == [_msg("user", "你好")]


def test_item6_predict_writes_one_line_per_prompt_with_errors(tmp_path, tiny_model_dir):
    """Item 6: `chatsft predict` over good, broken, assistant-ending and over-long prompts
    answers the good ones, reports the others in place, exit 0; `--strict` exits 1 after
    writing the same lines."""
    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join(LINES) + "\n")
    out = tmp_path / "replies.jsonl"
    args = ["-m", "chatsft.cli", "predict", "--model-path", str(tiny_model_dir), "--data-path",
            str(data), "--output-path", str(out), "--max-new-tokens", "4",
            "--max-context", "64"]
    proc = run(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check(_rows(out), data)
    assert ("6 prompts: 3 replies, 3 errors (not JSON: 1, does not end with a user turn: 1, "
            "prompt too long: 1)") in proc.stdout
    out.unlink()
    proc = run([*args, "--strict"], tmp_path)
    assert proc.returncode == 1
    assert "error: 3 of 6 prompts got no reply (strict)" in proc.stderr
    _check(_rows(out), data)


def test_item6_predict_stage_reports_errors_and_obeys_predict_strict(tmp_path, tiny_model_dir):
    """Item 6, the predict stage: the same lines in models/predictions.jsonl; exit 0 unless
    predict.strict (a params key, default false)."""
    from chatsft.params import Params

    assert Params().predict.strict is False
    shutil.copytree(tiny_model_dir, tmp_path / "models" / "sft")
    data = tmp_path / "data" / "predict.jsonl"
    data.parent.mkdir()
    data.write_text("\n".join(LINES[:3]) + "\n")
    params = {"predict": {"generation": {"max_new_tokens": 4}}, "model": {}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(["-m", "stages.predict"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = _rows(tmp_path / "models" / "predictions.jsonl")
    assert [r.get("error") for r in rows] == [None, "not JSON", "does not end with a user turn"]
    params["predict"]["strict"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run(["-m", "stages.predict"], tmp_path)
    assert proc.returncode == 1 and "2 of 3 prompts got no reply (strict)" in proc.stderr
