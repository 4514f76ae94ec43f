"""The clean stage's core: read every source, validate, deduplicate, split, account.

Invariant (tested): for every source, kept + quarantined + unsampled = read. Nothing is
dropped without a line in the quarantine file saying which record and why.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from chatsft.data.formats import Reject, to_messages
from chatsft.data.sources import RawRecord, expand, read_file
from chatsft.data.validate import clean_messages, normalize
from chatsft.errors import UserError
from chatsft.params import DataParams

SPLITS = ("train", "validation", "test")


class CleanError(UserError):
    """The data cannot be trained on (for example, a source lost every record)."""


@dataclass
class SourceReport:
    read: int = 0
    kept: int = 0
    quarantined: int = 0
    unsampled: int = 0
    by_reason: Counter = field(default_factory=Counter)


@dataclass
class CleanResult:
    splits: dict[str, list[dict]]
    quarantine: list[dict]
    sources: dict[str, SourceReport]

    def report(self) -> dict:
        by_reason = Counter()
        for s in self.sources.values():
            by_reason.update(s.by_reason)
        return {
            "read": sum(s.read for s in self.sources.values()),
            "kept": sum(s.kept for s in self.sources.values()),
            "quarantined": len(self.quarantine),
            "unsampled": sum(s.unsampled for s in self.sources.values()),
            "splits": {k: len(v) for k, v in self.splits.items()},
            "by_reason": dict(sorted(by_reason.items())),
            "by_source": {
                name: {
                    "read": s.read,
                    "kept": s.kept,
                    "quarantined": s.quarantined,
                    "unsampled": s.unsampled,
                    "by_reason": dict(sorted(s.by_reason.items())),
                }
                for name, s in self.sources.items()
            },
        }


def _unit(seed: int, key: str) -> float:
    """A stable uniform number in [0, 1) for a key: the same on every machine and run."""
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def prompt_key(messages: list[dict]) -> str:
    """Conversations with the same user turns share a split, so no test prompt is in train."""
    return "\x1e".join(normalize(m["content"]) for m in messages if m["role"] == "user")


def split_of(messages: list[dict], params: DataParams) -> str:
    u = _unit(params.seed, prompt_key(messages))
    if u < params.test_fraction:
        return "test"
    if u < params.test_fraction + params.validation_fraction:
        return "validation"
    return "train"


def _quarantine_entry(rec: RawRecord, reason: str, detail: str) -> dict:
    entry = {"source": rec.source, "where": rec.locator, "reason": reason, "detail": detail}
    if rec.error is None:
        entry["record"] = rec.value
    else:
        entry["text"] = rec.text
    return entry


def clean_records(params: DataParams) -> CleanResult:
    """Run validation, deduplication and splitting over every configured source."""
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    quarantine: list[dict] = []
    reports: dict[str, SourceReport] = {}
    seen_exact: set[str] = set()
    seen_near: set[str] = set()

    for source in params.sources():
        for path in expand(source.path):
            report = reports.setdefault(str(path), SourceReport())
            kept: list[tuple[str, dict]] = []
            for rec in read_file(path):
                report.read += 1
                try:
                    if rec.error is not None:
                        raise Reject(*rec.error)
                    messages = clean_messages(
                        to_messages(rec.value, source.format),
                        max_chars=params.max_chars,
                        max_turns=params.max_turns,
                        control_chars=params.control_chars,
                        special_tokens=params.special_tokens,
                    )
                    exact = json.dumps(messages, ensure_ascii=False)
                    if exact in seen_exact:
                        raise Reject("duplicate", "same messages as an earlier record")
                    near = "\x1e".join(f"{m['role']}:{normalize(m['content'])}" for m in messages)
                    if params.near_duplicates and near in seen_near:
                        raise Reject("near duplicate", "same text after normalization")
                    seen_exact.add(exact)
                    seen_near.add(near)
                except Reject as r:
                    report.quarantined += 1
                    report.by_reason[r.reason] += 1
                    quarantine.append(_quarantine_entry(rec, r.reason, r.detail))
                    continue
                kept.append((split_of(messages, params), {"messages": messages}))
            if source.max_samples is not None and len(kept) > source.max_samples:
                rng = random.Random(f"{params.seed}:{path}")
                chosen = sorted(rng.sample(range(len(kept)), source.max_samples))
                report.unsampled += len(kept) - len(chosen)
                kept = [kept[i] for i in chosen]
            report.kept += len(kept)
            weight_rng = random.Random(f"{params.seed}:weight:{path}")
            for split, record in kept:
                splits[split].append(record)
                if split == "train":
                    extra = source.weight - 1
                    copies = int(extra) + (weight_rng.random() < extra - int(extra))
                    splits[split].extend([record] * copies)
            if report.read and report.kept == 0:
                top = ", ".join(f"{k} ({v})" for k, v in report.by_reason.most_common(3))
                raise CleanError(f"{path}: every record was rejected; top reasons: {top}")
    return CleanResult(splits, quarantine, reports)


def write_clean(result: CleanResult, out_dir: Path) -> None:
    """Write the splits and the quarantine file into `out_dir` (already a temporary dir)."""
    from chatsft.io import write_jsonl

    out_dir.mkdir(parents=True, exist_ok=True)
    for split, records in result.splits.items():
        write_jsonl(out_dir / f"{split}.jsonl", records)
    write_jsonl(out_dir / "quarantine.jsonl", result.quarantine)
