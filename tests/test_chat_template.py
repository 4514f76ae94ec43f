"""chatsft/chat_template: transformers' private helpers in one module; one rule for dropping
the oldest exchanges."""

from __future__ import annotations

import ast
import random

from chatsft.chat_template.truncate import drop_oldest
from tests.conftest import ROOT

RENDER = ROOT / "chatsft" / "chat_template" / "render.py"


def private_transformers_imports(path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [f"{node.module}.{a.name}" for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
                "transformers",) for a in node.names if a.name.startswith("_")]


def test_only_render_imports_private_transformers_names():
    assert private_transformers_imports(RENDER)  # the check sees them where they are
    users = {str(p.relative_to(ROOT)): names for p in (ROOT / "chatsft").rglob("*.py")
             if p != RENDER and (names := private_transformers_imports(p))}
    assert users == {}


def _conversation(rng: random.Random) -> list[dict]:
    msgs = [{"role": "system", "content": "s" * rng.randint(1, 5)}] if rng.random() < 0.5 else []
    for _ in range(rng.randint(1, 6)):
        msgs.append({"role": "user", "content": "u" * rng.randint(1, 9)})
        if rng.random() < 0.3:  # a tool call and its result belong to the exchange
            msgs += [{"role": "assistant", "content": "", "tool_calls": []},
                     {"role": "tool", "content": "t" * rng.randint(1, 9)}]
        msgs.append({"role": "assistant", "content": "a" * rng.randint(1, 9)})
    return msgs


def _linear(messages: list[dict], budget: int) -> int | None:
    """The obvious loop: drop one exchange at a time from the oldest, keeping the system
    prompt and the last exchange."""
    system = 1 if messages[0]["role"] == "system" else 0
    starts = [i for i, m in enumerate(messages) if i > system and m["role"] == "user"]
    for start in starts:
        if _size(messages[:system] + messages[start:]) <= budget:
            return start - system
    return None


def _size(messages: list[dict]) -> int:
    return sum(len(m["content"]) + 1 for m in messages)


def test_drop_oldest_drops_the_fewest_whole_exchanges_and_keeps_the_system_prompt():
    rng = random.Random(0)
    for trial in range(500):
        msgs = _conversation(rng)
        budget = rng.randint(1, _size(msgs))
        kept, dropped = drop_oldest(msgs, lambda m: m, lambda m, b=budget: _size(m) > b,
                                    keep_reply=True)
        assert dropped == _linear(msgs, budget), trial
        if dropped is not None:
            system = msgs[:1] if msgs[0]["role"] == "system" else []
            assert kept == system + msgs[len(system) + dropped:]
            assert kept[len(system)]["role"] == "user" and _size(kept) <= budget
    # A prompt (no reply yet): its last user turn may be all that is left.
    prompt = [{"role": "user", "content": "x" * 50}, {"role": "assistant", "content": "y"},
              {"role": "user", "content": "z"}]
    assert drop_oldest(prompt, _size, lambda n: n > 5) == (2, 2)
    assert drop_oldest(prompt[:1], _size, lambda n: n > 5) == (None, None)
    # Training: the exchange of the reply to learn is never dropped.
    assert drop_oldest(prompt[:2], _size, lambda n: n > 5, keep_reply=True) == (None, None)
    assert drop_oldest(prompt + [{"role": "assistant", "content": "w"}], _size,
                       lambda n: n > 5, keep_reply=True) == (4, 2)
