"""Tiny Qwen2 models whose next token depends only on the current one (exact, no training)."""

from __future__ import annotations

import torch

from chatsft.model.scratch import build_scratch_model
from chatsft.params import ScratchModel


def bigram_model(tok, sizes: ScratchModel, transitions: dict[int, int], default: int | None):
    """A model mapping token ids to the id that follows them; every other token is followed by
    `default` (with `default=None`, all other next tokens are about equally likely, logits
    rising slightly with the id, so there are no ties). Special tokens are never generated
    unless a transition names one. Attention and MLP outputs are zero, so the final hidden
    state is the current token's one-hot embedding, and the output layer maps each one-hot
    slot to its successor."""
    sizes = sizes.model_copy(update={"tie_word_embeddings": False})
    model = build_scratch_model(tok, sizes)
    assert len(transitions) < sizes.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        embed.zero_()
        embed[:, 0] = 1.0  # slot 0: every token without a transition
        head.zero_()
        if default is None:  # nearly uniform, without ties (top-k keeps all tied tokens)
            head[:, 0] = torch.linspace(0.0, 1e-3, head.shape[0])
        else:
            head[default, 0] = 10.0
        head[list(tok.added_tokens_decoder)] = -10.0
        for slot, (src, dst) in enumerate(transitions.items(), start=1):
            embed[src] = 0.0
            embed[src, slot] = 1.0
            head[dst, slot] = 10.0
    return model
