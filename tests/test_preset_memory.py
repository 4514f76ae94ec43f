"""The presets' memory model against the measured peak of scaled-down presets on CPU
(benchmarks/preset_memory.py): one full fine-tune and one LoRA recipe."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def test_memory_parts_add_up_to_the_estimate():
    from chatsft.presets import PRESETS, estimate_memory, memory_parts

    for p in PRESETS.values():
        parts = memory_parts(p, p.arch)
        assert estimate_memory(p)["total"] == pytest.approx(
            (1.1 * sum(parts.values()) + 1e9) / 1e9, abs=0.051)


@pytest.mark.ci
def test_estimate_within_25_percent_of_measured(tmp_path):
    out = tmp_path / "memory.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "preset_memory.py"),
                    "--preset", "qwen2.5-0.5b", "--preset", "qwen2.5-72b", "--out", str(out)],
                   check=True, capture_output=True, text=True, timeout=600)
    rows = {r["preset"]: r for r in json.loads(out.read_text())}
    assert rows["qwen2.5-0.5b"]["measured_as"] == "full"
    assert rows["qwen2.5-72b"]["measured_as"] == "lora"  # QLoRA's 4-bit base needs a GPU
    for row in rows.values():
        assert 0.75 <= row["ratio"] <= 1.25, row
