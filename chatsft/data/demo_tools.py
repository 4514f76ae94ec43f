"""Deterministic tool-call conversations for the demo data (English and Chinese).

Each record declares one or two tools (the one the question needs, sometimes another) in
the form chat templates take, and the assistant answers in two steps: a call whose arguments
are copied or looked up from the question, then, after the tool's result, a one-line answer
copied from that result. Some questions need no tool (the assistant answers directly) and
many conversations ask the same tool again for other values ("And in Tokyo?").

As in `chatsft.data.demo`, only a local ``random.Random`` drives the choices, so a seed always
gives the same records, and the replies follow simple rules a tiny model can learn.
"""

from __future__ import annotations

import json
import random
import unicodedata

from chatsft.data.demo import COUNTRIES, SYSTEM_PROMPTS, _arith_reply

NO_CALL_PROB = 0.15  # the question needs none of the declared tools
FOLLOWUPS_PER_CONVERSATION = (0, 1, 1, 2)  # more questions for the same tool, drawn from these
DISTRACTOR_PROB = 0.5  # a second, unneeded tool is declared too
SYSTEM_PROMPT_PROB = 0.85
# Cities asked about: a few, so that each is seen often enough for a tiny model to learn to
# copy its name from the question into the call (the two spellings are different tokens).
CITY_COUNTRIES = ("Japan", "China", "South Korea", "Thailand", "France", "Germany", "Italy",
                  "Spain", "Egypt", "Kenya", "Brazil", "Canada")


def _tool(name: str, description: str, properties: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {
        "name": name, "description": description,
        "parameters": {"type": "object", "properties": properties, "required": required}}}


TOOLS = {
    "get_weather": _tool("get_weather", "Get the current weather in a city.",
                         {"city": {"type": "string"}}, ["city"]),
    "get_time": _tool("get_time", "Get the local time in a city.",
                      {"city": {"type": "string"}}, ["city"]),
    "convert_currency": _tool("convert_currency", "Convert an amount of money.",
                              {"amount": {"type": "number"}, "from": {"type": "string"},
                               "to": {"type": "string"}}, ["amount", "from", "to"]),
    "set_timer": _tool("set_timer", "Start a countdown timer.",
                       {"minutes": {"type": "integer"}}, ["minutes"]),
}
# code -> (English name, Chinese name, value in US cents: fixed, so results are reproducible)
CURRENCIES = {"USD": ("US dollars", "美元", 100), "EUR": ("euros", "欧元", 110),
              "GBP": ("pounds", "英镑", 125), "JPY": ("yen", "日元", 1),
              "CNY": ("yuan", "人民币", 14)}
CONDITIONS = {"en": ("sunny", "cloudy", "rainy", "windy", "snowy"),
              "zh": ("晴", "多云", "下雨", "有风", "下雪")}

QUESTIONS = {
    ("en", "get_weather"): ("What's the weather like in {city}?", "How is the weather in {city}?",
                            "Is it sunny in {city} today?", "Weather in {city}, please."),
    ("zh", "get_weather"): ("{city}天气怎么样？", "{city}今天的天气如何？", "查一下{city}的天气。"),
    ("en", "get_time"): ("What time is it in {city}?", "What's the local time in {city}?",
                         "Tell me the time in {city}."),
    ("zh", "get_time"): ("{city}现在几点？", "{city}的当地时间是多少？",
                         "查一下{city}现在的时间。"),
    ("en", "convert_currency"): ("How much is {amount} {src} in {dst}?",
                                 "Convert {amount} {src} to {dst}.",
                                 "What are {amount} {src} worth in {dst}?"),
    ("zh", "convert_currency"): ("{amount} {src}是多少{dst}？", "把 {amount} {src}换成{dst}。",
                                 "{amount} {src}能换多少{dst}？"),
    ("en", "set_timer"): ("Set a timer for {minutes} minutes.", "Start a {minutes}-minute timer.",
                          "Please time {minutes} minutes for me."),
    ("zh", "set_timer"): ("设一个 {minutes} 分钟的计时器。", "帮我计时 {minutes} 分钟。",
                          "开始 {minutes} 分钟倒计时。"),
}
FOLLOWUPS = {
    ("en", "city"): ("And in {city}?", "What about {city}?", "How about {city}?"),
    ("zh", "city"): ("那{city}呢？", "{city}呢？", "那么{city}呢？"),
    ("en", "convert_currency"): ("And {amount} {src}?", "What about {amount} {src}?"),
    ("zh", "convert_currency"): ("那 {amount} {src}呢？", "{amount} {src}呢？"),
    ("en", "set_timer"): ("Now one for {minutes} minutes.", "And another for {minutes} minutes."),
    ("zh", "set_timer"): ("再设一个 {minutes} 分钟的。", "那再来 {minutes} 分钟的。"),
}
ANSWERS = {
    ("en", "get_weather"): "It is {temperature}°C and {condition} in {city}.",
    ("zh", "get_weather"): "{city}现在 {temperature}°C，{condition}。",
    ("en", "get_time"): "It is {time} in {city}.",
    ("zh", "get_time"): "{city}现在是 {time}。",
    ("en", "convert_currency"): "{amount} {from} is {result} {to}.",
    ("zh", "convert_currency"): "{amount} {from} 等于 {result} {to}。",
    ("en", "set_timer"): "Your {minutes}-minute timer has started.",
    ("zh", "set_timer"): "已开始 {minutes} 分钟的计时。",
}


