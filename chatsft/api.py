"""Training without DVC: clean, base, tokenize and train in one go, with the pipeline's code.

    from chatsft.api import ChatTrainer, get_preset

    model, data, training = get_preset("qwen2.5-0.5b", data_path="my_chats.jsonl")
    ChatTrainer(model, data, training, output_dir="runs/qwen").train()

`chatsft train --model-name ... --data-path ...` does the same from the command line.
Everything lands in `output_dir` (`Layout.in_dir`): `model/` (the fine-tuned model), `clean/`
and `clean.json` (the clean report), `base/`, `tokenized/` (with `quarantine.jsonl`),
`tokenize.json`, `mask_audit.html`, `checkpoints/` (a rerun after a crash resumes from them),
`logs/` (dvclive), `train.json` (the summary) and `params.yaml` (the params used).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from chatsft.config import Layout
from chatsft.io import remove_stale_temporaries, write_text
from chatsft.params import DataParams, ModelParams, Params, TokenizeParams, TrainParams
from chatsft.pipeline import base, clean, tokenize, train
from chatsft.presets import DataSection, get_preset

__all__ = ["ChatTrainer", "get_preset", "run_pipeline"]


class ChatTrainer:
    """A trainer built from the model, data and training sections; `.train()` runs clean,
    base, tokenize and train like `dvc repro` would, into `output_dir`."""

    def __init__(self, model: ModelParams, data: DataParams | DataSection,
                 training: TrainParams, output_dir: str | Path = "outputs") -> None:
        tokenize = data.tokenize if isinstance(data, DataSection) else TokenizeParams()
        clean = DataParams(**data.model_dump(exclude={"tokenize"}))
        self.params = Params(model=model, data=clean, tokenize=tokenize, train=training)
        self.output_dir = Path(output_dir)

    def train(self) -> dict:
        return run_pipeline(self.params, self.output_dir)


def run_pipeline(params: Params, output_dir: str | Path) -> dict:
    """The pipeline's stages in order, into `Layout.in_dir(output_dir)`; returns the training
    summary. The params used are written first: with train.distributed set, each process of
    the launch reads them there."""
    layout = Layout.in_dir(output_dir)
    layout.params.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(layout.params)
    write_text(layout.params, yaml.safe_dump(params.model_dump(), sort_keys=False,
                                             allow_unicode=True))
    summary: dict = {}
    for stage in (clean, base, tokenize, train):
        remove_stale_temporaries(*stage.outputs(layout))  # what a killed earlier run left
        summary = stage.run(params, layout)
    return summary
