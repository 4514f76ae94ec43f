"""`chatsft chat` (talk to a model in the terminal) and `chatsft predict` (batch replies).

Decoding flags mirror `GenerationParams` (the `evaluate.generation` / `predict.generation`
sections of params.yaml): `--max-new-tokens`, `--do-sample`, `--temperature`, `--top-p`,
`--top-k`, `--repetition-penalty`, `--seed`, `--batch-size`. Heavy imports happen inside the
commands, so `chatsft --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from chatsft.cli.schema import add_field_flag
from chatsft.errors import UserError
from chatsft.inference.sigint import sigint_blocked
from chatsft.params import GenerationParams, ModelParams


def add_generation_args(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                        help_for: dict[str, str] | None = None, **defaults: object) -> None:
    """One flag per GenerationParams field; `defaults` and `help_for` replace the schema's
    defaults and help texts."""
    group = parser.add_argument_group("decoding")
    for name, field in GenerationParams.model_fields.items():
        if name not in skip:
            add_field_flag(group, "--" + name.replace("_", "-"), field, dest=name,
                           default=defaults.get(name, field.default),
                           text=(help_for or {}).get(name))


def generation_params(args: argparse.Namespace) -> GenerationParams:
    """GenerationParams from the decoding flags; a bad value names its flag."""
    values = {k: getattr(args, k) for k in GenerationParams.model_fields
              if getattr(args, k, None) is not None}
    try:
        return GenerationParams(**values)
    except ValidationError as err:
        lines = [f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']} "
                 f"(got {e.get('input')!r})" for e in err.errors()]
        raise UserError("invalid decoding options\n  " + "\n  ".join(lines)) from None


def add_model_args(parser: argparse.ArgumentParser) -> None:
    # --model-name: the seed's spelling of the model to use.
    parser.add_argument("--model-path", "--model-name", required=True, dest="model_path",
                        help="a model directory, e.g. models/sft")
    add_loading_args(parser)


def add_loading_args(parser: argparse.ArgumentParser) -> None:
    """--dtype, --device-map, --max-context and --trust-remote-code."""
    add_field_flag(parser, "--dtype", ModelParams.model_fields["dtype"], dest="dtype")
    parser.add_argument("--device-map", default=None,
                        help="transformers device_map, e.g. 'auto' (default: one GPU if any)")
    parser.add_argument("--max-context", type=int, default=None,
                        help="context window in tokens (default: max_position_embeddings)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run Python code shipped with the model folder (unsafe; never "
                        "switched on by the folder itself)")


def load_model_and_tokenizer(path: str, dtype: str = "float32", device_map: str | None = None,
                             trust_remote_code: bool = False):
    """The model (eval mode, on the GPU if any) and its tokenizer; a UserError if unloadable."""
    from chatsft.inference.generation import load_for_inference
    from chatsft.model.load import load_tokenizer

    try:
        tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot load the tokenizer: {err}") from None
    return load_for_inference(path, dtype, device_map,
                              trust_remote_code=trust_remote_code), tokenizer


def _load(args: argparse.Namespace):
    return load_model_and_tokenizer(args.model_path, args.dtype, args.device_map,
                                    args.trust_remote_code)


def _chat(args: argparse.Namespace) -> int:
    # torch starts a thread on import and its thread pool at its first parallel op; the model
    # loads after, so that Ctrl-C can stop a long load
    with sigint_blocked():
        import torch

        torch.ones(256, 256) @ torch.ones(256, 256)
    from transformers.utils.logging import disable_progress_bar

    from chatsft.inference.chat import ChatSession, run_chat
    from chatsft.inference.generation import context_size

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    generation_params(args)  # bad flags fail before the model loads
    if sys.stdin is None or sys.stdin.closed:
        raise UserError("chat reads your messages from standard input, which is closed")
    disable_progress_bar()  # no "Loading weights" bar in the conversation
    model, tokenizer = _load(args)
    if args.max_new_tokens is None:
        args.max_new_tokens = min(512, (context_size(model, args.max_context) or 1024) // 2)
    params = generation_params(args)
    session = ChatSession(model, tokenizer, params, args.system_prompt, args.max_context)
    return run_chat(session)


def _predict(args: argparse.Namespace) -> int:
    from chatsft.inference.predict import check_strict, predict_file, summary
    from chatsft.io import check_output_kind, write_jsonl

    params = generation_params(args)
    check_output_kind(args.output_path, is_dir=False)  # before the model loads
    model, tokenizer = _load(args)
    rows = predict_file(model, tokenizer, args.data_path, params, args.max_context)
    write_jsonl(args.output_path, rows)
    print(f"predict: {summary(rows, args.output_path)}")
    check_strict(rows, args.strict, args.output_path)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    chat = sub.add_parser("chat", help="talk to a model in the terminal (streamed replies)")
    add_model_args(chat)
    chat.add_argument("--system-prompt", default=None)
    add_generation_args(chat, skip=("batch_size",), max_new_tokens=None, help_for={
        "max_new_tokens": "Longest reply (default 512, at most half the context window)."})
    chat.set_defaults(func=_chat, parser=chat)

    predict = sub.add_parser("predict", help="reply to every prompt of a file, in batches")
    add_model_args(predict)
    predict.add_argument("--data-path", required=True,
                         help="prompts: ChatML (or ShareGPT) records in JSON/JSONL, each ending "
                         "with a user turn")
    predict.add_argument("--output-path", required=True,
                         help="JSONL: one line per prompt, in input order: a reply, or an "
                         "`error` saying why there is none")
    predict.add_argument("--strict", action="store_true",
                         help="exit with status 1 when any prompt got an error line")
    add_generation_args(predict)
    predict.set_defaults(func=_predict, parser=predict)
