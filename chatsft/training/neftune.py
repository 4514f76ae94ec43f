"""NEFTune (Jain et al. 2023, arXiv:2310.05914): uniform noise on the input embeddings while
training, scaled per sample by alpha / sqrt(L * d), L the sample's length and d the hidden size.

Why not transformers' `TrainingArguments.neftune_noise_alpha`: its hook
(`transformers.integrations.neftune.neftune_post_forward_hook`) takes L as the batch's row
width, `output.size(1)`. On packed rows that is the row (512 tokens holding several
conversations), so every sample gets the noise of a 512-token one: a 40-token sample gets
sqrt(512 / 40) = 3.6x too little. On padded batches it is the padded width, and the padding
gets noise too. The paper's code scales by each sample's own length (its `input_mask` sum).

Here a forward pre-hook on the decoder (the module that owns the embedding and receives
`position_ids` / `attention_mask` as keyword arguments, also under peft, whose LoRA wrapper
calls the causal-LM's `forward` directly but the decoder through `__call__`) reads the batch
layout, and a forward hook on the embedding adds the noise:

- packed rows (position_ids, no attention mask): a sample starts where position_ids restart
  at 0, so each token's L is the length of the run it belongs to; a packed row is then noised
  exactly as its samples would be one by one (tested). The padding tail of a packed row is one
  more run with no labels that no sample attends to, so its noise changes nothing.
- padded rows (attention mask): L is the row's count of real tokens; padding gets no noise.
- neither: L is the row width.

Only in training mode (`module.training`): Trainer's evaluation runs in eval mode, and the
hooks are removed when training ends, so evaluation, generation and the saved model never see
noise. The noise comes from torch's global generator, seeded by Trainer: same seed, same run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


def token_scales(
    shape: tuple[int, int], hidden_size: int, alpha: float,
    position_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """(batch, seq) bound of each token's uniform noise: alpha / sqrt(L * d), L the length of
    the token's sample (0 on padding)."""
    batch, width = shape
    if attention_mask is not None and attention_mask.dim() == 2:
        mask = attention_mask.to(device=device, dtype=torch.float32)
        lengths = mask.sum(dim=1, keepdim=True).clamp(min=1).expand(batch, width)
        return mask * alpha / torch.sqrt(lengths * hidden_size)
    if position_ids is not None and position_ids.shape[-1] == width:
        pos = position_ids.to(device).expand(batch, width)
        starts = pos == 0
        starts[:, 0] = True
        runs = starts.cumsum(dim=1) - 1  # index of the sample within its row
        ids = runs + torch.arange(batch, device=pos.device)[:, None] * width
        counts = torch.bincount(ids.flatten(), minlength=batch * width)
        lengths = counts[ids].to(torch.float32)
    else:
        lengths = torch.full((batch, width), float(width), device=device)
    return alpha / torch.sqrt(lengths * hidden_size)


class NEFTune:
    """Adds NEFTune noise to `model`'s input embeddings while it is in training mode; use as
    a context manager around training (the hooks are removed on exit)."""

    def __init__(self, model: nn.Module, alpha: float) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.embeddings = base.get_input_embeddings()
        decoder = base.get_decoder() if hasattr(base, "get_decoder") else None
        self.decoder = decoder if isinstance(decoder, nn.Module) else base
        self.alpha = alpha
        self.layout: dict[str, torch.Tensor | None] = {}
        self.handles: list = []

    def __enter__(self) -> NEFTune:
        self.handles = [
            self.decoder.register_forward_pre_hook(self._read_layout, with_kwargs=True),
            self.decoder.register_forward_hook(self._forget_layout),
            self.embeddings.register_forward_hook(self._add_noise),
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
        self.layout = {}

    def _read_layout(self, module, args, kwargs):
        self.layout = {"position_ids": kwargs.get("position_ids"),
                       "attention_mask": kwargs.get("attention_mask")}

    def _forget_layout(self, module, args, output):
        self.layout = {}

    def _add_noise(self, module, args, output: torch.Tensor) -> torch.Tensor | None:
        if not module.training:
            return None
        batch, width, hidden = output.shape
        scale = token_scales((batch, width), hidden, self.alpha, device=output.device,
                             **self._layout_for(batch, width))
        noise = torch.empty_like(output).uniform_(-1, 1) * scale[..., None].to(output.dtype)
        return output + noise

    def _layout_for(self, batch: int, width: int) -> dict:
        """The captured layout if it belongs to this call (an embedding called on its own has
        none: then L is the row width)."""
        layout = {}
        for key, value in self.layout.items():
            if isinstance(value, torch.Tensor) and value.shape[-1] == width and (
                    value.dim() == 1 or value.shape[0] in (1, batch)):
                layout[key] = value
        return layout


@contextmanager
def neftune(model: nn.Module, alpha: float | None) -> Iterator[NEFTune | None]:
    """NEFTune on `model` for the duration of the block; nothing when `alpha` is None."""
    if alpha is None:
        yield None
        return
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"neftune alpha must be a positive number, got {alpha}")
    with NEFTune(model, alpha) as hooks:
        yield hooks
