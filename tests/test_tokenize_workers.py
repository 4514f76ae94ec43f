"""Encoding a split over several processes: this one takes its share, the tokenizer's own
threads stay off while the processes share the cores."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.tokenize_workers import PARALLELISM, encode_chunks

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import json, sys
from transformers import AutoTokenizer
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.tokenize_data import tokenize_split
records = json.load(open(sys.argv[2]))
encoder = ChatEncoder(AutoTokenizer.from_pretrained(sys.argv[1]))
encoder.encode_records(records[:64])  # a batch: the Rust tokenizer starts its thread pool
_, _, stats = tokenize_split(records, encoder, "train", num_proc=2)
print("samples", stats["samples"])
"""


def test_forked_workers_finish_when_the_user_turned_tokenizer_threads_on(
        demo_records, chatml_tokenizer, tmp_path):
    """TOKENIZERS_PARALLELISM=true (set by users to silence tokenizers' fork warning) and a
    thread pool already started in the parent: a forked worker that used the pool hung."""
    chatml_tokenizer.save_pretrained(tmp_path / "tok")
    records = demo_records * 2
    (tmp_path / "records.json").write_text(json.dumps(records))
    env = dict(os.environ, PYTHONPATH=str(ROOT), **{PARALLELISM: "true"})
    try:
        out = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "tok"),
                              str(tmp_path / "records.json")], env=env, capture_output=True,
                             text=True, timeout=120)
    except subprocess.TimeoutExpired as err:
        raise AssertionError("tokenize_split with 2 processes hung") from err
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"samples {len(records)}" in out.stdout


def test_the_variable_and_the_encoder_are_restored(demo_records, chatml_tokenizer,
                                                   monkeypatch):
    monkeypatch.setenv(PARALLELISM, "true")
    encoder = ChatEncoder(chatml_tokenizer)
    one = list(encode_chunks(demo_records, encoder, 1))
    two = list(encode_chunks(demo_records, encoder, 2))
    assert os.environ[PARALLELISM] == "true" and encoder.masker.batch_thread is None
    assert [c.outcomes for c in one] != [] and len(two) == 2
    assert sum((c.outcomes for c in one), []) == sum((c.outcomes for c in two), [])
    monkeypatch.delenv(PARALLELISM)
    list(encode_chunks(demo_records, encoder, 2))
    assert PARALLELISM not in os.environ