def _city(rng: random.Random, lang: str, avoid: str | None = None) -> str:
    cities = [getattr(c, f"capital_{lang}") for c in COUNTRIES if c.en in CITY_COUNTRIES]
    return rng.choice([c for c in cities if c != avoid])


def _request(rng: random.Random, lang: str, name: str, previous: dict | None
             ) -> tuple[dict, dict]:
    """Fill-ins for the question and the call's arguments; a follow-up changes one value."""
    # String arguments appear in the question quoted as the call writes them ("Paris",
    # "USD"): the scratch tokenizer turns ` Paris` and `"Paris` into different tokens, and a
    # model this small learns to copy a token, not to map one to another.
    if name in ("get_weather", "get_time"):
        city = _city(rng, lang, previous and previous["city"])
        return {"city": f'"{city}"'}, {"city": city}
    if name == "convert_currency":
        src, dst = (previous["from"], previous["to"]) if previous else rng.sample(
            sorted(CURRENCIES), 2)
        amount = rng.choice([n for n in (5, 10, 20, 50, 100, 200, 500)
                             if not previous or n != previous["amount"]])
        return ({"amount": amount, "src": f'"{src}"', "dst": f'"{dst}"'},
                {"amount": amount, "from": src, "to": dst})
    minutes = rng.choice([m for m in (1, 2, 3, 5, 10, 15, 20, 25, 30, 45, 60)
                          if not previous or m != previous["minutes"]])
    return {"minutes": minutes}, {"minutes": minutes}


def _result(rng: random.Random, lang: str, name: str, args: dict) -> dict:
    """What the tool returns: made up but consistent (conversions use the fixed rates)."""
    if name == "get_weather":
        return {"city": args["city"], "temperature": rng.randint(-5, 35),
                "condition": rng.choice(CONDITIONS[lang])}
    if name == "get_time":
        return {"city": args["city"], "time": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"}
    if name == "convert_currency":
        cents = args["amount"] * CURRENCIES[args["from"]][2]
        return {"result": round(cents / CURRENCIES[args["to"]][2], 2), "currency": args["to"]}
    return {"status": "started", "minutes": args["minutes"]}


def _exchange(rng: random.Random, lang: str, name: str, question: str, args: dict
              ) -> list[dict]:
    """The call, the tool's result and the answer copied from it."""
    result = _result(rng, lang, name, args)
    call = {"type": "function", "function": {"name": name, "arguments": args}}
    answer = ANSWERS[lang, name].format_map(args | result)
    return [{"role": "user", "content": question},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": json.dumps(result, ensure_ascii=False)},
            {"role": "assistant", "content": answer}]


def tool_conversation(rng: random.Random) -> dict:
    """One record: `{"messages": [...], "tools": [...]}`."""
    lang = rng.choice(("en", "zh"))
    names = sorted(TOOLS)
    name = rng.choice(names)
    declared = [name]
    if rng.random() < DISTRACTOR_PROB:
        declared.append(rng.choice([n for n in names if n != name]))
        rng.shuffle(declared)
    messages = []
    if rng.random() < SYSTEM_PROMPT_PROB:
        messages.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS[lang])})
    if rng.random() < NO_CALL_PROB:  # a question none of the tools is for
        a, b = rng.randint(1, 19), rng.randint(1, 19)
        question = f"What is {a} + {b}?" if lang == "en" else f"{a} 加 {b} 等于多少？"
        messages += [{"role": "user", "content": question},
                     {"role": "assistant", "content": _arith_reply(a, "add", b, lang)[0]}]
        return {"messages": messages, "tools": [TOOLS[n] for n in declared]}
    fill, args = _request(rng, lang, name, None)
    messages += _exchange(rng, lang, name, rng.choice(QUESTIONS[lang, name]).format(**fill),
                          args)
    for _ in range(rng.choice(FOLLOWUPS_PER_CONVERSATION)):
        fill, args = _request(rng, lang, name, args)
        kind = "city" if "city" in args else name
        messages += _exchange(rng, lang, name, rng.choice(FOLLOWUPS[lang, kind]).format(**fill),
                              args)
    return {"messages": messages, "tools": [TOOLS[n] for n in declared]}


def tool_conversations(seed: int, n: int) -> list[dict]:
    """`n` distinct tool-use records, deterministic for `seed` (distinct also after the clean
    stage's near-duplicate normalization)."""
    rng = random.Random(f"tools-{seed}")  # str seeds hash with SHA-512: stable across runs
    records, seen = [], set()
    for _ in range(50 * n + 1000):
        if len(records) == n:
            break
        record = tool_conversation(rng)
        key = unicodedata.normalize("NFKC", json.dumps(record, ensure_ascii=False)).casefold()
        if key not in seen:
            seen.add(key)
            records.append(record)
    if len(records) < n:
        raise ValueError(f"could only generate {len(records)} unique tool conversations, not {n}")
    return records
