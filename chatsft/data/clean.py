"""The clean stage's core: read every source, validate, deduplicate, split, account.

Every record read ends kept (in a split), quarantined with its reason, or unsampled (left
out by the source's max_samples or a weight below 1): for every source, kept + quarantined +
unsampled = read. A source whose every record is rejected, or that holds no
record, stops the stage rather than training on nothing.

Splits are grouped by prompt: a conversation's split is a hash of its first user turn
(normalized), so every conversation sharing any prompt prefix (the messages before one of
its assistant turns) with another lands in the same split, and no validation or test prompt
is also in train. This module imports neither torch nor transformers: it must stay fast.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chatsft.data.errors import Reject
from chatsft.data.formats import detect_format, to_record
from chatsft.data.ids import EXCLUDE_FILE, record_id, with_id
from chatsft.data.mixing import Kept, Pool, mix
from chatsft.data.report import SPLITS, SourceReport, build_report
from chatsft.data.sources import RawRecord, SourceError, dump_json, expand, read_file
from chatsft.data.system_prompts import SystemPrompts
from chatsft.data.validate import ContentRules, clean_record, normalize
from chatsft.errors import UserError
from chatsft.params import DataParams

__all__ = [
    "SPLITS", "CleanError", "CleanResult", "Cleaner", "clean_records", "quarantine_lines",
    "write_clean",
]


class CleanError(UserError):
    """The data cannot be trained on (for example, a source lost every record)."""


@dataclass
class CleanResult:
    """Split lines (UTF-8 JSON, no newline), the quarantine entries, and the account."""

    splits: dict[str, list[bytes]]
    quarantine: list[dict]
    sources: dict[str, SourceReport]
    errors: list[str] = field(default_factory=list)  # sources that yielded nothing usable
    extra: dict = field(default_factory=dict)  # the report's mixture and system_prompts

    def records(self, split: str, ids: bool = False) -> list[dict]:
        """The split's records as cleaned, without the `source` each line also carries, and
        without their ids unless asked."""
        records = [json.loads(line) for line in self.splits[split]]
        for record in records:
            record.pop("source", None)
            if not ids:
                del record["id"]
        return records

    def report(self) -> dict:
        return build_report(self.sources, {k: len(v) for k, v in self.splits.items()}
                            ) | self.extra


def _hash(data: bytes, size: int = 16) -> bytes:
    return hashlib.blake2b(data, digest_size=size).digest()


class Cleaner:
    """Cleans records one at a time and remembers what it kept, to find duplicates."""

    def __init__(self, params: DataParams, excluded: frozenset[str] = frozenset()) -> None:
        self.rules = ContentRules.from_params(params)
        self.excluded = excluded
        self.allow_tools = params.tool_calls == "keep"
        self.near_duplicates = params.near_duplicates
        self.seed = f"{params.seed}\x00".encode()
        self.test_cut = int(params.test_fraction * 2**64)
        self.validation_cut = self.test_cut + int(params.validation_fraction * 2**64)
        # Output line, or digest of the normalized text -> "source locator" of its first record.
        # Only strings are kept: holding the parsed records would make Python's cyclic GC
        # rescan every one of them again and again (it halved the throughput).
        self.seen_exact: dict[bytes, str] = {}
        self.seen_near: dict[bytes, str] = {}

    def split_of(self, key: str) -> str:
        u = int.from_bytes(_hash(self.seed + key.encode(), 8), "big")
        if u < self.test_cut:
            return "test"
        if u < self.validation_cut:
            return "validation"
        return "train"

    def clean(self, rec: RawRecord, fmt: str, report: SourceReport) -> tuple[bytes, str, str]:
        """The output line (without id), split and id of one raw record, or raise Reject."""
        if rec.error is not None:
            raise Reject(*rec.error)
        if isinstance(rec.value, dict):
            if fmt == "auto":
                try:
                    fmt = detect_format(rec.value)
                except Reject:
                    report.formats["unknown"] += 1
                    raise
            report.formats[fmt] += 1
        record = clean_record(to_record(rec.value, fmt, self.allow_tools), self.rules)
        try:
            line = dump_json(record)
        except UnicodeEncodeError:
            raise Reject("lone surrogate", "an unpaired UTF-16 surrogate outside message "
                                           "content (role, tools or tool calls)") from None
        rid = record_id(line)
        if rid in self.excluded:
            raise Reject("excluded by user", f"id {rid} is listed in {EXCLUDE_FILE}")
        first = self.seen_exact.get(line)
        if first is not None:
            raise Reject("duplicate", f"same as {first}")
        # One pass for the near-duplicate key and the split key (the hot path).
        user = None
        parts = []
        extra = len(record) > 1  # tools
        for m in record["messages"]:
            n = normalize(m["content"])
            role = m["role"]
            if user is None and role == "user":
                user = n
            parts.append(role)
            parts.append(n)
            extra = extra or len(m) > 2  # tool_calls
        if self.near_duplicates:
            if extra:
                # Tool calls and tools are part of what makes a conversation distinct.
                parts.append(json.dumps([record.get("tools"), [m.get("tool_calls")
                                         for m in record["messages"]]], sort_keys=True))
            near = _hash("\x1f".join(parts).encode())
            first = self.seen_near.get(near)
            if first is not None:
                raise Reject("near duplicate", f"same as {first} after normalization")
            self.seen_near[near] = f"{rec.source} {rec.locator}"
        self.seen_exact[line] = f"{rec.source} {rec.locator}"
        return line, self.split_of(user), rid


def _quarantine_entry(rec: RawRecord, reason: str, detail: str) -> dict:
    return {"source": rec.source, "where": rec.locator, "reason": reason, "detail": detail,
            "text": rec.original()}


def clean_records(params: DataParams, *, strict: bool = True,
                  excluded: frozenset[str] = frozenset(), epochs: int = 1) -> CleanResult:
    """Validate, deduplicate, split and mix every configured source (the training mixture
    drawn once per epoch for `epochs` > 1: data.resample_each_epoch).

    With `strict` (the stage), a source that holds no record or loses every one raises
    CleanError; otherwise (`data check`) that is listed in `CleanResult.errors`. Records whose
    id is in `excluded` are quarantined (`excluded by user`)."""
    cleaner = Cleaner(params, excluded)
    system = SystemPrompts(params.system_prompts, cleaner.rules, params.seed)
    pools: list[Pool] = []
    splits: dict[str, list[bytes]] = {s: [] for s in SPLITS}
    quarantine: list[dict] = []
    reports: dict[str, SourceReport] = {}
    errors: list[str] = []
    for index, source in enumerate(params.sources()):
        pool = Pool(index, source)
        pools.append(pool)
        tag = source_tag(source.path)
        for path in expand(source.path):
            name = str(path)
            if name in reports:
                raise SourceError(f"{name}: listed twice in data.raw")
            report = reports[name] = SourceReport()
            for rec in read_file(path):
                report.read += 1
                try:
                    line, split, rid = cleaner.clean(rec, source.format, report)
                except Reject as r:
                    report.quarantined += 1
                    report.by_reason[r.reason] += 1
                    quarantine.append(_quarantine_entry(rec, r.reason, r.detail))
                    continue
                report.kept += 1
                line = system.apply(with_id(line, rid), rid)
                pool.kept.append(Kept(line[:-1] + tag, split, report))
            problem = _emptiness(name, report)
            if problem and strict:
                raise CleanError(problem)
            if problem:
                errors.append(problem)
    extra = {"mixture": mix(pools, params, splits, epochs)}
    if params.system_prompts:
        extra["system_prompts"] = system.report()
    return CleanResult(splits, quarantine, reports, errors, extra)


def source_tag(name: str) -> bytes:
    """The end of a clean record's line naming its `data.raw` entry: `,"source":NAME}`.

    Added after deduplication (two sources' copies of one conversation stay duplicates) by
    splicing bytes rather than re-serializing each record. Tokenize carries it into a column,
    so that train and evaluate report the loss per source."""
    return b',"source":' + dump_json(name) + b"}"


def _emptiness(name: str, report: SourceReport) -> str | None:
    if report.read == 0:
        return f"{name}: no records in this file"
    if report.kept == 0:
        top = ", ".join(f"{k} ({v})" for k, v in report.by_reason.most_common(3))
        return (f"{name}: every one of its {report.read} records was rejected; top reasons: "
                f"{top} (see the quarantine, or run `chatsft data check {name}`)")
    return None


def quarantine_lines(entries: list[dict]) -> Iterator[bytes]:
    """Quarantine entries as JSONL lines. Lone surrogates (bad bytes kept by surrogateescape)
    are written as JSON escapes, so every entry's `text` reads back to exactly the record's
    original bytes (`text.encode("utf-8", "surrogateescape")`)."""
    for entry in entries:
        try:
            line = json.dumps(entry, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            line = json.dumps(entry).encode("ascii")
        yield line + b"\n"


def write_clean(result: CleanResult, out_dir: Path) -> None:
    """Write the splits and the quarantine into `out_dir` (a temporary directory that the
    caller renames into place)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, lines in result.splits.items():
        with open(out_dir / f"{split}.jsonl", "wb") as f:
            f.writelines(line + b"\n" for line in lines)
    with open(out_dir / "quarantine.jsonl", "wb") as f:
        f.writelines(quarantine_lines(result.quarantine))
