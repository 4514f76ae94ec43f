"""Stage tokenize: clean splits -> data/tokenized (datasets), stats, quarantine and mask audit.

A parity mismatch between training and inference tokens stops the stage (exit status 1)
naming the record and the first differing token."""

import sys
from pathlib import Path

from chatsft.errors import user_errors_exit
from chatsft.io import write_json, write_text
from chatsft.modeling import load_tokenizer
from chatsft.stage import start_stage
from chatsft.tokenize_data import audit_html, write_tokenized

CLEAN_DIR = Path("data/clean")
BASE_DIR = "models/base"
OUT_DIR = Path("data/tokenized")
STATS = "metrics/tokenize.json"
AUDIT = "metrics/mask_audit.html"


@user_errors_exit
def main() -> None:
    all_params = start_stage(["tokenize", "model"], [OUT_DIR, STATS, AUDIT])
    params = all_params.tokenize
    tokenizer = load_tokenizer(BASE_DIR, trust_remote_code=all_params.model.trust_remote_code)
    datasets, quarantine, stats = write_tokenized(CLEAN_DIR, tokenizer, params, OUT_DIR)
    write_json(STATS, stats)
    write_text(AUDIT, audit_html(tokenizer, datasets["train"], params.audit_samples,
                                 params.ignore_index))
    for split in ("train", "validation", "test"):
        s = stats[split]
        print(f"tokenize {split}: {s['samples']} samples from {s['kept']}/{s['conversations']} "
              f"conversations, {s['tokens']} tokens, {s['supervised_fraction']:.1%} supervised, "
              f"{s['truncated']} truncated, quarantined {s['quarantined'] or 'none'}")
    if quarantine:
        print(f"quarantined records, with reason: {OUT_DIR}/quarantine.jsonl")
    for warning in stats["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"mask audit: {AUDIT}")


if __name__ == "__main__":
    main()
