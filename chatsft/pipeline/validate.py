"""Stage validate: check the whole params.yaml and list data.raw's files with their hashes.

The pipeline's first stage, run at every `dvc repro` (always_changed): a bad key (a typo in
`dvc exp run -S ...`) stops the pipeline before DVC removes any stage's outputs. DVC cannot
take a list from params as dependencies, so the clean stage depends on this list
(`Layout.sources`) and reruns when the user's data files change.
"""

from __future__ import annotations

from pathlib import Path

from chatsft.config import Layout, Params
from chatsft.data.sources import fingerprint
from chatsft.io import write_json

SECTIONS = tuple(Params.model_fields)


def outputs(layout: Layout) -> list[Path]:
    return [layout.sources]


def run(params: Params, layout: Layout) -> dict:
    files = fingerprint([s.path for s in params.data.sources()])
    write_json(layout.sources, files)
    print(f"validate: params.yaml is valid; data.raw names {len(files)} files "
          f"({layout.sources})")
    return {"files": len(files)}
