"""The evaluate stage's core: perplexity on validation/test, generation and text metrics."""

from __future__ import annotations

from datasets import DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.evaluation.metrics import compute_text_metrics, per_sample_scores
from chatsft.evaluation.perplexity import nll_by_source, supervised_nll
from chatsft.evaluation.tool_calls import judge, score_tool_calls, tool_turns
from chatsft.inference.generation import PromptTooLong, context_size, fit_prompt, generate_replies
from chatsft.params import EvaluateParams


def split_prompt(messages: list[dict]) -> tuple[list[dict], str]:
    """Everything before the last assistant turn, and that turn's text (the reference)."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last], messages[last]["content"]


def _rounded(values: dict, digits: int) -> dict:
    return {k: round(v, digits) if isinstance(v, float) else v for k, v in values.items()}


def evaluate_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    tokenized: DatasetDict,
    test_records: list[dict],
    params: EvaluateParams,
) -> tuple[dict, list[dict]]:
    """Metrics for one model ({split: {name: value}}), and the per-sample predictions of the
    test prompts with their scores, in test-file order, then those of the tool-call turns."""
    metrics: dict = {}
    for split in ("validation", "test"):
        if split in tokenized and len(tokenized[split]):
            nll = supervised_nll(model, tokenized[split], tokenizer.pad_token_id)
            metrics[split] = _rounded(nll, 6)
            sources = nll_by_source(model, tokenized[split], tokenizer.pad_token_id, nll)
            if sources:
                metrics[split]["by_source"] = {k: _rounded(v, 6) for k, v in sources.items()}
    records = test_records[: params.max_samples] if params.max_samples else test_records
    if not records:
        return metrics, []
    fits = _fits(model, tokenizer, params)
    texts = [(i, *split_prompt(r["messages"]), r.get("tools")) for i, r in enumerate(records)]
    kept = [t for t in texts if fits(t[1], t[3])]
    calls = tool_turns(records)
    kept_calls = [t for t in calls if fits(t.prompt, t.tools)]
    metrics["test"] = metrics.get("test", {}) | {
        "samples": len(kept), "prompts_too_long": len(texts) - len(kept) + len(calls) - len(
            kept_calls)}
    rows = []
    if kept:
        indices, prompts, refs, tools = (list(x) for x in zip(*kept, strict=True))
        replies = generate_replies(model, tokenizer, prompts, params.generation, tools=tools)
        preds = [r.text for r in replies]
        text = compute_text_metrics(preds, refs, style=params.bleu_style)
        text["generated_tokens_mean"] = sum(r.generated_tokens for r in replies) / len(replies)
        metrics["test"] |= _rounded(text, 4)
        rows = [{"index": i, "prompt": p, "reference": ref, "prediction": r.text,
                 "generated_tokens": r.generated_tokens}
                | ({"reasoning": r.reasoning} if r.reasoning is not None else {})
                | _rounded(s, 4)
                for i, p, ref, r, s in zip(indices, prompts, refs, replies,
                                           per_sample_scores(preds, refs), strict=True)]
    if kept_calls:
        replies = generate_replies(model, tokenizer, [t.prompt for t in kept_calls],
                                   params.generation, tools=[t.tools for t in kept_calls])
        metrics["test"] |= _rounded(score_tool_calls([r.text for r in replies],
                                                     [t.calls for t in kept_calls]), 4)
        for t, r in zip(kept_calls, replies, strict=True):
            names_ok, arguments_ok = judge(r.text, t.calls)
            rows.append({"index": t.record, "prompt": t.prompt, "reference_tool_calls": t.calls,
                         "prediction": r.text, "generated_tokens": r.generated_tokens,
                         "tool_call_name_ok": names_ok, "tool_call_arguments_ok": arguments_ok})
    return metrics, rows


def _fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, params: EvaluateParams):
    """Whether a prompt fits the context window with room for the reply. One that cannot (a
    tools prompt longer than the window, say) is left out and counted (`prompts_too_long`)
    rather than stopping the whole evaluation."""
    encoder = ChatEncoder(tokenizer)
    context = context_size(model)
    budget = None if context is None else context - params.generation.max_new_tokens

    def fits(messages: list[dict], tools: list | None) -> bool:
        try:
            fit_prompt(encoder, messages, budget, tools)
        except PromptTooLong:
            return False
        return True

    return fits


def worst_table(rows: list[dict], n: int = 10) -> str:
    """A Markdown table of the lowest-scoring samples (sentence BLEU, then ROUGE-L)."""
    scored = [r for r in rows if "bleu4" in r]  # not the tool-call turns
    worst = sorted(scored, key=lambda r: (r["bleu4"], r["rougeL"], r["index"]))[:n]
    lines = [f"# The {len(worst)} test samples with the lowest sentence BLEU-4", "",
             "| # | BLEU-4 | ROUGE-L | prompt (last user turn) | reference | prediction |",
             "|---|---|---|---|---|---|"]

    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")[:120]

    for r in worst:
        lines.append(f"| {r['index']} | {r['bleu4']:.1f} | {r['rougeL']:.1f} | "
                     f"{cell(r['prompt'][-1]['content'])} | {cell(r['reference'])} | "
                     f"{cell(r['prediction'])} |")
    return "\n".join(lines) + "\n"
