"""Progress bars stay for long work: weight loading is quiet only for small local weights."""

from __future__ import annotations

from transformers.utils import logging as hf_logging

from chatsft.logs import SMALL_WEIGHTS, loading_bar_for


def test_loading_bar_is_off_only_for_small_local_weights(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    for folder in (small, big):
        folder.mkdir()
    (small / "model.safetensors").write_bytes(b"x" * 1000)
    with open(big / "model-00001-of-00002.safetensors", "wb") as f:
        f.truncate(SMALL_WEIGHTS)  # sparse: 1 GiB that takes no disk
    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.enable_progress_bar()
    try:
        with loading_bar_for(small):
            assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.is_progress_bar_enabled()  # restored
        for source in (big, "Qwen/Qwen2.5-0.5B-Instruct"):  # big, or still to download
            with loading_bar_for(source):
                assert hf_logging.is_progress_bar_enabled()
    finally:
        (hf_logging.enable_progress_bar if was_on else hf_logging.disable_progress_bar)()
