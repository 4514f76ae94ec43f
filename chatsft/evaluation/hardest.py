"""The hardest training conversations: the loss of every one under the final model.

A conversation's loss is the mean cross-entropy of its supervised tokens (all its assistant
turns and their end-of-turn tokens, as trained), so a long reply does not outrank a short
one by length alone. One pass, no gradients: the conversations are encoded exactly as the
tokenize stage does (same template, masks, truncation), packed into rows of max_length
(samples never attend to each other), and scored with the training loss's chunked
cross-entropy (`chatsft.loss.chunked_token_losses`), whose logits exist one chunk at a time.
A record repeated by a weight or ratio is scored once. The highest-loss ones, with the final
model's greedy reply to their last prompt, go to `metrics/hardest.md` (for a person) and
`metrics/hardest.jsonl` (ids for `chatsft data exclude --file`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from chatsft.batching.collate import Collator
from chatsft.batching.packing import IGNORE, first_fit_decreasing
from chatsft.chat_template.encoder import ChatEncoder
from chatsft.chat_template.render import attention_implementation
from chatsft.errors import UserError
from chatsft.evaluation.run import split_prompt
from chatsft.inference.generation import generate_replies
from chatsft.loss import chunked_token_losses
from chatsft.model.attention import VARLEN_KERNELS
from chatsft.params import GenerationParams

BATCH_TOKENS = 8192  # tokens per forward pass (rows of max_length)


@dataclass
class Scored:
    index: int  # position of the record's first line in the training split
    loss: float
    tokens: int  # supervised tokens


def unique_records(records: list[dict], path: str) -> list[tuple[int, dict]]:
    """(line index, record) of each distinct id, first occurrence."""
    seen: set[str] = set()
    out = []
    for n, rec in enumerate(records):
        rid = rec.get("id")
        if rid is None:
            raise UserError(f"{path}: line {n + 1} has no id (written by an older clean stage: "
                            "run `dvc repro clean`)")
        if rid not in seen:
            seen.add(rid)
            out.append((n, rec))
    return out


@torch.inference_mode()
def conversation_losses(model: PreTrainedModel, encoder: ChatEncoder,
                        records: list[tuple[int, dict]], capacity: int,
                        batch_tokens: int = BATCH_TOKENS) -> tuple[list[Scored], int]:
    """The loss of every record that encodes (and the number that do not: too long, say)."""
    samples: list[tuple[int, list[int], list[int]]] = []
    failed = 0
    for (n, _), res in zip(records, encoder.encode_records([r for _, r in records]),
                           strict=True):
        if isinstance(res, Exception):
            failed += 1
            continue
        samples += [(n, e.input_ids, e.labels) for e in res]
    size = max((n for n, _ in records), default=0) + 1
    sums = torch.zeros(size, dtype=torch.float64)
    counts = torch.zeros(size, dtype=torch.long)
    collate = Collator(encoder.tok.pad_token_id,
                       varlen_kwargs=attention_implementation(model) in VARLEN_KERNELS)
    rows = [_row(samples, group)
            for group in first_fit_decreasing([len(s[1]) for s in samples], capacity)]
    device = next(model.parameters()).device
    weight = model.get_output_embeddings().weight
    model.eval()
    per_batch = max(1, batch_tokens // capacity)
    for b in range(0, len(rows), per_batch):
        chunk = rows[b:b + per_batch]
        batch = collate([r[0] for r in chunk])
        labels = batch.pop("labels")
        width = labels.shape[1]
        owners = torch.tensor([o + [-1] * (width - len(o)) for _, o in chunk])[:, 1:]
        batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        out = model(**batch, logits_to_keep=1, output_hidden_states=True)
        targets = labels[:, 1:]
        keep = targets != IGNORE
        hidden = out.hidden_states[-1][:, :-1][keep.to(device)].to(weight.dtype)
        losses = chunked_token_losses(hidden, weight, targets[keep].to(device))
        sums.index_add_(0, owners[keep], losses.double().cpu())
        counts.index_add_(0, owners[keep], torch.ones_like(owners[keep]))
    scored = [Scored(n, float(sums[n] / counts[n]), int(counts[n]))
              for n in counts.nonzero()[:, 0].tolist()]
    return scored, failed


def _row(samples: list, group: list[int]) -> tuple[dict, list[int]]:
    """A packed row and the record of each position (-1 for none)."""
    ids, labels, pos, owner = [], [], [], []
    for i in sorted(group):
        n, sample_ids, sample_labels = samples[i]
        lab = list(sample_labels)
        lab[0] = IGNORE  # as in training: never a label across a sample boundary
        ids += sample_ids
        labels += lab
        pos += range(len(sample_ids))
        owner += [n] * len(sample_ids)
    return {"input_ids": ids, "labels": labels, "position_ids": pos}, owner


def hardest(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, encoder: ChatEncoder,
            records: list[dict], capacity: int, k: int, generation: GenerationParams,
            path: str = "data/clean/train.jsonl") -> tuple[list[dict], dict]:
    """The k highest-loss records with the model's reply, and a summary of all the losses."""
    unique = unique_records(records, path)
    scored, failed = conversation_losses(model, encoder, unique, capacity)
    top = sorted(scored, key=lambda s: (-s.loss, s.index))[:k]
    prompts = [_prompt_and_reference(records[s.index]["messages"]) for s in top]
    replies = generate_replies(model, tokenizer, [p for p, _ in prompts], generation,
                               tools=[records[s.index].get("tools") for s in top])
    rows = []
    for rank, (s, (prompt, reference), reply) in enumerate(zip(top, prompts, replies,
                                                                strict=True), start=1):
        rec = records[s.index]
        rows.append({"rank": rank, "id": rec["id"], "loss": round(s.loss, 4),
                     "supervised_tokens": s.tokens, "line": s.index + 1, "prompt": prompt,
                     "reference": reference, "reply": reply.error or reply.text}
                    | ({"tools": rec["tools"]} if rec.get("tools") else {}))
    losses = [s.loss for s in scored]
    summary = {"conversations": len(unique), "scored": len(scored), "not_encodable": failed,
               "mean_loss": round(sum(losses) / len(losses), 4) if losses else math.nan,
               "max_loss": round(max(losses), 4) if losses else math.nan}
    return rows, summary


