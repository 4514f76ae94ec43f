"""End to end: every stage through `dvc repro` in a temporary clone, on a small override.

Also checks that stages declare precise dependencies: changing one section reruns only the
stages that read it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

BIN = Path(sys.executable).parent

SMALL = {
    "model": {"scratch": {"vocab_size": 500, "hidden_size": 32, "num_hidden_layers": 2,
                          "num_attention_heads": 4, "num_key_value_heads": 2,
                          "intermediate_size": 64, "max_position_embeddings": 512}},
    "train": {"max_steps": 12, "per_device_batch_size": 4, "eval_steps": 6, "logging_steps": 2},
    "evaluate": {"max_samples": 12, "generation": {"max_new_tokens": 8}},
    "predict": {"generation": {"max_new_tokens": 8}},
}


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(cwd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def set_params(repo: Path, override: dict) -> None:
    from chatsft.params import deep_merge

    path = repo / "params.yaml"
    params = deep_merge(yaml.safe_load(path.read_text()), override)
    path.write_text(yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


def stale(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed."""
    out = run(["dvc", "status", "--json"], repo).stdout
    return set(json.loads(out or "{}"))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A clone of the working tree (tracked and new files), with the small params, reproduced."""
    dst = tmp_path_factory.mktemp("clone")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file() and f != "dvc.lock":
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    set_params(dst, SMALL)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    run(["git", "init", "-q"], dst)
    run(["git", "add", "-A"], dst)
    run([*git, "commit", "-qm", "clone"], dst)
    run(["dvc", "repro"], dst)
    return dst


def test_every_stage_produces_its_outputs(repo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sft = repo / "models" / "sft"
    assert (sft / "model.safetensors").exists() and not list(sft.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(sft)
    tok = AutoTokenizer.from_pretrained(sft)
    prompt = tok.apply_chat_template([{"role": "user", "content": "What is 2 + 3?"}],
                                     add_generation_prompt=True, return_tensors="pt",
                                     return_dict=True)
    out = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > prompt["input_ids"].shape[1]

    metrics = json.loads((repo / "metrics" / "eval.json").read_text())
    for key in ("perplexity", "bleu4", "rouge1", "rouge2", "rougeL"):
        assert key in metrics["sft"]["test"]
    assert metrics["sft"]["test"]["perplexity"] < metrics["base"]["test"]["perplexity"]
    clean = json.loads((repo / "metrics" / "clean.json").read_text())
    assert clean["kept"] + clean["quarantined"] == clean["read"] == 3000
    preds = (repo / "models" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == len((repo / "data" / "predict.jsonl").read_text().splitlines())
    assert (repo / "metrics" / "mask_audit.html").exists()


def test_metrics_and_plots_commands_work(repo):
    shown = run(["dvc", "metrics", "show"], repo).stdout
    assert "perplexity" in shown
    run(["dvc", "plots", "show", "-o", "plots_out"], repo)
    assert (repo / "plots_out" / "index.html").exists()


def test_pipeline_is_up_to_date_after_repro(repo):
    assert stale(repo) == set()
    assert "Running stage" not in run(["dvc", "repro", "--dry"], repo).stdout


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"evaluate": {"generation": {"max_new_tokens": 9}}}, {"evaluate"}),
        ({"predict": {"generation": {"max_new_tokens": 9}}}, {"predict"}),
        ({"train": {"learning_rate": 0.002}}, {"train"}),
        ({"tokenize": {"train_on": "last"}}, {"tokenize"}),
        # max_length is also the packing capacity, so train reads it too.
        ({"tokenize": {"max_length": 200}}, {"tokenize", "train"}),
        ({"model": {"scratch": {"seed": 3}}}, {"base"}),
        ({"data": {"seed": 3}}, {"clean"}),
    ],
)
def test_a_param_change_marks_only_the_stage_reading_it(repo, override, expected):
    """Only the stage that reads the changed key is stale; its descendants rerun at repro time
    only if its outputs change."""
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, override)
        assert stale(repo) == expected
        dry = run(["dvc", "repro", "--dry"], repo).stdout
        assert {line.split("'")[1] for line in dry.splitlines() if "Running stage" in line} == (
            expected
        )
    finally:
        (repo / "params.yaml").write_text(original)


def test_an_evaluate_change_reruns_only_evaluate(repo):
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"evaluate": {"generation": {"max_new_tokens": 5}}})
        out = run(["dvc", "repro"], repo).stdout
        assert [line for line in out.splitlines() if "Running stage" in line] == [
            "Running stage 'evaluate':"
        ]
    finally:
        (repo / "params.yaml").write_text(original)
        run(["dvc", "repro"], repo)
