"""Stage clean: raw sources -> the clean splits and quarantine, and the clean report."""

from __future__ import annotations

import math
from pathlib import Path

from chatsft.config import Layout, Params
from chatsft.data.clean import clean_records, write_clean
from chatsft.data.ids import read_exclusions
from chatsft.data.mixing import format_mixture
from chatsft.data.report import format_report
from chatsft.io import atomic_path, write_json

# (and train.epochs, the number of draws, when data.resample_each_epoch is on)
SECTIONS = ("data",)


def outputs(layout: Layout) -> list[Path]:
    return [layout.clean, layout.clean_report]


def run(params: Params, layout: Layout) -> dict:
    epochs = math.ceil(params.train.epochs) if params.data.resample_each_epoch else 1
    result = clean_records(params.data, excluded=frozenset(read_exclusions(layout.exclude)),
                           epochs=epochs)
    report = result.report()
    with atomic_path(layout.clean, is_dir=True) as tmp:
        write_clean(result, tmp)
    write_json(layout.clean_report, report)
    print(format_report(report, result.quarantine))
    for line in format_mixture(report["mixture"]):
        print(line)
    if report["quarantined"]:
        print(f"clean: {report['quarantined']} of {report['read']} records quarantined, with "
              f"reason: {layout.split('quarantine')}")
    return report
