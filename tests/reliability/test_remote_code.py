"""Item 2 of issue 14: a model folder cannot switch on trust_remote_code by itself; its code
runs only with `--trust-remote-code` (or model.trust_remote_code) in this invocation."""

from __future__ import annotations

import json
import shutil

from tests.reliability.conftest import run

# Module code a downloaded folder could carry: it leaves a mark when it runs.
REMOTE = """
from pathlib import Path
Path({mark!r}).write_text("remote code ran")
from transformers import PreTrainedTokenizerFast
class Tok(PreTrainedTokenizerFast):
    pass
"""


def test_item2_model_folder_cannot_enable_remote_code(tmp_path, tiny_model_dir):
    """Item 2: a folder whose base.json says trust_remote_code and whose tokenizer points at
    its own Python file: `chatsft predict` (a real process) does not run that code without
    the flag, and runs it with `--trust-remote-code`."""
    folder = tmp_path / "downloaded"
    shutil.copytree(tiny_model_dir, folder)
    mark = tmp_path / "mark"
    (folder / "custom_tok.py").write_text(REMOTE.format(mark=str(mark)))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": [None, "custom_tok.Tok"]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "base.json").write_text(json.dumps({"trust_remote_code": True}))
    data = tmp_path / "prompts.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    args = ["-m", "chatsft.cli", "predict", "--model-path", str(folder), "--data-path",
            str(data), "--output-path", str(tmp_path / "out.jsonl"), "--max-new-tokens", "2"]
    env_home = {"HF_HOME": str(tmp_path / "hf")}  # where transformers copies remote modules

    proc = run(args, tmp_path, env_extra=env_home)
    assert not mark.exists(), "the folder's code ran without the user's consent"
    # transformers falls back to its own tokenizer class for the folder's files.
    assert proc.returncode == 0, proc.stderr[-3000:]

    proc = run([*args, "--trust-remote-code"], tmp_path, env_extra=env_home)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert mark.read_text() == "remote code ran"
