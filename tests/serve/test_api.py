"""`chatsft serve` in a real process, through the official `openai` client."""

from __future__ import annotations

import json
import signal

import httpx
import pytest

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.inference.generation import generate_replies, load_for_inference
from chatsft.model.load import load_tokenizer
from chatsft.params import GenerationParams
from chatsft.serve.tools import template_messages, template_tools
from tests.serve.models import (
    TOOL_QUESTION,
    WEATHER_TOOL,
    tool_caller,
    widened_model,
)
from tests.serve.server import Server

openai = pytest.importorskip("openai")

KEY = "test-key-123"
ASK = [{"role": "system", "content": "Answer briefly."},
       {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tiny_model_dir):
    tiny = widened_model(tiny_model_dir, tmp_path_factory.mktemp("tiny_wide"))
    return {"tiny": tiny, "qwen-tools": tool_caller(tmp_path_factory.mktemp("qwen"))}


@pytest.fixture(scope="module")
def server(dirs):
    srv = Server(["serve", "--api-key", KEY, "--max-body-bytes", "65536",
                  *(a for name, path in dirs.items() for a in ("--model-path", f"{name}={path}"))])
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def alone(path, messages, max_tokens, tools=None):
    """The reply `chatsft predict` would give, and the exact prompt tokens."""
    model, tok = load_for_inference(str(path)), load_tokenizer(path)
    [reply] = generate_replies(model, tok, [messages], GenerationParams(max_new_tokens=max_tokens))
    return reply, len(ChatEncoder(tok).encode_prompt(messages, tools))


def test_models_and_health(client, server):
    assert {m.id for m in client.models.list()} == {"tiny", "qwen-tools"}
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}  # no key needed


def test_reply_and_usage_equal_the_predict_path(client, dirs):
    out = client.chat.completions.create(model="tiny", messages=ASK, temperature=0,
                                         max_tokens=12)
    reply, prompt_tokens = alone(dirs["tiny"], ASK, 12)
    choice = out.choices[0]
    assert choice.message.content == reply.text and reply.text
    assert out.usage.prompt_tokens == prompt_tokens
    assert out.usage.completion_tokens == reply.generated_tokens
    assert out.usage.total_tokens == prompt_tokens + reply.generated_tokens
    stopped = reply.generated_tokens > len(reply.ids)
    assert choice.finish_reason == ("stop" if stopped else "length")


def test_a_seed_makes_sampling_repeatable(client):
    kwargs = dict(model="tiny", messages=ASK, temperature=1.2, max_tokens=12)
    first, again, other = (client.chat.completions.create(**kwargs, seed=s).choices[0]
                           .message.content for s in (5, 5, 6))
    assert first == again and first != other


def test_streaming_sends_the_same_reply_in_pieces(client, server):
    kwargs = dict(model="tiny", messages=ASK, temperature=0, max_tokens=16)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(
        **kwargs, stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices
              and c.choices[0].delta.content]
    assert len(pieces) > 2 and "".join(pieces) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == \
        whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={**kwargs,
                      "stream": True}, headers={"Authorization": f"Bearer {KEY}"}) as r:
        lines = [x for x in r.iter_lines() if x]
    assert r.headers["content-type"].startswith("text/event-stream")
    assert lines[-1] == "data: [DONE]" and all(x.startswith("data: ") for x in lines)


def test_stop_sequences_cut_the_reply(client):
    kwargs = dict(model="tiny", messages=ASK, temperature=0, max_tokens=16)
    text = client.chat.completions.create(**kwargs).choices[0].message.content
    stop = text[len(text) // 2:][:2]
    out = client.chat.completions.create(**kwargs, stop=[stop, "never-seen"])
    assert out.choices[0].message.content == text[: text.find(stop)].strip()
    assert out.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        **kwargs, stop=stop, stream=True))
    assert streamed == out.choices[0].message.content


