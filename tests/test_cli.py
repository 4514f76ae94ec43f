"""The command line: flags and choices from the params schema, `--set` for any key, the
seed's spellings, errors with the subcommand's usage, and params.yaml as the starting point."""

from __future__ import annotations

import argparse
import typing

import pytest
import yaml

from chatsft.cli import build_parser, dashed, main
from chatsft.cli.schema import field_of, params_keys
from chatsft.cli.train import TRAIN_KEYS, train_params
from chatsft.params import GenerationParams, Params, Source
from tests.conftest import ROOT


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def literal_keys(keys) -> list[tuple[str, tuple]]:
    out = []
    for key in keys:
        annotation = field_of(key).annotation
        if typing.get_origin(annotation) is typing.Literal:
            out.append((key, typing.get_args(annotation)))
    return out


def test_train_flag_choices_are_the_schema_literals(capsys):
    literals = literal_keys(TRAIN_KEYS)
    assert {k for k, _ in literals} >= {"train.method", "train.precision", "model.dtype",
                                        "train.distributed"}
    for key, choices in literals:
        flag = "--" + key.rsplit(".", 1)[1].replace("_", "-")
        for choice in choices:  # every value of the Literal is accepted...
            assert getattr(parse("train", flag, str(choice)), key) == choice
        with pytest.raises(SystemExit):  # ...and nothing else
            parse("train", flag, "not-a-choice")
        err = capsys.readouterr().err
        assert f"invalid choice: 'not-a-choice' (choose from {', '.join(map(repr, choices))})" \
            in err, err


def test_other_commands_take_their_choices_from_the_schema():
    for choice in typing.get_args(Source.model_fields["format"].annotation):
        assert parse("data", "check", "x.jsonl", "--format", choice).format == choice
    for choice in typing.get_args(field_of("model.dtype").annotation):
        args = parse("predict", "--model-path", "m", "--data-path", "p", "--output-path", "o",
                     "--dtype", choice)
        assert args.dtype == choice
    # One decoding flag per GenerationParams field, with its type and default.
    args = parse("predict", "--model-path", "m", "--data-path", "p", "--output-path", "o")
    assert {k: getattr(args, k) for k in GenerationParams.model_fields} == \
        GenerationParams().model_dump()
    assert parse("chat", "--model-path", "m").max_new_tokens is None  # chat's own default


def test_seed_spellings_work_for_train(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the shipped defaults
    args = parse("train", "--model_name", "Qwen/Qwen2.5-0.5B-Instruct", "--data_path", "a.jsonl",
                 "--data_path", "b.jsonl", "--output_dir", "runs/x", "--num_epochs", "2",
                 "--batch_size", "3", "--learning_rate", "0.0002")
    params = train_params(args)
    assert args.output_dir == "runs/x"
    assert params.model.name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"
    assert params.data.raw == ["a.jsonl", "b.jsonl"]
    assert (params.train.epochs, params.train.per_device_batch_size,
            params.train.learning_rate) == (2.0, 3, 0.0002)
    # The dashed spellings give the same.
    dashed_args = parse("train", *dashed(["--model_name", "m", "--num_epochs=4"]))
    assert (train_params(dashed_args).model.name_or_path,
            train_params(dashed_args).train.epochs) == ("m", 4.0)


def test_seed_spellings_work_for_inference_commands():
    args = parse("predict", "--model_name", "models/sft", "--data_path", "p.jsonl",
                 "--output_path", "o.jsonl", "--max_new_tokens", "5", "--batch_size", "2")
    assert (args.model_path, args.data_path, args.max_new_tokens, args.batch_size) == \
        ("models/sft", "p.jsonl", 5, 2)
    assert parse("chat", "--model_name", "models/sft").model_path == "models/sft"
    assert parse("serve", "--model_name", "a=models/sft").model_path == ["a=models/sft"]


def test_underscores_only_change_flag_names():
    assert dashed(["--model_name=a_b", "x_y", "--set", "train.lora.r=4", "--", "--a_b"]) == \
        ["--model-name=a_b", "x_y", "--set", "train.lora.r=4", "--", "--a_b"]


@pytest.mark.parametrize(("argv", "command", "extras"), [
    (["train", "--model_name", "scratch", "--bogus", "1"], "train", "--bogus 1"),
    (["predict", "--model-path", "m", "--data-path", "p", "--output-path", "o", "--nope"],
     "predict", "--nope"),
    (["data", "check", "x.jsonl", "--nope"], "data check", "--nope"),
])
def test_errors_print_the_subcommands_usage(argv, command, extras, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: chatsft {command} "), err
    assert f"chatsft {command}: error: unrecognized arguments: {extras}" in err


def test_set_reaches_any_key_and_merges_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = parse("train", "--set", "train.warmup_ratio=0.2",
                 "--set", "train.lora.target_modules=[q_proj, v_proj]",
                 "--set", "train.lora={r: 4, alpha: 8}", "--set", "train.lora.alpha=2",
                 "--set", "evaluate.generation.top_k=5", "--set", "tokenize.template_date=null",
                 "--set", "data.raw=chats.jsonl", "--learning-rate", "0.01",
                 "--set", "train.learning_rate=0.02")
    params = train_params(args)
    assert params.train.warmup_ratio == 0.2
    assert params.train.lora.target_modules == ["q_proj", "v_proj"]
    assert (params.train.lora.r, params.train.lora.alpha) == (4, 2.0)
    assert params.evaluate.generation.top_k == 5
    assert params.tokenize.template_date is None
    assert params.data.raw == ["chats.jsonl"]
    assert params.train.learning_rate == 0.02  # --set comes after the flags
    # Every key of the schema can be set.
    for key in params_keys():
        parse("train", "--set", f"{key}=null")


@pytest.mark.parametrize(("value", "message"), [
    ("train.learning_rat=0.1", "unknown params key 'train.learning_rat' (did you mean "
     "train.learning_rate?)"),
    ("trian.epochs=1", "unknown params key 'trian.epochs' (did you mean train.epochs?)"),
    ("train.epochs", "expected KEY=VALUE"),
    ("train.epochs=[1", "the value is not valid YAML"),
])
def test_set_with_a_bad_key_is_a_usage_error_naming_it(value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--set", value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: chatsft train ") and message in err, err


def test_set_with_a_bad_value_names_the_key(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--set", "train.warmup_ratio=2", "--set", "train.lora=5"])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert "train.warmup_ratio: Input should be less than 1 (got 2)" in err
    assert "train.lora: Input should be a valid dictionary" in err
    assert "Traceback" not in err


def test_train_starts_from_params_yaml_like_the_pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = yaml.safe_load((ROOT / "params.yaml").read_text())
    # Without a params.yaml here: the shipped params.yaml, exactly.
    assert train_params(parse("train")).model_dump() == shipped
    # With one: its values, under the flags.
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"train": {"warmup_ratio": 0.25, "learning_rate": 0.001}, "model": {"dtype": "float16"}}))
    params = train_params(parse("train", "--learning-rate", "0.005"))
    assert params.train.warmup_ratio == 0.25 and params.model.dtype == "float16"
    assert params.train.learning_rate == 0.005
    assert params.data == Params().data  # sections it leaves out keep the shipped values
    # --params names another file.
    (tmp_path / "other.yaml").write_text(yaml.safe_dump({"train": {"warmup_ratio": 0.5}}))
    assert train_params(parse("train", "--params", "other.yaml")).train.warmup_ratio == 0.5
