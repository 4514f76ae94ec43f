"""`chatsft data sample` (the demo data set), `data check` (what clean would reject) and `data
exclude` (record ids for the clean stage to quarantine)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chatsft.cli.schema import add_field_flag
from chatsft.params import Source


def _data_sample(args: argparse.Namespace) -> int:
    from chatsft.data.demo import DEMO_TOOL_CALLS, write_demo

    tool_calls = DEMO_TOOL_CALLS if args.tool_calls is None else args.tool_calls
    n = write_demo(args.output, seed=args.seed, n=args.n, tool_calls=tool_calls)
    print(f"wrote {n} conversations to {args.output}")
    return 0


def _data_check(args: argparse.Namespace) -> int:
    from chatsft.data.clean import clean_records, quarantine_lines
    from chatsft.data.ids import read_exclusions
    from chatsft.data.report import format_report
    from chatsft.params import DataParams, load_params

    # The same rules as the clean stage: data.* from params.yaml when there is one.
    base = load_params(args.params).data if Path(args.params).is_file() else DataParams()
    params = base.model_copy(update={"raw": [Source(path=f, format=args.format)
                                             for f in args.files]})
    result = clean_records(params, strict=False,
                           excluded=frozenset(read_exclusions(args.exclude)))
    report = result.report()
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print(format_report(report, result.quarantine, examples=args.examples))
    for problem in result.errors:
        print(f"error: {problem}", file=sys.stderr)
    if args.quarantine:
        from chatsft.io import atomic_path

        with atomic_path(args.quarantine) as tmp:
            tmp.write_bytes(b"".join(quarantine_lines(result.quarantine)))
    return 1 if report["quarantined"] or result.errors else 0


def _data_exclude(args: argparse.Namespace) -> int:
    from chatsft.data.ids import add_exclusions, ids_in_file

    ids = list(args.ids)
    for name in args.file or []:
        ids += ids_in_file(name)
    if not ids:
        print("no ids given (ID... or --file FILE)", file=sys.stderr)
        return 2
    added = add_exclusions(args.list, ids)
    print(f"{len(added)} id(s) added to {args.list} ({len(ids) - len(added)} already listed or "
          "repeated); the next `dvc repro` quarantines them (reason: excluded by user)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="demo data and data checks").add_subparsers(
        dest="data_command", required=True
    )
    sample = data.add_parser("sample", help="write the deterministic demo data set")
    sample.add_argument("--output", default="data/demo.jsonl")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("-n", type=int, default=3000)
    sample.add_argument("--tool-calls", type=int, default=None,
                        help="tool-use conversations added after the n others (default: as in "
                        "the shipped data/demo.jsonl)")
    sample.set_defaults(func=_data_sample, parser=sample)
    check = data.add_parser(
        "check", help="report what the clean stage would reject, without writing splits; "
        "exit status 1 when any record is rejected"
    )
    check.add_argument("files", nargs="+", help="files, globs or directories")
    add_field_flag(check, "--format", Source.model_fields["format"], dest="format")
    check.add_argument("--params", default="params.yaml",
                       help="take the data.* rules from this file when it exists")
    check.add_argument("--examples", type=int, default=3, help="rejected records shown per "
                       "reason")
    check.add_argument("--json", action="store_true", help="print the metrics/clean.json report")
    check.add_argument("--quarantine", metavar="FILE", help="also write the rejected records")
    check.add_argument("--exclude", default="data/exclude.txt", metavar="FILE",
                       help="ids to quarantine as `excluded by user`, as the clean stage does")
    check.set_defaults(func=_data_check, parser=check)
    exclude = data.add_parser(
        "exclude", help="add record ids (from data/clean/*.jsonl or metrics/hardest.jsonl) to "
        "the exclusion list the clean stage honours")
    exclude.add_argument("ids", nargs="*", metavar="ID")
    exclude.add_argument("--file", action="append", help="a file of ids, one a line (or a "
                         "JSONL file such as metrics/hardest.jsonl: its `id` fields)")
    exclude.add_argument("--list", default="data/exclude.txt", help="the exclusion list")
    exclude.set_defaults(func=_data_exclude, parser=exclude)