def _prompt_and_reference(messages: list[dict]) -> tuple[list[dict], str]:
    """The messages before the last assistant turn, and that turn as text (its tool calls as
    JSON when it has no text)."""
    prompt, reference = split_prompt(messages)
    return prompt, reference or _calls(messages[len(prompt)])


def hardest_markdown(rows: list[dict], summary: dict) -> str:
    lines = [f"# The {len(rows)} training conversations of highest loss under models/sft", "",
             f"Loss: mean cross-entropy per supervised token of the whole conversation; "
             f"{summary['scored']} of {summary['conversations']} conversations scored, mean "
             f"{summary['mean_loss']}. To train without one: `chatsft data exclude ID` (or "
             "`--file metrics/hardest.jsonl` for all), then `dvc repro`.", ""]
    for r in rows:
        lines += [f"## {r['rank']}. `{r['id']}`: loss {r['loss']:.3f} "
                  f"({r['supervised_tokens']} supervised tokens, data/clean/train.jsonl line "
                  f"{r['line']})", ""]
        if len(r["prompt"]) > 3:
            lines.append(f"*({len(r['prompt']) - 3} earlier messages)*\n")
        for m in r["prompt"][-3:]:
            lines.append(f"**{m['role']}**")
            lines.append(_quote(m.get("content") or _calls(m)))
        lines += ["**reference**", _quote(r["reference"]), "**model reply**",
                  _quote(r["reply"]), ""]
    return "\n".join(lines) + "\n"


def _calls(message: dict) -> str:
    return json.dumps(message.get("tool_calls"), ensure_ascii=False)


def _quote(text: str, limit: int = 600) -> str:
    text = text if len(text) <= limit else text[:limit] + " [...]"
    return "\n".join(f"> {line}" if line else ">" for line in text.split("\n")) + "\n"
