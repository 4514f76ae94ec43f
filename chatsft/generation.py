"""Batched generation through exactly the training template and its end-of-turn tokens."""

from __future__ import annotations

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from chatsft.params import GenerationParams
from chatsft.template import ChatEncoder


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The end-of-turn token(s) and eos: generation stops at whichever comes first."""
    ids = set()
    eos = model.generation_config.eos_token_id
    ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tok in tokenizer.get_vocab():
            ids.add(tid)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def generation_config(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, p: GenerationParams
) -> GenerationConfig:
    kwargs = dict(
        max_new_tokens=p.max_new_tokens,
        do_sample=p.do_sample,
        eos_token_id=stop_token_ids(model, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        repetition_penalty=p.repetition_penalty,
    )
    if p.do_sample:
        kwargs.update(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k or None)
    return GenerationConfig(**kwargs)


@torch.inference_mode()
def generate_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict]],
    p: GenerationParams,
) -> list[tuple[str, int]]:
    """Reply text and generated-token count for each prompt, in input order.

    Prompts are sorted by length so each left-padded batch wastes little; the KV cache is on.
    """
    encoder = ChatEncoder(tokenizer)
    encoded = [encoder.encode_prompt(m) for m in prompts]
    order = sorted(range(len(encoded)), key=lambda i: (len(encoded[i]), i))
    config = generation_config(model, tokenizer, p)
    stops = set(config.eos_token_id)
    device = next(model.parameters()).device
    model.eval()
    out: list[tuple[str, int] | None] = [None] * len(prompts)
    for b in range(0, len(order), p.batch_size):
        idx = order[b : b + p.batch_size]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((len(idx), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, i in enumerate(idx):
            n = len(encoded[i])
            ids[r, width - n :] = torch.tensor(encoded[i])
            mask[r, width - n :] = 1
        if p.do_sample:
            torch.manual_seed(p.seed + b)
        gen = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
        )[:, width:].tolist()
        for r, i in enumerate(idx):
            tokens = gen[r]
            cut = next((k for k, t in enumerate(tokens) if t in stops), None)
            reply = tokens if cut is None else tokens[:cut]
            out[i] = (tokenizer.decode(reply, skip_special_tokens=True).strip(),
                      len(tokens) if cut is None else cut + 1)
    return out  # type: ignore[return-value]
