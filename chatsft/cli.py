"""The `chatsft` command line: data tools, training without DVC, prediction and chat."""

from __future__ import annotations

import argparse
import sys

from chatsft.errors import user_errors_exit


def _data_sample(args: argparse.Namespace) -> int:
    from chatsft.data.demo import write_demo

    n = write_demo(args.output, seed=args.seed, n=args.n)
    print(f"wrote {n} conversations to {args.output}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from chatsft.data.clean import clean_records
    from chatsft.params import DataParams

    params = DataParams(raw=args.files, validation_fraction=0, test_fraction=0)
    report = clean_records(params).report()
    import json

    print(json.dumps(report, ensure_ascii=False, indent=2))
    return 1 if report["quarantined"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatsft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="demo data and data checks").add_subparsers(
        dest="data_command", required=True
    )
    sample = data.add_parser("sample", help="write the deterministic demo data set")
    sample.add_argument("--output", default="data/demo.jsonl")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("-n", type=int, default=3000)
    sample.set_defaults(func=_data_sample)
    check = data.add_parser("check", help="report what the clean stage would reject")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=_data_check)
    return parser


@user_errors_exit
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