def test_tools_round_trip(client, dirs):
    out = client.chat.completions.create(model="qwen-tools", messages=TOOL_QUESTION,
                                         tools=[WEATHER_TOOL], temperature=0, max_tokens=60)
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    # The call and its result go back in; the prompt renders them as the template does.
    follow = TOOL_QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature_c": 18}'}]
    again = client.chat.completions.create(model="qwen-tools", messages=follow,
                                           tools=[WEATHER_TOOL], temperature=0, max_tokens=5)
    tok = load_tokenizer(dirs["qwen-tools"])
    rendered = ChatEncoder(tok).encode_prompt(template_messages(follow),
                                              template_tools([WEATHER_TOOL]))
    assert again.usage.prompt_tokens == len(rendered)
    assert "<tool_response>" in tok.decode(rendered) and "get_weather" in tok.decode(rendered)


def error_of(server, body, key=KEY, raw: bytes | None = None, path="/v1/chat/completions"):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        r = httpx.post(server.url + path, content=raw, headers=headers)
    else:
        r = httpx.post(server.url + path, json=body, headers=headers)
    assert set(r.json()["error"]) >= {"message", "type", "code"}
    return r.status_code, r.json()["error"]["message"]


def test_every_bad_request_gets_its_status_not_a_500(client, server):
    ok = {"model": "tiny", "messages": ASK, "max_tokens": 4}
    cases = {
        "bad json": (400, dict(body=None, raw=b'{"model": "tiny", "messages": [')),
        "unknown model": (404, dict(body={**ok, "model": "gpt-9"})),
        "missing messages": (422, dict(body={"model": "tiny"})),
        "empty messages": (422, dict(body={**ok, "messages": []})),
        "wrong role": (422, dict(body={**ok, "messages": [{"role": "wizard", "content": "x"}]})),
        "ends with assistant": (422, dict(body={**ok, "messages": ASK + [
            {"role": "assistant", "content": "Paris."}]})),
        "oversize body": (413, dict(body={**ok, "messages": [
            {"role": "user", "content": "x" * 70000}]})),
        "max_tokens over the context": (400, dict(body={**ok, "max_tokens": 100000})),
        "prompt over the context": (400, dict(body={**ok, "max_tokens": 300, "messages": [
            {"role": "user", "content": "word " * 2000}]})),
        "n > 1": (422, dict(body={**ok, "n": 2})),
        "wrong api key": (401, dict(body=ok, key="nope")),
        "no api key": (401, dict(body=ok, key=None)),
        "unknown route": (404, dict(body=ok, path="/v1/completions")),
    }
    for what, (status, kwargs) in cases.items():
        got, message = error_of(server, **kwargs)
        assert got == status, f"{what}: {got} {message}"
    # The openai client maps them to its exceptions.
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=ASK)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="nope", max_retries=0
                      ).models.list()
    with pytest.raises(openai.BadRequestError, match="context"):
        client.chat.completions.create(model="tiny", messages=ASK, max_tokens=100000)


@pytest.mark.slow
def test_sigterm_finishes_the_request_in_flight(bigram_model_dir, chatml_tokenizer):
    from tests.test_generation import prompt_end, words

    [a] = words(chatml_tokenizer, 1)
    path = bigram_model_dir({prompt_end(chatml_tokenizer): a}, default=a)  # never stops
    srv = Server(["serve", "--model-path", str(path)])
    body = {"model": path.name, "messages": ASK[1:], "max_tokens": 300, "temperature": 0,
            "stream": True}
    with httpx.stream("POST", srv.url + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = r.iter_lines()
        assert next(x for x in lines if x).startswith("data: ")  # the request is in flight
        srv.proc.send_signal(signal.SIGTERM)
        rest = [x for x in lines if x]
    code, err = srv.stop()
    final = json.loads(rest[-2][len("data: "):])
    assert rest[-1] == "data: [DONE]" and final["choices"][0]["finish_reason"] == "length"
    assert code == 0, err
    assert "Traceback" not in err
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url + "/health")
