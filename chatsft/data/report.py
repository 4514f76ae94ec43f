"""The clean stage's account of every record: counts by source and reason, and its text form.

`metrics/clean.json` holds `build_report()`'s dict (`CleanResult.report()`), with one
`SourceReport.to_dict()` per source; the stage and `chatsft data check` print `format_report()`
of it. Invariant (tested): for every source, kept + quarantined + unsampled =
read.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from chatsft.config import SPLITS


@dataclass
class SourceReport:
    """Counts for one file. `kept` passed cleaning and are written; `unsampled` passed cleaning
    but were left out by the source's max_samples or a weight below 1; `written` counts lines
    per split (train repeats included)."""

    read: int = 0
    kept: int = 0
    quarantined: int = 0
    unsampled: int = 0
    formats: Counter = field(default_factory=Counter)
    by_reason: Counter = field(default_factory=Counter)
    written: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {
            "read": self.read,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "unsampled": self.unsampled,
            "formats": dict(sorted(self.formats.items())),
            "by_reason": dict(sorted(self.by_reason.items())),
            "written": {s: self.written[s] for s in SPLITS},
        }


def build_report(sources: dict[str, SourceReport], splits: dict[str, int]) -> dict:
    by_reason: Counter = Counter()
    for s in sources.values():
        by_reason.update(s.by_reason)
    return {
        "read": sum(s.read for s in sources.values()),
        "kept": sum(s.kept for s in sources.values()),
        "quarantined": sum(s.quarantined for s in sources.values()),
        "unsampled": sum(s.unsampled for s in sources.values()),
        "splits": {s: splits.get(s, 0) for s in SPLITS},
        "by_reason": dict(sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))),
        "by_source": {name: s.to_dict() for name, s in sources.items()},
    }


def format_report(report: dict, quarantine: list[dict], examples: int = 3) -> str:
    """A person's view: per source, what was kept and why each rejected record was."""
    shown: dict[tuple[str, str], list[dict]] = {}
    for q in quarantine:
        group = shown.setdefault((q["source"], q["reason"]), [])
        if len(group) < examples:
            group.append(q)
    lines = []
    for name, s in report["by_source"].items():
        formats = ", ".join(f"{k} {v}" for k, v in s["formats"].items()) or "none"
        lines.append(f"{name}: read {s['read']}, kept {s['kept']}, quarantined "
                     f"{s['quarantined']} (formats: {formats})")
        if s["unsampled"]:
            lines.append(f"  {s['unsampled']} valid records left out by max_samples or weight")
        for reason, n in sorted(s["by_reason"].items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"  {n:>7}  {reason}")
            for q in shown.get((name, reason), []):
                lines.append(f"           {q['where']}: {q['detail'][:120]}")
    sp = report["splits"]
    unsampled = f", unsampled {report['unsampled']}" if report["unsampled"] else ""
    lines.append(f"total: read {report['read']}, kept {report['kept']}, quarantined "
                 f"{report['quarantined']}{unsampled}; written train {sp['train']}, validation "
                 f"{sp['validation']}, test {sp['test']}")
    return "\n".join(lines)
