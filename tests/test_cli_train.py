"""`chatsft train` and the Python usage run clean, base, tokenize and train without DVC."""

from __future__ import annotations

import json

import pytest
import yaml

from chatsft.io import write_jsonl


@pytest.fixture(scope="module")
def data_file(tmp_path_factory, demo_records):
    path = tmp_path_factory.mktemp("data") / "chats.jsonl"
    write_jsonl(path, demo_records[:80])
    return path


def test_cli_train_runs_the_pipeline(tmp_path, data_file, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chatsft.cli import main

    out = tmp_path / "run"
    assert main(["train", "--model-name", "scratch", "--data-path", str(data_file),
                 "--output-dir", str(out), "--num-epochs", "1", "--batch-size", "4",
                 "--learning-rate", "0.003", "--max-steps", "3"]) == 0
    summary = json.loads((out / "train.json").read_text())
    assert summary["steps"] == 3 and summary["supervised_tokens"] > 0
    assert f"model saved to {out / 'model'}" in capsys.readouterr().out
    assert (out / "clean" / "train.jsonl").is_file() and (out / "tokenized").is_dir()
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.vocab_size == len(tok) and tok.chat_template
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["README.txt"]


def test_cli_train_rejects_bad_options_by_name(tmp_path, data_file, capsys):
    from chatsft.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["train", "--data-path", str(data_file), "--output-dir", str(tmp_path),
              "--learning-rate", "3"])
    assert exc.value.code == 1
    assert "train.learning_rate" in capsys.readouterr().err


def test_python_usage_with_a_preset(tmp_path, data_file):
    from chatsft.api import ChatTrainer, get_preset

    model, data, training = get_preset("qwen2.5-0.5b", data_path=str(data_file))
    # The preset's data and training sections, a tiny scratch model instead of the hub.
    model = model.model_copy(update={"name_or_path": "scratch", "dtype": "float32"})
    training = training.model_copy(update={"max_steps": 2, "per_device_batch_size": 2,
                                           "gradient_accumulation_steps": 2})
    summary = ChatTrainer(model, data, training, output_dir=tmp_path).train()
    assert summary["steps"] == 2 and summary["precision"] == "fp32"
    assert (tmp_path / "model" / "model.safetensors").is_file()
    saved = json.loads((tmp_path / "train.json").read_text())
    assert saved["steps"] == 2


# What the libraries used to print at every run that a user can do nothing about.
UNACTIONABLE = ("is_gradient_checkpointing", "FutureWarning", "Loading weights", "is empty")
TINY = ("--set", "model.scratch={vocab_size: 400, hidden_size: 32, num_hidden_layers: 2, "
        "num_attention_heads: 4, num_key_value_heads: 2, intermediate_size: 64}")


def test_seed_command_line_trains_lora_and_predicts_with_quiet_logs(tmp_path, data_file):
    """The seed's own spellings, in a directory without params.yaml (the shipped defaults), a
    LoRA run and a prediction as real processes: nothing in their output that the user
    cannot act on (peft's FutureWarning, weight-loading bars of a 2 MB model)."""
    import sys

    from tests.reliability.stage_runs import run_in

    train = run_in(tmp_path, sys.executable, "-m", "chatsft.cli", "train", "--model_name",
                   "scratch", "--data_path", str(data_file), "--output_dir", "run",
                   "--num_epochs", "1", "--batch_size", "2", "--learning_rate", "0.003",
                   "--max_steps", "2", "--method", "lora", "--set", "train.lora.r=4", *TINY)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "chatsft train: params from the shipped defaults" in train.stdout
    saved = yaml.safe_load((tmp_path / "run" / "params.yaml").read_text())
    assert (saved["train"]["method"], saved["train"]["lora"]["r"]) == ("lora", 4)
    assert saved["model"]["scratch"]["hidden_size"] == 32
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [{"messages": [{"role": "user", "content": "Hello?"}]}])
    predict = run_in(tmp_path, sys.executable, "-m", "chatsft.cli", "predict", "--model_name",
                     "run/model", "--data_path", str(prompts), "--output_path", "out.jsonl",
                     "--max_new_tokens", "4")
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 1
    for proc in (train, predict):
        output = proc.stdout + proc.stderr
        assert not [m for m in UNACTIONABLE if m in output], output[-3000:]
    # The progress of the long work stays: the trainer's logs and bar.
    assert "{'loss': " in train.stdout and "2/2 [" in train.stderr
