"""Chat-template encoding with exact assistant masks, shared by training and inference.

The masks come from the tokenizer's own Jinja template, rendered on prefixes of the
conversation: for assistant turn k, `P_k` is the render of messages[:k] with the generation
prompt (what inference feeds the model) and `F_k` the render of messages[:k+1]. What `F_k` adds
to `P_k` is what the model must generate for turn k; we supervise it up to and including its
last control token (the end-of-turn: `<|im_end|>`, `<|eot_id|>`, ...), not the template's text
after that (a newline) and never the role header, which belongs to `P_k`. No template needs
`{% generation %}` markers, and no role names or token strings are hard-coded. Labels come from
these spans, never from the pad id, so the end-of-turn is supervised even when pad == eos.

Parity with inference is checked on every turn, at the token level: the tokens of the whole
conversation before turn k's reply must be exactly the tokens of `P_k`, which is also what
`encode_prompt` gives at inference; a mismatch raises `ParityError` naming the first differing
token. Templates that render earlier turns differently once the conversation goes on (Qwen3
drops the reasoning of earlier turns) cannot give one sample whose every prefix is an inference
prompt; for those, each trained turn k becomes its own sample `F_k`.

Text inside a message is never parsed as a control token: a conversation that contains one is
marked with transformers' `mark_control_tokens` and encoded with `encode_marked_chat`, the
machinery behind `apply_chat_template(..., sanitize_control_tokens=True)`.

Speed (see `benchmarks/tokenize_speed.py`): the template is compiled once and rendered directly
(`render` equals `apply_chat_template(..., tokenize=False)`, tested), and each conversation is
tokenized once, in batches. `P_k`'s tokens are then the conversation's tokens up to the last
added token before the reply, plus the encoding of the short text from that token to the end
of `P_k` (cached: it is `<|im_start|>assistant\\n` for ChatML). That is exact because a
tokenizer splits its input at added tokens before anything else, so the text before an added
token is encoded the same whatever follows it; `encode_records(..., fast=False)` encodes every
prefix in full instead, and the tests check that both agree.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jinja2
from transformers import PreTrainedTokenizerBase
from transformers.utils.chat_template_utils import mark_control_tokens

from chatsft.batching.packing import IGNORE
from chatsft.chat_template.masks import Masker
from chatsft.chat_template.parts import (
    PROBE_TOOLS,
    Encoded,
    NoAssistantTurn,
    ParityError,
    Result,
    Skipped,
    TemplateFailure,
    TemplateInfo,
    TooLong,
    Turn,
    Unit,
    UnsupportedRole,
    has_control,
    uses_tools,
)
from chatsft.chat_template.render import (
    alias_reasoning_fields,
    compile_template,
    control_pattern,
    control_tokens,
    template_variables,
)
from chatsft.chat_template.truncate import drop_oldest
from chatsft.reasoning import FIELDS as REASONING_FIELDS
from chatsft.reasoning import inline, reasoning_of
from chatsft.template_kwargs import render_variables, saved_kwargs

# Stands in for an assistant message's answer to find where its think block ends (a
# supplementary private-use character: no real text starts with it, and it is not one of
# transformers' control-token markers).
_ANSWER_SENTINEL = "\U000f7777"
# `template_date`'s default, "what the tokenizer was saved with": None already means the clock.
SAVED: Any = object()


class ChatEncoder:
    """Encode conversations with one tokenizer's chat template."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, train_on: str = "all",
                 max_length: int | None = None, template_kwargs: dict | None = None,
                 template_date: str | None = SAVED,
                 train_reasoning: bool = True, mask_empty_think: bool = False) -> None:
        """`template_kwargs` (variables such as `enable_thinking`) and `template_date` (what
        the template's `strftime_now` returns, an ISO date or None for the clock) each default
        to what the tokenizer was saved with (`chatsft.template_kwargs`), so inference renders
        as training did. `train_reasoning` False, or `mask_empty_think` with an empty one, puts
        no loss on a reply's think block.
        """
        if not tokenizer.chat_template:
            raise ValueError("the tokenizer has no chat template")
        if train_on not in ("all", "last"):
            raise ValueError(f"train_on must be 'all' or 'last', got {train_on!r}")
        self.tok = tokenizer
        self.train_on = train_on
        self.max_length = max_length
        self.special_tokens = dict(tokenizer.special_tokens_map)  # template variables
        saved, saved_date = saved_kwargs(tokenizer)
        self.template_kwargs = dict(saved if template_kwargs is None else template_kwargs)
        self.template_date = saved_date if template_date is SAVED else template_date
        self.train_reasoning, self.mask_empty_think = train_reasoning, mask_empty_think
        self._templates: dict[str, TemplateInfo] = {}
        default = self._info(None)
        self.control_re, self.control_ids = default.control_re, default.control_ids
        self.masker = Masker(tokenizer, self.control_ids)

    def _info(self, tools: list | None) -> TemplateInfo:
        source = self.tok.get_chat_template(None, tools or None)
        info = self._templates.get(source)
        if info is None:
            control = control_tokens(self.tok, source)
            info = self._templates[source] = TemplateInfo(
                compiled=(compiled := compile_template(source)),
                variables={**compiled.globals, **self.special_tokens,
                           **render_variables(self.template_kwargs, self.template_date)},
                control_re=control_pattern(control),
                control_ids=frozenset(self.tok.convert_tokens_to_ids(list(control))),
                supports_tools="tools" in template_variables(source)
                and "tool_calls" in source,
                supports_reasoning=any(f in source for f in REASONING_FIELDS),
            )
        return info

    # -- rendering ---------------------------------------------------------------------------

    def render(self, messages: list[dict], add_generation_prompt: bool = False,
               tools: list | None = None) -> str:
        """`apply_chat_template(messages, tools=tools, tokenize=False, ...)`, without its
        per-call conversion overhead (messages must be plain JSON data)."""
        info = self._info(tools)
        return self._render(info, self._template_messages(info, messages), add_generation_prompt,
                            tools)

    @staticmethod
    def _template_messages(info: TemplateInfo, messages: list[dict]) -> list[dict]:
        """Messages as the template reads them: no null fields, reasoning under every name
        templates use, or inline in the content for a template that does not render it."""
        msgs = [{k: v for k, v in m.items() if v is not None} for m in messages]
        if info.supports_reasoning:
            return alias_reasoning_fields(msgs)
        out = []
        for m in msgs:
            reasoning = reasoning_of(m)
            if reasoning is not None and m["role"] == "assistant":
                m = {k: v for k, v in m.items() if k not in REASONING_FIELDS}
                m["content"] = inline(reasoning, m.get("content") or "")
            out.append(m)
        return out

    def _render(self, info: TemplateInfo, msgs: list[dict], gen: bool, tools: list | None) -> str:
        # Template.render(**variables), minus a per-call merge of the globals (a third of the
        # time); the output is the same (tested against apply_chat_template).
        context = info.compiled.new_context({**info.variables, "messages": msgs, "tools": tools,
                                             "documents": None, "add_generation_prompt": gen},
                                            shared=True)
        return "".join(info.compiled.root_render_func(context))

    def encode_prompt(self, messages: list[dict], tools: list | None = None) -> list[int]:
        """Tokens fed to the model to generate the next assistant turn (inference); equal to
        `apply_chat_template(..., add_generation_prompt=True, sanitize_control_tokens=True)`."""
        messages, tools, marked = self._marked(messages, tools)
        return self.masker.encode_text(self.render(messages, True, tools), marked)

    def _marked(self, messages: list[dict], tools: list | None
                ) -> tuple[list[dict], list | None, bool]:
        """The messages and tools with control tokens in their text marked, so that they are
        encoded as text (`mark_control_tokens`), and whether any was."""
        control_re = self._info(tools).control_re
        marked = has_control(messages, control_re) or has_control(tools, control_re)
        if marked:
            messages = mark_control_tokens(messages, control_re)
            tools = mark_control_tokens(tools, control_re)
        return messages, tools, marked

    def _plan(self, messages: list[dict], tools: list | None) -> list[Unit]:
        """The texts to encode for one conversation and where each assistant turn lies."""
        info = self._info(tools)
        if uses_tools(messages, tools) and not info.supports_tools:
            raise UnsupportedRole("the record uses tools and the chat template does not "
                                  "render tools and tool_calls")
        messages, tools, marked = self._marked(messages, tools)
        assistant = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
        if not assistant:
            raise NoAssistantTurn("the conversation has no assistant message")
        trained = set(assistant if self.train_on == "all" else assistant[-1:])
        msgs = self._template_messages(info, messages)
        try:
            full = self._render(info, msgs, False, tools)
            spans = []
            for i in assistant:
                prompt = self._render(info, msgs[:i], True, tools)
                through = full if i + 1 == len(msgs) else self._render(info, msgs[: i + 1], False,
                                                                       tools)
                if not through.startswith(prompt):
                    raise self.masker.parity_error(
                        self.masker.encode_text(through, marked),
                        self.masker.encode_text(prompt, marked), i, "generation prompt",
                        rendered=True)
                loss_from = self._think_end(info, messages, i, tools, through) if (
                    i in trained) else len(prompt)
                spans.append((i, prompt, through, max(loss_from, len(prompt))))
        except jinja2.TemplateError as err:
            raise TemplateFailure(f"the chat template failed: {err}") from None
        if all(full.startswith(through) for _, _, through, _ in spans):
            turns = [Turn(i, len(p), len(t), i in trained, f) for i, p, t, f in spans]
            return [Unit(full, turns, marked)]
        # The template rewrites earlier turns: one sample per trained turn.
        return [Unit(t, [Turn(i, len(p), len(t), True, f)], marked)
                for i, p, t, f in spans if i in trained]

    def _think_end(self, info: TemplateInfo, messages: list[dict], i: int, tools: list | None,
                   through: str) -> int:
        """Where turn i's think block ends in `through` (0: no loss is masked there).

        The block is what the reply's render shares with the render of the same message whose
        answer is a sentinel (and no tool calls): the template's own layout, found without
        knowing its markers."""
        empty = not (reasoning_of(messages[i]) or "").strip()
        if self.train_reasoning and not (self.mask_empty_think and empty):
            return 0
        m = {k: v for k, v in messages[i].items() if k != "tool_calls"}
        m["content"] = _ANSWER_SENTINEL
        probe = self._render(info, self._template_messages(info, [*messages[:i], m]), False,
                             tools)
        return len(os.path.commonprefix([through, probe]))

    def supports_tools(self, tools: list | None = None) -> bool:
        """Whether the template (for these tools) renders tool definitions and calls."""
        return self._info(tools or PROBE_TOOLS).supports_tools

    def end_of_turn_ids(self) -> set[int]:
        """The control token(s) that close an assistant reply: the last supervised control
        token of a one-exchange sample, and of a tool-call exchange when the template renders
        tools. Only those: a reasoning template's `<think>` and `</think>` are supervised
        control tokens too, but they open and close the reasoning, not the turn."""
        exchanges = [([{"role": "user", "content": "hi"},
                       {"role": "assistant", "content": "hello"}], None)]
        if self.supports_tools():
            call = {"type": "function", "function": {"name": "f", "arguments": {"x": 1}}}
            exchanges.append(([{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "", "tool_calls": [call]}],
                              PROBE_TOOLS))
        ends = set()
        for res in self._encode_items(exchanges, fast=False):
            for enc in res if not isinstance(res, Exception) else []:
                supervised = [t for t, lab in zip(enc.input_ids, enc.labels, strict=True)
                              if lab != IGNORE and t in self.control_ids]
                ends.update(supervised[-1:])
        return ends

    # -- encoding ----------------------------------------------------------------------------

    def encode(self, messages: list[dict], tools: list | None = None) -> Encoded:
        """Input ids and labels of one conversation, truncated by whole turns if needed."""
        result = self.encode_records([{"messages": messages, "tools": tools}])[0]
        if isinstance(result, Exception):
            raise result
        if len(result) != 1:
            raise ValueError("this template gives one sample per assistant turn; use "
                             "encode_records")
        return result[0]

    def encode_records(self, records: Sequence[dict], fast: bool = True) -> list[Result]:
        """Samples of each `{"messages", "tools"?}` record, or the exception that stops it:
        a `Skipped` (quarantine it) or a `ParityError` (a bug or a template to fix)."""
        items = [(r["messages"], r.get("tools")) for r in records]
        results = self._encode_items(items, fast)
        for n, res in enumerate(results):
            if self._too_long(res):
                results[n] = self._truncated(*items[n], fast, res)
        return results

    def _too_long(self, res: Result) -> bool:
        return self.max_length is not None and not isinstance(res, Exception) and any(
            len(e.input_ids) > self.max_length for e in res)

    def _truncated(self, messages: list[dict], tools: list | None, fast: bool,
                   whole: list[Encoded]) -> Result:
        """Drop the oldest exchanges until every sample fits (`drop_oldest`)."""
        best, dropped = drop_oldest(
            messages, lambda msgs: self._encode_items([(msgs, tools)], fast)[0],
            self._too_long, keep_reply=True)
        if dropped is None:
            shortest = whole if best is None else best
            return TooLong(f"even with only the last exchange the conversation does not fit in "
                           f"max_length {self.max_length} tokens",
                           max(len(e.input_ids) for e in shortest))
        if not isinstance(best, Exception):
            for e in best:
                e.dropped_turns = dropped
        return best

    def _encode_items(self, items: list[tuple[list[dict], list | None]], fast: bool
                      ) -> list[Result]:
        plans: list[list[Unit] | Exception] = []
        for messages, tools in items:
            try:
                plans.append(self._plan(messages, tools))
            except (Skipped, ParityError) as err:
                plans.append(err)
        return self.masker.encode_plans(plans, fast)
