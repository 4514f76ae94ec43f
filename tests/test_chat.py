"""The chat loop: history and context window in-process, the terminal through a real pty."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import sys
import time
from pathlib import Path

import pytest

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.inference.chat import ChatSession, run_chat
from chatsft.inference.generation import load_for_inference
from chatsft.model.load import load_tokenizer
from chatsft.params import GenerationParams
from tests.test_generation import prompt_end, words

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def two_words(two_word_model):
    """A model that answers everything with the same two words, then <|im_end|>."""
    path, answer = two_word_model
    return load_for_inference(str(path)), load_tokenizer(path), answer


def test_history_system_prompt_and_reset(two_words):
    model, tok, answer = two_words
    session = ChatSession(model, tok, GenerationParams(max_new_tokens=8), "Be brief.")
    out: list[str] = []
    reply = session.reply("Hello?", out.append)
    assert reply.text == answer.strip() and "".join(out) == answer
    session.reply("Again?", out.append)
    assert session.messages() == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello?"}, {"role": "assistant", "content": answer.strip()},
        {"role": "user", "content": "Again?"}, {"role": "assistant", "content": answer.strip()},
    ]
    session.set_system("Be kind.")
    assert session.messages()[0]["content"] == "Be kind." and len(session.messages()) == 5
    session.reset()
    assert session.messages() == [{"role": "system", "content": "Be kind."}]
    session.set_system("")
    assert session.messages() == []


def test_oldest_exchanges_are_dropped_to_fit_the_context_window(two_words):
    model, tok, answer = two_words
    enc = ChatEncoder(tok)
    system = [{"role": "system", "content": "Be brief."}]
    one = system + [{"role": "user", "content": "Question?"},
                    {"role": "assistant", "content": answer.strip()},
                    {"role": "user", "content": "Question?"}]
    # Room for the system prompt and one earlier exchange, plus 8 new tokens.
    context = len(enc.encode_prompt(one)) + 8
    session = ChatSession(model, tok, GenerationParams(max_new_tokens=8), "Be brief.",
                          max_context=context)
    out: list[str] = []
    for _ in range(3):
        session.reply("Question?", out.append)
    # The third prompt had to lose the first exchange; the history keeps the last two.
    assert "".join(out).count("[dropped the 2 oldest messages") == 1
    assert len(session.history) == 4 and session.system == "Be brief."
    assert session.messages() == one[:3] + [one[1], one[2]]


def test_a_stopped_reply_ends_early_and_stays_in_the_history(bigram_model_dir,
                                                              chatml_tokenizer):
    tok = chatml_tokenizer
    [word] = words(tok, 1)
    path = bigram_model_dir({prompt_end(tok): word}, default=word)  # never stops by itself
    session = ChatSession(load_for_inference(str(path)), load_tokenizer(path),
                          GenerationParams(max_new_tokens=400))

    def write(piece: str) -> None:  # what Ctrl-C does: set the stop event mid-reply
        session.stop.set()

    reply = session.reply("Go on?", write)
    assert 1 <= reply.generated_tokens < 20 and reply.ids == [word] * len(reply.ids)
    assert session.history[-1] == {"role": "assistant", "content": reply.text}


def test_commands_in_process(two_words):
    model, tok, answer = two_words
    session = ChatSession(model, tok, GenerationParams(max_new_tokens=8))
    lines = iter(["hi", "/system Be brief.", "/reset", "/nope", "", "/exit", "never read"])
    out: list[str] = []
    assert run_chat(session, lambda prompt: next(lines), out.append) == 0
    text = "".join(out)
    assert f"Assistant: {answer}\n" in text
    assert "[system prompt set]" in text and "[history cleared]" in text
    assert "[unknown command /nope]" in text
    assert session.messages() == [{"role": "system", "content": "Be brief."}]
    assert next(lines) == "never read"


class Terminal:
    """A child process on a pseudo-terminal: what a user's shell would give it."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: stdin/stdout/stderr are the pty's slave side
            # As a shell starts a foreground program: SIGINT at its default, not blocked. An
            # ignored SIGINT survives exec, and a suite started in the background of a
            # non-interactive shell (`bash .ci/run > log &`) has it ignored from the start (POSIX:
            # such a shell starts `&` commands with SIGINT ignored): a Ctrl-C at the prompt then
            # did nothing, in CI.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
            os.chdir(ROOT)
            os.execve(sys.executable, [sys.executable, *argv], env)
        self.seen, self.pos = "", 0

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, text: str, timeout: float = 60.0) -> str:
        """Read until `text` appears after the previous match; return the output up to it."""
        deadline = time.monotonic() + timeout
        while text not in self.seen[self.pos :]:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"timed out waiting for {text!r}; got {self.seen[-2000:]!r}")
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:  # the child closed the terminal
                chunk = b""
            if not chunk:
                raise AssertionError(f"the program ended before {text!r}: {self.seen[-2000:]!r}")
            self.seen += chunk.decode("utf-8", "replace")
        start, self.pos = self.pos, self.seen.index(text, self.pos) + len(text)
        return self.seen[start : self.pos]

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                os.read(self.fd, 4096)
            except OSError:
                pass
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError("the program did not exit")


