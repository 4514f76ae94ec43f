"""`chatsft train` and the Python usage run clean, base, tokenize and train without DVC."""

from __future__ import annotations

import json

import pytest

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
    assert list((out / "checkpoints").iterdir()) == []


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
