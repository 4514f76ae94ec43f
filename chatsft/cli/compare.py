"""`chatsft compare`: blind A/B review of two models in the browser, and the export of the
votes as DPO preference data."""

from __future__ import annotations

import argparse
from pathlib import Path

from chatsft.errors import UserError


def _side(path: str, data: list | None, args: argparse.Namespace) -> dict:
    """{prompt key: (prompt, reply, reference)} of one side: a model answers `data`'s prompts;
    a predictions file is read as is."""
    from chatsft.serve.compare import prompt_key, read_predictions

    if not Path(path).is_dir():
        return read_predictions(path)
    if data is None:
        raise UserError(f"{path} is a model directory: --data must give the prompts")
    from chatsft.cli.infer import generation_params, load_model_and_tokenizer
    from chatsft.inference.generation import generate_replies

    model, tokenizer = load_model_and_tokenizer(path, args.dtype, args.device_map,
                                                    args.trust_remote_code)
    prompts = [p for p, _ in data]
    print(f"chatsft: {path}: generating {len(prompts)} replies", flush=True)
    replies = generate_replies(model, tokenizer, prompts, generation_params(args),
                               args.max_context)
    return {prompt_key(p): (p, r.text, None) for p, r in zip(prompts, replies, strict=True)}


def _compare(args: argparse.Namespace) -> int:
    from chatsft.serve.compare import (
        VoteLog,
        add_scores,
        build_pairs,
        export_preferences,
        load_references,
    )

    if args.export_preferences:
        n = export_preferences(args.votes, args.export_preferences)
        print(f"wrote {n} preference pairs to {args.export_preferences}")
        return 0
    if not (args.a and args.b):
        raise UserError("compare needs --a and --b (or --export-preferences)")
    data = load_references(args.data) if args.data else None
    pairs = build_pairs(_side(args.a, data, args), _side(args.b, data, args), data)
    if args.limit:
        pairs = pairs[: args.limit]
    add_scores(pairs)
    log = VoteLog(args.votes, {"a": args.a, "b": args.b})

    from chatsft.cli.serve import run_server
    from chatsft.serve.app import create_app
    from chatsft.serve.compare_web import CompareSession

    session = CompareSession(pairs, log)
    done = session.progress()
    print(f"chatsft: {done['voted']} of {done['total']} pairs voted ({args.votes})", flush=True)
    run_server(create_app({}, extra_routes=session.routes()), args.host, args.port)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from chatsft.cli.infer import add_generation_args, add_loading_args
    from chatsft.cli.serve import add_server_args

    compare = sub.add_parser(
        "compare", help="blind A/B comparison of two models' replies in the browser; votes go "
        "to a JSONL file (--export-preferences turns them into DPO data)")
    compare.add_argument("--a", help="a model directory or a predictions file "
                         "(metrics/eval_predictions.jsonl, or chatsft predict output)")
    compare.add_argument("--b", help="the other model directory or predictions file")
    compare.add_argument("--data", help="prompts (ending with a user turn) or conversations "
                         "(the last assistant turn is the reference), e.g. "
                         "data/clean/test.jsonl; needed for model directories")
    compare.add_argument("--votes", default="compare/votes.jsonl",
                         help="votes JSONL, appended as they are cast; restarting resumes "
                         "(default compare/votes.jsonl)")
    compare.add_argument("--limit", type=int, default=None, help="compare the first N pairs")
    compare.add_argument("--export-preferences", metavar="FILE",
                         help="write {prompt, chosen, rejected} records for TRL's DPO trainer "
                         "from --votes, and exit")
    add_loading_args(compare)
    add_server_args(compare, 8001)
    add_generation_args(compare)
    compare.set_defaults(func=_compare, parser=compare)