def assert_only_the_main_thread_takes_sigint(pid: int) -> None:
    """One SIGINT given to another thread (torch's, the generation thread) would trip Python's
    flag while the main thread sat on in readline, deaf to Ctrl-C."""
    for task in Path(f"/proc/{pid}/task").glob("*"):
        if task.name == str(pid):
            continue
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        blocked = int(re.search(r"SigBlk:\s*(\w+)", status)[1], 16)
        assert blocked >> (signal.SIGINT - 1) & 1, task


def test_chat_in_a_terminal_streams_and_survives_ctrl_c(bigram_model_dir, chatml_tokenizer):
    tok = chatml_tokenizer
    [hi] = words(tok, 1)
    # Says the same word forever: a reply long enough to interrupt.
    path = bigram_model_dir({prompt_end(tok): hi}, default=hi, max_position_embeddings=8192)
    word = tok.decode([hi])
    env = dict(os.environ, PYTHONPATH=str(ROOT), TERM="dumb", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    term = Terminal(["-m", "chatsft.cli", "chat", "--model-path", str(path),
                     "--system-prompt", "Be brief.", "--max-new-tokens", "6000"], env)
    try:
        term.expect("User: ")
        term.send("/system Be very brief.\n")
        term.expect("[system prompt set]")
        term.expect("User: ")
        term.send("Hello?\n")
        term.expect("Assistant: ")
        streamed = term.expect(word * 5)  # several words arrive while the reply goes on
        assert "User: " not in streamed
        assert_only_the_main_thread_takes_sigint(term.pid)  # the generation thread included
        term.send("\x03")  # Ctrl-C: the terminal sends SIGINT to the program
        rest = term.expect("[stopped]", timeout=30)
        assert (streamed + rest).count(word) < 3000  # stopped long before 6000 tokens
        term.expect("User: ")
        assert_only_the_main_thread_takes_sigint(term.pid)
        term.send("/reset\n")
        term.expect("[history cleared]")
        term.expect("User: ")
        # Ctrl-C at the prompt gives a fresh prompt. CPython's readline misses a SIGINT that
        # lands while it is still handling typed keys (a loaded machine makes that window
        # long), so press it again, as a user would, until the prompt answers.
        for attempt in range(10):
            time.sleep(0.5)
            term.send("\x03")
            try:
                term.expect("^C", timeout=5)
                break
            except AssertionError:
                if attempt == 9:
                    raise
        term.expect("User: ")
        term.send("/exit\n")
        assert term.wait() == 0
    finally:
        try:
            os.kill(term.pid, signal.SIGKILL)
            os.waitpid(term.pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
        os.close(term.fd)
