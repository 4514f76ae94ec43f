"""Fixtures for the training tests: tokenized demo splits and a tiny pipeline workspace."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def tiny_splits(demo_records, chatml_tokenizer):
    """train / validation / test DatasetDict of the demo conversations (max_length 128)."""
    from datasets import DatasetDict

    from chatsft.chat_template.encoder import ChatEncoder
    from chatsft.tokenize_data import to_dataset, tokenize_split

    encoder = ChatEncoder(chatml_tokenizer, train_on="all", max_length=128)
    parts = {"train": demo_records[:240], "validation": demo_records[240:270],
             "test": demo_records[270:290]}
    return DatasetDict({name: to_dataset(tokenize_split(recs, encoder, name)[0])
                        for name, recs in parts.items()})


@pytest.fixture()
def workspace(tmp_path, tiny_model_dir, tiny_splits) -> Path:
    """A directory laid out like the pipeline before the train stage (models/base,
    data/tokenized, params.yaml), for running `python -m stages.train` in it."""
    from tests.training.helpers import tiny_params

    shutil.copytree(tiny_model_dir, tmp_path / "models" / "base")
    tiny_splits.save_to_disk(str(tmp_path / "data" / "tokenized"))
    params = tiny_params().model_dump()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path
