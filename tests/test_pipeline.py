"""End to end: every stage through `dvc repro` in a temporary clone, on a small override.

Also checks that stages declare precise dependencies: changing one section reruns only the
stages that read it.
"""

from __future__ import annotations

import json

import pytest

from chatsft.data.demo import DEMO_TOOL_CALLS
from tests.pipeline_clone import REPRO_OUTPUT, ran, run, set_params, stale


@pytest.fixture()
def repo(pipeline_repo):
    return pipeline_repo


def test_repro_prints_nothing_a_user_cannot_act_on(repo):
    output = REPRO_OUTPUT[repo]
    assert "Running stage 'predict'" in output
    # DVC on the emptied models/checkpoints, the weight-loading bars of a 1 MB model, and
    # sacrebleu on the text it is given tokenized on purpose.
    for message in ("is empty", "Loading weights", "detokenize", "FutureWarning"):
        assert message not in output, output[-5000:]
    assert (repo / "models" / "checkpoints" / "README.txt").is_file()


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
    assert clean["kept"] + clean["quarantined"] + clean["unsampled"] == clean["read"] == (
        3000 + DEMO_TOOL_CALLS)
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
    assert ran(run(["dvc", "repro", "--dry"], repo).stdout) == []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # the base model is scored with the same evaluate params (its own stage); hardest
        # shows the reply evaluate's decoding gives.
        ({"evaluate": {"generation": {"max_new_tokens": 9}}},
         {"evaluate_base", "evaluate", "hardest"}),
        ({"hardest": {"samples": 5}}, {"hardest"}),
        ({"predict": {"generation": {"max_new_tokens": 9}}}, {"predict"}),
        ({"train": {"learning_rate": 0.002}}, {"train"}),
        # hardest encodes the training conversations as tokenize does.
        ({"tokenize": {"train_on": "last"}}, {"tokenize", "hardest"}),
        # max_length is also the packing capacity, so train reads it too.
        ({"tokenize": {"max_length": 200}}, {"tokenize", "train", "hardest"}),
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
        assert set(ran(dry)) == expected
    finally:
        (repo / "params.yaml").write_text(original)


def test_an_evaluate_change_reruns_only_evaluate(repo):
    original = (repo / "params.yaml").read_text()
    try:
        set_params(repo, {"evaluate": {"compare_base": False}})
        out = run(["dvc", "repro"], repo).stdout
        assert ran(out) == ["evaluate_base", "evaluate"]
    finally:
        (repo / "params.yaml").write_text(original)
        run(["dvc", "repro"], repo)


@pytest.mark.ci  # make test-ci: 70 s (a retrain, then one more); kept out of make test (15 min)
def test_a_train_change_does_not_score_the_base_again(repo):
    """The untrained base's scores are a stage of their own: an experiment on a train param
    retrains and re-evaluates the fine-tuned model only, and reports the same base scores."""
    original = (repo / "params.yaml").read_text()
    before = json.loads((repo / "metrics" / "eval.json").read_text())
    try:
        set_params(repo, {"train": {"learning_rate": 0.002}})
        out = run(["dvc", "repro"], repo).stdout
        assert "evaluate_base" not in ran(out) and {"train", "evaluate"} <= set(ran(out))
        assert stale(repo) == set()
        after = json.loads((repo / "metrics" / "eval.json").read_text())
        assert after["base"] == before["base"]
    finally:
        (repo / "params.yaml").write_text(original)
        run(["dvc", "repro"], repo)
