"""Interactive chat in the terminal: streamed replies, history within the context window.

Commands: `/reset` clears the history, `/system TEXT` sets the system prompt (`/system` alone
removes it; the history is kept), `/exit` (or Ctrl-D) leaves. Ctrl-C during a reply stops it
(the partial reply stays in the history); Ctrl-C at the prompt clears the line.

Prompts go through `ChatEncoder.encode_prompt`, the training encoding, and generation stops at
the template's end-of-turn token, as in the evaluate and predict stages. When the conversation
would not leave room for `max_new_tokens` in the context window, the oldest exchanges are
dropped (the system prompt stays).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.inference.generation import (
    PromptTooLong,
    Reply,
    context_size,
    decode_reply,
    fit_prompt,
    generation_config,
    stop_token_ids,
)
from chatsft.inference.sigint import sigint_blocked
from chatsft.params import GenerationParams

HELP = "Commands: /reset, /system TEXT, /exit. Ctrl-C stops a reply."


class StopOnEvent(StoppingCriteria):
    """Ends generation at the next token once `event` is set (Ctrl-C)."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool,
                          device=input_ids.device)


class ChatSession:
    """A conversation with one model: system prompt, history, and streamed replies."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        params: GenerationParams,
        system_prompt: str | None = None,
        max_context: int | None = None,
    ) -> None:
        self.model = model.eval()
        self.tok = tokenizer
        self.encoder = ChatEncoder(tokenizer)
        self.stops = stop_token_ids(model, self.encoder)
        self.config = generation_config(self.stops, tokenizer.pad_token_id, params)
        context = context_size(model, max_context)
        self.budget = None if context is None else context - params.max_new_tokens
        self.system = system_prompt or None
        self.history: list[dict] = []
        self.stop = threading.Event()
        if params.do_sample:
            torch.manual_seed(params.seed)  # the whole session is reproducible for a seed

    def messages(self) -> list[dict]:
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + self.history

    def reset(self) -> None:
        self.history = []

    def set_system(self, text: str) -> None:
        self.system = text.strip() or None

    def prompt_ids(self, text: str) -> tuple[list[int], int]:
        """Prompt ids for a new user message, and how many old messages were dropped (removed
        from the history too) to fit the context window. Raises PromptTooLong."""
        ids, dropped = fit_prompt(self.encoder, self.messages() + [
            {"role": "user", "content": text}], self.budget)
        self.history = self.history[dropped:]
        return ids, dropped

    def reply(self, text: str, write: Callable[[str], None]) -> Reply:
        """Answer `text`, writing the reply as it is generated; `self.stop.set()` ends it early.
        The exchange is added to the history."""
        ids, dropped = self.prompt_ids(text)
        if dropped:
            write(f"[dropped the {dropped} oldest messages to fit the context window]\n")
        self.stop.clear()
        streamer = TextIteratorStreamer(self.tok, skip_prompt=True, skip_special_tokens=True)
        result: dict = {}
        device = next(self.model.parameters()).device

        @torch.inference_mode()
        def work() -> None:
            try:
                out = self.model.generate(
                    input_ids=torch.tensor([ids], device=device),
                    attention_mask=torch.ones((1, len(ids)), dtype=torch.long, device=device),
                    generation_config=self.config,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([StopOnEvent(self.stop)]),
                )
                result["ids"] = out[0, len(ids) :].tolist()
            except BaseException as err:  # re-raised in the caller's thread
                result["error"] = err
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        with sigint_blocked():  # Ctrl-C is the main thread's
            thread.start()
        for piece in streamer:
            write(piece)
        thread.join()
        if "error" in result:
            raise result["error"]
        reply = decode_reply(self.tok, result["ids"], set(self.stops))
        answer = {"role": "assistant", "content": reply.text}
        if reply.reasoning is not None:  # a ChatML record carries the field only when it has one
            answer["reasoning_content"] = reply.reasoning
        self.history += [{"role": "user", "content": text}, answer]
        return reply


@contextlib.contextmanager
def sigint_sets(event: threading.Event) -> Iterator[None]:
    """While inside, Ctrl-C sets `event` instead of raising KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: event.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def run_chat(session: ChatSession, read: Callable[[str], str] = input,
             write: Callable[[str], None] = _write) -> int:
    """The read-reply loop; returns the exit status."""
    write(HELP + "\n")
    while True:
        try:
            line = read("\nUser: ").strip()
        except EOFError:
            write("\n")
            return 0
        except KeyboardInterrupt:
            write("^C\n")
            continue
        if not line:
            continue
        command, _, arg = line.partition(" ")
        if command == "/exit":
            return 0
        if command == "/reset":
            session.reset()
            write("[history cleared]\n")
            continue
        if command == "/system":
            session.set_system(arg)
            write(f"[system prompt {'set' if session.system else 'removed'}]\n")
            continue
        if command.startswith("/") and command[1:].isalpha():
            write(f"[unknown command {command}] {HELP}\n")
            continue
        write("Assistant: ")
        try:
            with sigint_sets(session.stop):
                session.reply(line, write)
        except PromptTooLong as err:
            write(f"\n[error: {err}; message not sent]\n")
            continue
        except KeyboardInterrupt:  # Ctrl-C just before the handler was installed
            session.stop.set()
        write(" [stopped]\n" if session.stop.is_set() else "\n")
