"""Generation through exactly the training template and its end-of-turn token.

Prompts are encoded with `ChatEncoder.encode_prompt`, the encoding the training masks were
checked against. Generation stops at the template's end-of-turn token
(`ChatEncoder.end_of_turn_ids`: found by encoding a one-exchange conversation, not from a list
of names) as well as at eos: a base model's eos is often `<|endoftext|>` while its chat turns
end with `<|im_end|>`. A reply's think block (`<think>...</think>`) is reported apart from its
answer (`Reply.reasoning`).

Batches are left-padded with an attention mask; transformers derives the position ids from
that mask (cumsum - 1), so a padded prompt sees the same positions as alone, and greedy outputs
match one-at-a-time generation up to float rounding (`benchmarks/generation_speed.py`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.chat_template.truncate import drop_oldest
from chatsft.errors import UserError
from chatsft.model.load import load_model
from chatsft.params import GenerationParams
from chatsft.reasoning import split_think


class PromptTooLong(UserError, ValueError):
    """A prompt does not fit the context window even with only its last user turn."""

    def __init__(self, tokens: int, budget: int) -> None:
        self.short = f"prompt too long: {tokens} tokens > {budget}"
        super().__init__(f"{self.short} (the context window less max_new_tokens), even with "
                         "only the last user turn")


class Reply(NamedTuple):
    text: str
    generated_tokens: int  # including the stop token, when one was generated
    ids: list[int]  # the reply's tokens, before the stop token
    reasoning: str | None = None  # the reply's think block, when it has one
    error: str | None = None  # why there is no reply (the prompt does not fit)


def load_for_inference(model_dir: str, dtype: str = "float32", device_map: str | None = None,
                       attn_implementation: str = "auto", *, trust_remote_code: bool = False):
    """`load_model`, in eval mode, moved to the GPU when there is one and no device_map."""
    model = load_model(model_dir, dtype, device_map, attn_implementation,
                       trust_remote_code=trust_remote_code)
    if device_map is None and torch.cuda.is_available():
        model = model.to("cuda")
    return model.eval()


def stop_token_ids(model: PreTrainedModel, encoder: ChatEncoder) -> list[int]:
    """The end-of-turn token(s), the model's eos and the tokenizer's eos."""
    ids = encoder.end_of_turn_ids()
    eos = model.generation_config.eos_token_id
    ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
    if encoder.tok.eos_token_id is not None:
        ids.add(encoder.tok.eos_token_id)
    return sorted(ids)


def generation_config(stops: list[int], pad_id: int, p: GenerationParams) -> GenerationConfig:
    """The decoding of `p`, with the sampling settings always explicit when sampling:
    transformers fills unset ones from the model's generation_config (Qwen's says top_k=20,
    temperature=0.7) or its own defaults (top_k=50), which would silently change what
    params.yaml asks for. top_k=0 disables top-k."""
    sampling = dict(temperature=p.temperature, top_p=p.top_p, top_k=p.top_k) if p.do_sample \
        else {}
    return GenerationConfig(
        max_new_tokens=p.max_new_tokens,
        do_sample=p.do_sample,
        repetition_penalty=p.repetition_penalty,
        num_beams=1,
        use_cache=True,  # saved training configs often say use_cache: false
        eos_token_id=stops,
        pad_token_id=pad_id,
        **sampling,
    )


def context_size(model: PreTrainedModel, max_context: int | None = None) -> int | None:
    return max_context or getattr(model.config, "max_position_embeddings", None)


def fit_prompt(
    encoder: ChatEncoder, messages: list[dict], budget: int | None, tools: list | None = None
) -> tuple[list[int], int]:
    """Prompt ids within `budget` tokens, dropping the oldest exchanges (`drop_oldest`; the
    system prompt and the tools are kept); returns the ids and the number of messages
    dropped."""
    ids = encoder.encode_prompt(messages, tools)
    if budget is None or len(ids) <= budget:
        return ids, 0
    best, dropped = drop_oldest(messages, lambda msgs: encoder.encode_prompt(msgs, tools),
                                lambda shorter: len(shorter) > budget)
    if dropped is None:
        raise PromptTooLong(len(ids if best is None else best), budget)
    return best, dropped


def decode_reply(tokenizer: PreTrainedTokenizerBase, tokens: list[int], stops: set[int]) -> Reply:
    """The answer before the first stop token (its think block apart), and how many tokens
    were generated."""
    cut = next((k for k, t in enumerate(tokens) if t in stops), None)
    reply = tokens if cut is None else tokens[:cut]
    reasoning, answer = split_think(tokenizer.decode(reply, skip_special_tokens=True))
    return Reply(answer.strip(), len(tokens) if cut is None else cut + 1, reply, reasoning)


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return ids, mask


@torch.inference_mode()
def generate_replies(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[dict]],
    p: GenerationParams,
    max_context: int | None = None,
    tools: list[list | None] | None = None,
) -> list[Reply]:
    """Reply text and generated-token count for each prompt, in input order; `tools`, when
    given, holds each prompt's tool definitions (or None).

    Prompts are sorted by length so each left-padded batch wastes little; the KV cache is on.
    Sampling is seeded per batch (seed + index of the batch's first sorted prompt), so a run is
    deterministic for a seed. Prompts longer than the context window lose their oldest turns;
    one that does not fit even so gets a Reply with `error` set (the others are answered).
    """
    encoder = ChatEncoder(tokenizer)
    stops = stop_token_ids(model, encoder)
    config = generation_config(stops, tokenizer.pad_token_id, p)
    context = context_size(model, max_context)
    budget = None if context is None else context - p.max_new_tokens
    encoded: dict[int, list[int]] = {}
    out: list[Reply | None] = [None] * len(prompts)
    for n, messages in enumerate(prompts):
        try:
            encoded[n] = fit_prompt(encoder, messages, budget, tools and tools[n])[0]
        except PromptTooLong as err:
            out[n] = Reply("", 0, [], error=err.short)
    # Seeds follow the position among the prompts that fit, as before any could fail.
    order = sorted(encoded, key=lambda i: (len(encoded[i]), i))
    device = next(model.parameters()).device
    model.eval()
    for b in range(0, len(order), p.batch_size):
        idx = order[b : b + p.batch_size]
        ids, mask = left_pad([encoded[i] for i in idx], tokenizer.pad_token_id)
        if p.do_sample:
            torch.manual_seed(p.seed + b)
        gen = model.generate(
            input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
        )[:, ids.shape[1] :].tolist()
        for r, i in enumerate(idx):
            out[i] = decode_reply(tokenizer, gen[r], set(stops))
    return out  # type: ignore[return-value]


@torch.inference_mode()
def top2_margin(model: PreTrainedModel, input_ids: list[int]) -> float:
    """Gap between the two largest next-token logits after `input_ids` (a near tie when tiny):
    explains a greedy divergence between batched and one-at-a-time generation."""
    device = next(model.parameters()).device
    logits = model(input_ids=torch.tensor([input_ids], device=device)).logits[0, -1].float()
    top = logits.topk(2).values
    return float(top[0] - top[1])
