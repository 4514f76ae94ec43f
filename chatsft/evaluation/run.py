"""The evaluate stage's core: perplexity on validation/test, generation and text metrics."""

from __future__ import annotations

from datasets import DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from chatsft.evaluation.perplexity import supervised_nll
from chatsft.evaluation.text_metrics import compute_text_metrics, per_sample_scores
from chatsft.generation import generate_replies
from chatsft.params import EvaluateParams


def split_prompt(messages: list[dict]) -> tuple[list[dict], str]:
    """Everything before the last assistant turn, and that turn's text (the reference)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tokenized: DatasetDict,
    test_records: list[dict],
    params: EvaluateParams,
    ignore_index: int = -100,
) -> tuple[dict, list[dict]]:
    """Metrics for one model, and the per-sample predictions with their scores."""
    metrics: dict = {}
    for split in ("validation", "test"):
        if len(tokenized[split]):
            nll = supervised_nll(model, tokenized[split], tokenizer.pad_token_id,
                                 ignore_index=ignore_index)
            metrics[split] = {k: round(v, 6) if isinstance(v, float) else v
                              for k, v in nll.items()}
    records = test_records[: params.max_samples] if params.max_samples else test_records
    prompts, refs = zip(*(split_prompt(r["messages"]) for r in records), strict=True) if records \
        else ((), ())
    replies = generate_replies(model, tokenizer, list(prompts), params.generation)
    preds = [text for text, _ in replies]
    text = compute_text_metrics(preds, list(refs), style=params.bleu_style)
    metrics["test"] = metrics.get("test", {}) | {k: round(v, 4) for k, v in text.items()}
    scores = per_sample_scores(preds, list(refs)) if preds else []
    rows = [
        {"prompt": p, "reference": r, "prediction": t, "generated_tokens": n}
        | {k: round(v, 4) for k, v in s.items()}
        for p, r, (t, n), s in zip(prompts, refs, replies, scores, strict=True)
    ]
    return metrics, rows


def worst_table(rows: list[dict], n: int = 10, key: str = "bleu4") -> str:
    """A Markdown table of the lowest-scoring samples, for a person to read."""
    worst = sorted(range(len(rows)), key=lambda i: (rows[i].get(key, 0.0), i))[:n]
    lines = [f"| # | {key} | prompt (last user turn) | reference | prediction |",
             "|---|---|---|---|---|"]

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")[:120]

    for i in worst:
        r = rows[i]
        lines.append(f"| {i} | {r.get(key, 0.0):.1f} | {cell(r['prompt'][-1]['content'])} | "
                     f"{cell(r['reference'])} | {cell(r['prediction'])} |")
    return "\n".join(lines) + "\n"
