"""The `chatsft` command line: data tools, training without DVC, prediction, chat, serving.

Long flags may be spelt with underscores too (`--model_name` for `--model-name`).

One module per command group (`data`, `train` and `preset`, `chat` and `predict`, `serve`,
`compare`); flags that set params come from the schema (`chatsft.cli.schema`). Heavy
imports happen inside the commands, so `chatsft --help` stays fast.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from chatsft.errors import user_errors_exit

# `--model_name` as well as `--model-name`: the seed's spellings, and anyone's habit.
_UNDERSCORED_FLAG = re.compile(r"--[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*")


def dashed(argv: Sequence[str]) -> list[str]:
    """The arguments with every `--long_flag` (the part before `=`) spelt `--long-flag`;
    values, and everything after a lone `--`, are left as they are."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        match = _UNDERSCORED_FLAG.match(arg)
        if match and (match.end() == len(arg) or arg[match.end()] == "="):
            arg = match.group().replace("_", "-") + arg[match.end():]
        out.append(arg)
    return out


class Parser(argparse.ArgumentParser):
    """argparse with underscore spellings of long flags, and whose errors about arguments a
    command does not take print that command's usage (argparse prints the top level's)."""

    def parse_known_args(self, args=None, namespace=None):
        return super().parse_known_args(dashed(sys.argv[1:] if args is None else args),
                                        namespace)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            # Each command's parser sets itself as `parser` (set_defaults).
            getattr(parsed, "parser", self).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed


def build_parser() -> argparse.ArgumentParser:
    from chatsft.cli import compare, data, infer, serve, train

    parser = Parser(prog="chatsft", description="\n\n".join(__doc__.split("\n\n")[:2]),
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    data.add_commands(sub)  # data sample, data check
    train.add_commands(sub)  # train, preset
    infer.add_commands(sub)  # chat, predict
    serve.add_commands(sub)  # serve
    compare.add_commands(sub)  # compare
    return parser


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
