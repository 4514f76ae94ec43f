"""Stage tokenize: clean splits -> tokenized datasets, stats, quarantine and mask audit.

A parity mismatch between training and inference tokens stops the stage (a UserError naming
the record and the first differing token)."""

from __future__ import annotations

import sys
from pathlib import Path

from chatsft.config import SPLITS, Layout, Params
from chatsft.io import write_json, write_text
from chatsft.mask_audit import audit_html
from chatsft.model.load import load_tokenizer
from chatsft.tokenize_data import write_tokenized

SECTIONS = ("tokenize", "model")


def outputs(layout: Layout) -> list[Path]:
    return [layout.tokenized, layout.tokenize_stats, layout.mask_audit]


def run(params: Params, layout: Layout) -> dict:
    p = params.tokenize
    tokenizer = load_tokenizer(layout.base, trust_remote_code=params.model.trust_remote_code)
    datasets, quarantine, stats = write_tokenized(layout.clean, tokenizer, p, layout.tokenized)
    write_json(layout.tokenize_stats, stats)
    write_text(layout.mask_audit, audit_html(tokenizer, datasets["train"], p.audit_samples))
    for split in SPLITS:
        s = stats[split]
        print(f"tokenize {split}: {s['samples']} samples from {s['kept']}/{s['conversations']} "
              f"conversations, {s['tokens']} tokens, {s['supervised_fraction']:.1%} supervised, "
              f"{s['truncated']} truncated, quarantined {s['quarantined'] or 'none'}")
    if quarantine:
        print(f"tokenize: {len(quarantine)} conversations quarantined, with reason: "
              f"{layout.tokenized / 'quarantine.jsonl'}")
    for warning in stats["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"mask audit: {layout.mask_audit}")
    return stats
