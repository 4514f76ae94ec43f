"""`chatsft serve`: an OpenAI-compatible HTTP server for one or more models."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from chatsft.errors import UserError


def model_specs(values: list[str]) -> dict[str, str]:
    """`name=path` or `path` (named after its directory) -> {name: path}; names are unique."""
    specs: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or "/" in name:
            name, path = Path(value.rstrip("/")).name, value
        if not name or name in specs:
            raise UserError(f"--model-path {value}: the model name {name!r} is "
                            f"{'empty' if not name else 'taken'}; give it as NAME=PATH")
        specs[name] = path
    return specs


def load_served(args: argparse.Namespace):
    from transformers.utils.logging import disable_progress_bar

    from chatsft.cli.infer import load_model_and_tokenizer
    from chatsft.serve.app import ServedModel

    disable_progress_bar()
    served = {}
    for name, path in model_specs(args.model_path).items():
        model, tokenizer = load_model_and_tokenizer(path, args.dtype, args.device_map,
                                                    args.trust_remote_code)
        served[name] = ServedModel.build(name, model, tokenizer, args.max_context,
                                         args.max_batch_size, args.batch_window_ms / 1000)
    return served


def run_server(app, host: str, port: int) -> None:
    """uvicorn until Ctrl-C or SIGTERM; it stops accepting, finishes in-flight requests, then
    runs the app's shutdown (which drains the batchers), and the process exits with status 0."""
    import signal

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn re-raises the signal once it has shut down, so a clean shutdown would
            # exit with -15 (SIGTERM) or 130 (Ctrl-C); here it is status 0.
            previous = {s: signal.signal(s, self.handle_exit)
                        for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    print(f"chatsft: serving on http://{host}:{port}", flush=True)
    Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                          timeout_graceful_shutdown=None)).run()


def _serve(args: argparse.Namespace) -> int:
    from chatsft.serve.app import create_app

    key = args.api_key or os.environ.get("CHATSFT_API_KEY") or None
    served = load_served(args)
    run_server(create_app(served, api_key=key, max_body=args.max_body_bytes), args.host,
               args.port)
    return 0


def add_server_args(parser: argparse.ArgumentParser, port: int) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=port)


def add_commands(sub: argparse._SubParsersAction) -> None:
    from chatsft.cli.infer import add_loading_args

    serve = sub.add_parser("serve", help="an OpenAI-compatible HTTP server "
                           "(/v1/chat/completions, /v1/models, /health)")
    serve.add_argument("--model-path", "--model-name", action="append", required=True,
                       dest="model_path", metavar="[NAME=]PATH",
                       help="a model directory; repeat to serve several (the request's "
                       "`model` picks one; the name defaults to the directory's name)")
    serve.add_argument("--api-key", default=None, help="require `Authorization: Bearer KEY` on "
                       "every route but /health (default: $CHATSFT_API_KEY, else none)")
    add_server_args(serve, 8000)
    add_loading_args(serve)
    serve.add_argument("--max-batch-size", type=int, default=32,
                       help="requests generated together at most (default 32)")
    serve.add_argument("--batch-window-ms", type=float, default=10.0,
                       help="how long a batch waits for more requests (default 10 ms)")
    serve.add_argument("--max-body-bytes", type=int, default=4 << 20,
                       help="larger request bodies get 413 (default 4 MiB)")
    serve.set_defaults(func=_serve, parser=serve)
