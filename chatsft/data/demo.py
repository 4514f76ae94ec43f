"""Deterministic bilingual (English / Simplified Chinese) demo chat data.

The default pipeline trains a tiny model from scratch for a few CPU minutes, so this data is
deliberately *learnable*: every reply follows from its prompt by a simple rule (copying, a
small calculation, a look-up in a fixed table) and uses one fixed template per task and
language. Realism comes from varied question phrasings, system prompts and follow-up turns
that refer back to earlier answers, not from free-form text.

Only a local ``random.Random(seed)`` drives the choices (never the global random state,
the clock or ``hash()`` of strings), so the same seed always yields the same records.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from chatsft.data.demo_facts import ATTRIBUTES, COUNTRIES, Country

Turn = tuple[str, str]  # (user message, assistant reply)

MAX_REPLY_CHARS = 150
MAX_CONVERSATION_CHARS = 600
SYSTEM_PROMPT_PROB = 0.85
DEMO_TOOL_CALLS = 1000  # tool-use records in data/demo.jsonl (`chatsft data sample`)
CASUAL_PREFIX_PROB = 0.15

SYSTEM_PROMPTS = {
    "en": (
        "You are a helpful assistant.",
        "You are a concise assistant. Answer in one short sentence.",
        "You are a friendly tutor who gives precise answers.",
        "You are an assistant that answers questions accurately and briefly.",
    ),
    "zh": (
        "你是一个乐于助人的助手。",
        "你是一个简洁的助手，请用一句话回答。",
        "你是一位耐心的老师，回答要准确。",
        "你是一个可靠的智能助手，请简短准确地回答问题。",
    ),
}
# Greetings sometimes put in front of the first question; the reply never depends on them.
CASUAL_PREFIXES = {"en": ("Hi! ", "Hello! "), "zh": ("你好！", "您好！")}


# ---------------------------------------------------------------- arithmetic
# op -> (English symbol, Chinese word, function); one reply template per language.
OPS: dict[str, tuple[str, str, Callable[[int, int], int]]] = {
    "add": ("+", "加", lambda a, b: a + b),
    "sub": ("-", "减", lambda a, b: a - b),
    "mul": ("×", "乘", lambda a, b: a * b),
}
ARITH_QUESTIONS = {
    ("en", "add"): ("What is {a} + {b}?", "What's {a} plus {b}?", "Calculate {a} + {b}.",
                    "How much is {a} plus {b}?", "Add {a} and {b}."),
    ("en", "sub"): ("What is {a} - {b}?", "What's {a} minus {b}?", "Calculate {a} - {b}.",
                    "How much is {a} minus {b}?", "Subtract {b} from {a}."),
    ("en", "mul"): ("What is {a} × {b}?", "What's {a} times {b}?", "Calculate {a} * {b}.",
                    "How much is {a} times {b}?", "Multiply {a} by {b}."),
    ("zh", "add"): ("{a} 加 {b} 等于多少？", "{a}+{b} 是多少？", "请计算 {a} + {b}。",
                    "帮我算一下 {a} 加 {b}。"),
    ("zh", "sub"): ("{a} 减 {b} 等于多少？", "{a}-{b} 是多少？", "请计算 {a} - {b}。",
                    "{a} 减去 {b} 是多少？"),
    ("zh", "mul"): ("{a} 乘 {b} 等于多少？", "{a}×{b} 是多少？", "请计算 {a} * {b}。",
                    "{a} 乘以 {b} 是多少？"),
}
# Follow-ups that only make sense after a previous result ("that", "it", "结果").
ARITH_FOLLOWUPS = {
    ("en", "double"): ("And what if you double that?", "Now double it.", "What is twice that?",
                       "And if we multiply that by 2?"),
    ("en", "add"): ("Now add {b} to it.", "And if you add {b} to that?",
                    "What do you get if you add {b}?", "Plus {b}?"),
    ("en", "sub"): ("Now subtract {b} from that.", "And if you take away {b}?",
                    "What is that minus {b}?"),
    ("zh", "double"): ("那再乘以 2 呢？", "把结果翻倍是多少？", "如果翻一倍呢？"),
    ("zh", "add"): ("再加上 {b} 呢？", "结果再加 {b} 是多少？", "那加 {b} 之后呢？"),
    ("zh", "sub"): ("再减去 {b} 呢？", "结果减 {b} 是多少？", "那减掉 {b} 呢？"),
}


def _arith_reply(a: int, op: str, b: int, lang: str) -> tuple[str, int]:
    symbol, word, fn = OPS[op]
    result = fn(a, b)
    if lang == "en":
        return f"{a} {symbol} {b} = {result}.", result
    return f"{a} {word} {b} 等于 {result}。", result


def _arithmetic(rng: random.Random, lang: str, followups: int) -> list[Turn]:
    op = rng.choice(tuple(OPS))
    a, b = rng.randint(1, 19), rng.randint(1, 19)
    if op == "sub" and b > a:
        a, b = b, a  # keep first-turn results non-negative
    reply, result = _arith_reply(a, op, b, lang)
    turns = [(rng.choice(ARITH_QUESTIONS[lang, op]).format(a=a, b=b), reply)]
    for _ in range(followups):
        kind = rng.choice(("double", "add", "sub"))
        b = rng.randint(1, 9)
        if kind == "sub" and b > result:
            kind = "add"  # stay non-negative so replies look like the first turn's
        if kind == "double" and result > 100:
            kind = "add"  # doubling big products is too hard to learn for a tiny model
        op, b = ("mul", 2) if kind == "double" else (kind, b)
        question = rng.choice(ARITH_FOLLOWUPS[lang, kind]).format(b=b)
        reply, result = _arith_reply(result, op, b, lang)  # the previous result is copied in
        turns.append((question, reply))
    return turns


# ----------------------------------------------------------- unit conversion
# unit -> (English singular, English plural, Chinese)
UNITS = {
    "km": ("km", "km", "千米"), "m": ("m", "m", "米"), "cm": ("cm", "cm", "厘米"),
    "kg": ("kg", "kg", "千克"), "g": ("g", "g", "克"),
    "hour": ("hour", "hours", "小时"), "minute": ("minute", "minutes", "分钟"),
}
CONVERSIONS = (("km", "m", 1000), ("kg", "g", 1000), ("hour", "minute", 60), ("m", "cm", 100))
UNIT_QUESTIONS = {
    "en": ("How many {to} are in {v} {src}?", "Convert {v} {src} to {to}.",
           "What is {v} {src} in {to}?", "{v} {src} equals how many {to}?"),
    "zh": ("{v} {src}等于多少{to}？", "把 {v} {src}换算成{to}。", "{v} {src}是多少{to}？",
           "请问 {v} {src}合多少{to}？"),
}
UNIT_FOLLOWUPS = {
    ("en", "back"): ("Convert that back to {src}.", "And what is that in {src}?",
                     "Now convert it back to {src}."),
    ("en", "double"): ("What about twice that amount?", "And double that?",
                       "What if it were twice as much?"),
    ("en", "other"): ("What about {v} {src}?", "And {v} {src}?", "How about {v} {src}?"),
    ("zh", "back"): ("再换算回{src}呢？", "那换回{src}是多少？", "把它再换成{src}。"),
    ("zh", "double"): ("那两倍呢？", "如果是两倍呢？", "翻一倍是多少？"),
    ("zh", "other"): ("那 {v} {src}呢？", "{v} {src}呢？", "那么 {v} {src}呢？"),
}


def _unit(name: str, count: int, lang: str) -> str:
    singular, plural, chinese = UNITS[name]
    if lang == "zh":
        return chinese
    return singular if count == 1 else plural


def _unit_reply(v: int, src: str, r: int, dst: str, lang: str) -> str:
    if lang == "en":
        return f"{v} {_unit(src, v, lang)} is {r} {_unit(dst, r, lang)}."
    return f"{v} {_unit(src, v, lang)}等于 {r} {_unit(dst, r, lang)}。"


def _conversion(rng: random.Random, lang: str, followups: int) -> list[Turn]:
    big, small, factor = rng.choice(CONVERSIONS)
    k = rng.randint(1, 20)
    # Either direction; going small -> big uses exact multiples so answers stay integers.
    src, dst, v, r = (big, small, k, k * factor) if rng.random() < 0.6 else (small, big,
                                                                            k * factor, k)
    question = rng.choice(UNIT_QUESTIONS[lang]).format(
        v=v, src=_unit(src, v, lang), to=_unit(dst, 2, lang))
    turns = [(question, _unit_reply(v, src, r, dst, lang))]
    for _ in range(followups):
        kind = rng.choice(("back", "double", "other"))
        if kind == "back":  # the previous answer becomes the new question
            question = rng.choice(UNIT_FOLLOWUPS[lang, kind]).format(src=_unit(src, 2, lang))
            src, dst, v, r = dst, src, r, v
        elif kind == "double":
            question = rng.choice(UNIT_FOLLOWUPS[lang, kind])
            v, r = v * 2, r * 2
        else:  # same conversion, new amount: "What about 7 km?"
            k = rng.randint(1, 20)
            v, r = (k, k * factor) if src == big else (k * factor, k)
            question = rng.choice(UNIT_FOLLOWUPS[lang, kind]).format(v=v, src=_unit(src, v, lang))
        turns.append((question, _unit_reply(v, src, r, dst, lang)))
    return turns


# --------------------------------------------------------- format rewriting
WORDS = {
    "en": ("apple", "banana", "cherry", "grape", "lemon", "mango", "pear", "peach", "cat", "dog",
           "bird", "fish", "horse", "red", "blue", "green", "black", "white", "book", "pen",
           "desk", "chair", "lamp", "river", "mountain", "cloud", "rain", "sun", "moon", "star"),
    "zh": ("苹果", "香蕉", "樱桃", "葡萄", "柠檬", "芒果", "梨", "桃子", "猫", "狗", "小鸟", "鱼",
           "马", "红色", "蓝色", "绿色", "黑色", "白色", "书", "钢笔", "桌子", "椅子", "台灯",
           "河流", "高山", "云", "雨", "太阳", "月亮", "星星"),
}
FORMAT_QUESTIONS = {
    ("en", "reverse"): ("Reverse the order of these words: {items}",
                        "Please reverse this list: {items}",
                        "Put these words in reverse order: {items}"),
    ("en", "join"): ("Join these words with commas: {items}",
                     "Write these words as a comma-separated list: {items}",
                     "Put commas between these words: {items}"),
    ("en", "json"): ("Turn these words into a JSON array: {items}",
                     "Format this as a JSON list: {items}",
                     "Write these words as a JSON array: {items}"),
    ("en", "sort"): ("Sort these numbers from smallest to largest: {items}",
                     "Put these numbers in ascending order: {items}",
                     "Please sort: {items}"),
    ("zh", "reverse"): ("把这些词倒过来排列：{items}", "请把这个列表倒序：{items}",
                        "按相反顺序写出：{items}"),
    ("zh", "join"): ("用逗号把这些词连起来：{items}", "请用逗号分隔这些词：{items}",
                     "把下面的词写成逗号分隔的列表：{items}"),
    ("zh", "json"): ("把这些词写成 JSON 数组：{items}", "请转换成 JSON 列表：{items}",
                     "用 JSON 数组表示这些词：{items}"),
    ("zh", "sort"): ("把这些数字从小到大排序：{items}", "请按升序排列：{items}",
                     "给这些数排个序：{items}"),
}


def _format_rewrite(rng: random.Random, lang: str) -> list[Turn]:
    kind = rng.choice(("reverse", "join", "json", "sort"))
    count = rng.randint(3, 5)
    if kind == "sort":
        items = [str(x) for x in rng.sample(range(1, 50), count)]
        ordered = [str(x) for x in sorted(int(i) for i in items)]
    else:
        items = rng.sample(WORDS[lang], count)
    list_sep = ", " if lang == "en" else "、"
    # Questions show the list the way a user would type it for that request.
    shown = " ".join(items) if kind in ("join", "json") else list_sep.join(items)
    question = rng.choice(FORMAT_QUESTIONS[lang, kind]).format(items=shown)
    if kind == "reverse":
        body = list_sep.join(reversed(items))
        reply = f"Reversed: {body}." if lang == "en" else f"倒序后：{body}。"
    elif kind == "join":
        reply = ", ".join(items) if lang == "en" else "，".join(items)
    elif kind == "json":
        reply = json.dumps(items, ensure_ascii=False)
    else:
        body = list_sep.join(ordered)
        reply = f"Sorted: {body}." if lang == "en" else f"从小到大：{body}。"
    return [(question, reply)]


# -------------------------------------------------------------------- look-ups
LOOKUP_QUESTIONS = {
    ("en", "capital"): ("What is the capital of {c}?", "What's the capital city of {c}?",
                        "Which city is the capital of {c}?", "Tell me the capital of {c}."),
    ("en", "continent"): ("Which continent is {c} in?", "On which continent is {c}?",
                          "Where is {c} located?", "What continent is {c} part of?"),
    ("en", "language"): ("What language is spoken in {c}?", "What is the main language of {c}?",
                         "Which language do people speak in {c}?", "What do people in {c} speak?"),
    ("zh", "capital"): ("{c}的首都是哪里？", "{c}的首都是什么？", "请问{c}的首都是哪个城市？",
                        "告诉我{c}的首都。"),
    ("zh", "continent"): ("{c}在哪个洲？", "{c}位于哪个大洲？", "{c}属于哪个洲？"),
    ("zh", "language"): ("{c}说什么语言？", "{c}的主要语言是什么？", "{c}人讲什么语言？"),
}
# Follow-ups use "its"/"there"/"它" so the country must be taken from the earlier turn.
LOOKUP_FOLLOWUPS = {
    ("en", "capital"): ("And its capital?", "What is its capital city?",
                        "Which city is its capital?"),
    ("en", "continent"): ("Which continent is it in?", "And where is it located?",
                          "What continent is it on?"),
    ("en", "language"): ("What language do they speak there?", "And its main language?",
                         "What do people speak there?"),
    ("en", "other"): ("What about {c}?", "And {c}?", "How about {c}?"),
    ("zh", "capital"): ("那它的首都呢？", "它的首都是哪里？", "那首都是哪个城市？"),
    ("zh", "continent"): ("它在哪个洲？", "那它位于哪个洲？", "它属于哪个大洲？"),
    ("zh", "language"): ("那里说什么语言？", "那它的主要语言呢？", "那里的人说什么语言？"),
    ("zh", "other"): ("那{c}呢？", "{c}呢？", "那么{c}呢？"),
}
LOOKUP_REPLIES = {
    ("en", "capital"): "The capital of {c} is {x}.",
    ("en", "continent"): "{c} is in {x}.",
    ("en", "language"): "The main language of {c} is {x}.",
    ("zh", "capital"): "{c}的首都是{x}。",
    ("zh", "continent"): "{c}位于{x}。",
    ("zh", "language"): "{c}的主要语言是{x}。",
}


def _lookup_reply(country: Country, attr: str, lang: str) -> str:
    return LOOKUP_REPLIES[lang, attr].format(
        c=getattr(country, lang), x=getattr(country, f"{attr}_{lang}"))


def _lookup(rng: random.Random, lang: str, followups: int) -> list[Turn]:
    country, attr = rng.choice(COUNTRIES), rng.choice(ATTRIBUTES)
    question = rng.choice(LOOKUP_QUESTIONS[lang, attr]).format(c=getattr(country, lang))
    turns = [(question, _lookup_reply(country, attr, lang))]
    asked = {attr}
    for _ in range(followups):
        remaining = [a for a in ATTRIBUTES if a not in asked]
        if remaining and rng.random() < 0.7:  # another attribute of the same country
            attr = rng.choice(remaining)
            asked.add(attr)
            question = rng.choice(LOOKUP_FOLLOWUPS[lang, attr])
        else:  # same attribute of another country: "What about France?"
            country = rng.choice([c for c in COUNTRIES if c != country])
            question = rng.choice(LOOKUP_FOLLOWUPS[lang, "other"]).format(c=getattr(country, lang))
        turns.append((question, _lookup_reply(country, attr, lang)))
    return turns


# ------------------------------------------------------------------ assembly
# Single-turn task weights; the rest (35%) are multi-turn follow-ups, well above the 25% floor.
SINGLE_TURN_WEIGHTS = (("arithmetic", 0.20), ("conversion", 0.15), ("format", 0.15),
                       ("lookup", 0.15))
FOLLOWUP_WEIGHTS = (("arithmetic", 0.40), ("conversion", 0.25), ("lookup", 0.35))
MULTI_TURN_PROB = 1.0 - sum(w for _, w in SINGLE_TURN_WEIGHTS)
BUILDERS: dict[str, Callable[[random.Random, str, int], list[Turn]]] = {
    "arithmetic": _arithmetic,
    "conversion": _conversion,
    "format": lambda rng, lang, _followups: _format_rewrite(rng, lang),
    "lookup": _lookup,
}


def _weighted(rng: random.Random, table: tuple[tuple[str, float], ...]) -> str:
    names, weights = zip(*table, strict=True)
    return rng.choices(names, weights=weights)[0]


def _conversation(rng: random.Random) -> list[dict[str, str]]:
    lang = rng.choice(("en", "zh"))
    if rng.random() < MULTI_TURN_PROB:
        task, followups = _weighted(rng, FOLLOWUP_WEIGHTS), rng.choice((1, 1, 2))
    else:
        task, followups = _weighted(rng, SINGLE_TURN_WEIGHTS), 0
    turns = BUILDERS[task](rng, lang, followups)
    if rng.random() < CASUAL_PREFIX_PROB:
        turns[0] = (rng.choice(CASUAL_PREFIXES[lang]) + turns[0][0], turns[0][1])
    messages = []
    if rng.random() < SYSTEM_PROMPT_PROB:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS[lang])})
    for user, assistant in turns:
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": assistant})
    return messages


def _within_limits(messages: list[dict[str, str]]) -> bool:
    # The templates keep well inside these bounds; the check guards future template edits.
    replies_ok = all(len(m["content"]) < MAX_REPLY_CHARS
                     for m in messages if m["role"] == "assistant")
    return replies_ok and sum(len(m["content"]) for m in messages) < MAX_CONVERSATION_CHARS


def generate_demo(seed: int = 0, n: int = 3000, tool_calls: int = 0) -> list[dict]:
    """Generate ``n`` unique ChatML conversations, deterministically for ``seed``, then
    ``tool_calls`` tool-use records (``chatsft.data.demo_tools``; the shipped data has
    ``DEMO_TOOL_CALLS``), which leave the first ``n`` unchanged.

    Each record is ``{"messages": [{"role": ..., "content": ...}, ...]}`` with an optional
    leading system message, then alternating user/assistant turns ending with the assistant.
    About half the conversations are English and half Chinese; about a third are multi-turn
    follow-ups that refer to an earlier answer.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    records: list[dict] = []
    seen: set[str] = set()
    # The template space holds far more than the default n; the cap only stops a runaway loop
    # if someone asks for more unique conversations than the templates can produce.
    for _ in range(50 * n + 1000):
        if len(records) == n:
            break
        messages = _conversation(rng)
        key = json.dumps(messages, ensure_ascii=False)
        if key in seen or not _within_limits(messages):
            continue
        seen.add(key)
        records.append({"messages": messages})
    if len(records) < n:
        raise ValueError(f"could only generate {len(records)} unique conversations, not {n}")
    if tool_calls:
        from chatsft.data.demo_tools import tool_conversations  # it imports this module

        records += tool_conversations(seed, tool_calls)
    return records


def write_demo(path: str | Path, seed: int = 0, n: int = 3000, tool_calls: int = 0) -> int:
    """Write ``generate_demo(seed, n, tool_calls)`` to ``path`` as UTF-8 JSONL and return the
    count.

    The file is written to a temporary file in the same folder and moved into place with
    ``os.replace``, so readers never see a half-written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = generate_demo(seed=seed, n=n, tool_calls=tool_calls)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the data file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(records)
