"""Batch prediction: prompts in, replies out in input order; bad files fail clearly."""

from __future__ import annotations

import json

import pytest

from chatsft.cli import main
from chatsft.data.formats import Reject
from chatsft.inference.generation import generate_replies, load_for_inference
from chatsft.inference.predict import load_prompts
from chatsft.params import GenerationParams
from tests.test_generation import widen


def write_lines(path, records) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return str(path)


def test_cli_predict_replies_in_input_order(tmp_path, tiny_model, chatml_tokenizer,
                                            demo_records):
    model_dir = tmp_path / "model"
    widen(tiny_model).save_pretrained(model_dir)
    chatml_tokenizer.save_pretrained(model_dir)
    # Different lengths, so the internal sort by length really reorders them.
    prompts = [r["messages"][:1] + [{"role": "user", "content": "x " * n}]
               for n, r in zip((30, 2, 15, 1, 8), demo_records, strict=False)]
    src = write_lines(tmp_path / "prompts.jsonl", [{"messages": p} for p in prompts])
    out = tmp_path / "out" / "replies.jsonl"
    status = main(["predict", "--model-path", str(model_dir), "--data-path", src,
                   "--output-path", str(out), "--max-new-tokens", "6", "--batch-size", "2"])
    assert status == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["messages"] for r in rows] == prompts
    model = load_for_inference(str(model_dir))
    alone = [generate_replies(model, chatml_tokenizer, [p], GenerationParams(max_new_tokens=6))[0]
             for p in prompts]
    assert len({a.text for a in alone}) == len(prompts)  # so a mix-up would show
    assert [(r["reply"], r["generated_tokens"]) for r in rows] == [
        (a.text, a.generated_tokens) for a in alone]


def test_sharegpt_prompts_are_read_too(tmp_path):
    src = write_lines(tmp_path / "p.jsonl",
                      [{"conversations": [{"from": "human", "value": "你好"}]}])
    assert [p.messages for p in load_prompts(src)] == [[{"role": "user", "content": "你好"}]]


def test_prompts_keep_their_tools_and_may_end_with_a_tool_result(tmp_path, two_word_model):
    from chatsft.inference.predict import predict_file
    from chatsft.model.load import load_tokenizer

    tools = [{"type": "function", "function": {"name": "get_weather"}}]  # short: a tiny vocab
    call = {"type": "function", "function": {"name": "get_weather",
                                             "arguments": {"city": "Paris"}}}
    records = [
        {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools},
        {"messages": [{"role": "user", "content": "Weather in Paris?"},
                      {"role": "assistant", "content": "", "tool_calls": [call]},
                      {"role": "tool", "content": '{"temperature": 18}'}], "tools": tools},
        {"messages": [{"role": "user", "content": "Hi"}]},
    ]
    src = write_lines(tmp_path / "p.jsonl", records)
    assert [{"messages": p.messages} | ({"tools": p.tools} if p.tools else {})
            for p in load_prompts(src)] == records
    path, answer = two_word_model
    rows = predict_file(load_for_inference(str(path)), load_tokenizer(path), src,
                        GenerationParams(max_new_tokens=6))
    assert [{k: v for k, v in r.items() if k in ("messages", "tools")} for r in rows] == records
    assert [r["reply"] for r in rows] == [answer.strip()] * 3


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"messages": [{"role": "user", "content": "hi"}, '
         '{"role": "assistant", "content": "hello"}]}', "does not end with a user turn"),
        ('{"messages": [{"role": "user", "content": "hi"}', "not JSON"),
        ('{"foo": 1}', "unknown format"),
    ],
)
def test_a_bad_prompt_is_reported_with_its_file_line_and_reason(tmp_path, line, reason):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": "ok"}]}\n' + line + "\n"
                    + '{"messages": [{"role": "user", "content": "ok"}]}\n')
    prompts = load_prompts(str(path))
    assert [p.error for p in prompts] == [None, reason, None]
    assert prompts[1].where == f"{path}: line 2"


def test_a_file_without_prompts_is_an_error(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n")
    with pytest.raises(Reject, match="holds no records"):
        load_prompts(str(path))


def test_cli_errors_exit_with_a_message_not_a_traceback(tmp_path, tiny_model_dir, capsys):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"messages": [{"role": "assistant", "content": "hi"}]}\n')
    args = ["predict", "--model-path", str(tiny_model_dir), "--data-path", str(path),
            "--output-path", str(tmp_path / "o.jsonl")]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--strict"])
    assert exit_.value.code == 1
    assert "1 of 1 prompts got no reply (strict)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*args, "--top-p", "2"])
    assert "--top-p: Input should be less than or equal to 1" in capsys.readouterr().err
