"""The OpenAI-compatible routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`.

A request's messages are rendered by `ChatEncoder.encode_prompt` (the training encoding: the
template, control-token text kept as plain text) after `fit_prompt` drops the oldest exchanges
that do not fit `context - max_tokens`; the job then joins the model's `Batcher`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route

from chatsft.chat_template.encoder import ChatEncoder
from chatsft.inference.generation import PromptTooLong, context_size, fit_prompt, stop_token_ids
from chatsft.serve.batcher import Batcher, Job
from chatsft.serve.schema import ApiError, ChatRequest, parse_request
from chatsft.serve.tools import BadRequest, split_reply, template_messages, template_tools

MAX_BODY = 4 << 20  # bytes


@dataclass
class ServedModel:
    name: str
    model: object
    tokenizer: object
    encoder: ChatEncoder
    context: int | None
    batcher: Batcher
    created: int

    @classmethod
    def build(cls, name: str, model, tokenizer, max_context: int | None = None,
              max_batch: int = 32, window: float = 0.01) -> ServedModel:
        encoder = ChatEncoder(tokenizer)
        batcher = Batcher(model, tokenizer, stop_token_ids(model, encoder), max_batch, window)
        return cls(name, model, tokenizer, encoder, context_size(model, max_context), batcher,
                   int(time.time()))

    @property
    def parses_tool_calls(self) -> bool:
        return "<tool_call>" in (self.tokenizer.chat_template or "")

    def default_max_tokens(self) -> int:
        return min(512, (self.context or 1024) // 2)


class ApiKeyMiddleware:
    """With a key, every route but /health needs `Authorization: Bearer KEY`."""

    def __init__(self, app, key: str | None) -> None:
        self.app, self.key = app, key

    async def __call__(self, scope, receive, send) -> None:
        if self.key and scope["type"] == "http" and scope["path"] != "/health":
            auth = dict(scope["headers"]).get(b"authorization", b"")
            given = auth[7:] if auth[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(given, self.key.encode()):
                err = ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)",
                               code="invalid_api_key")
                await JSONResponse(err.body(), status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_json(request: Request, limit: int) -> object:
    """The body as JSON: 413 past `limit` bytes (counted as it arrives), 400 if not JSON."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body over {limit} bytes", code="body_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body over {limit} bytes", code="body_too_large")
    try:
        return json.loads(body)
    except ValueError as err:
        raise ApiError(400, f"the body is not valid JSON: {err}", code="invalid_json") from None


def make_job(served: ServedModel, req: ChatRequest) -> tuple[Job, list[dict] | None]:
    """The generation job of a request (prompt fitted to the context), and its tools."""
    max_tokens = req.max_completion_tokens or req.max_tokens or served.default_max_tokens()
    if served.context is not None and max_tokens >= served.context:
        raise ApiError(400, f"max_tokens {max_tokens} leaves no room for the prompt in the "
                       f"context window of {served.context} tokens", param="max_tokens",
                       code="context_length_exceeded")
    try:
        tools = None if req.tool_choice == "none" else template_tools(req.tools)
        messages = template_messages([m.plain() for m in req.messages])
    except BadRequest as err:
        raise ApiError(400, str(err), param="messages") from None
    if tools and not served.encoder.supports_tools(tools):
        raise ApiError(400, f"the chat template of {served.name} does not render tools",
                       param="tools")
    budget = None if served.context is None else served.context - max_tokens
    try:
        prompt, _ = fit_prompt(served.encoder, messages, budget, tools)
    except PromptTooLong as err:
        raise ApiError(400, str(err), param="messages", code="context_length_exceeded") from None
    except Exception as err:  # the template refused these messages (raise_exception, ...)
        raise ApiError(400, f"the chat template cannot render these messages: {err}",
                       param="messages") from None
    return Job(prompt, max_tokens, req.temperature, req.top_p, req.seed, req.stop), tools


def _safe_text(text: str, stops: Sequence[str]) -> str:
    """What a stream may send of unfinished text: not a reasoning block (sent at the end), a
    trailing partial character, whitespace, or the start of a stop string (it may be cut)."""
    text = text.lstrip()
    if text.startswith("<think>"):
        end = text.find("</think>")
        text = "" if end < 0 else text[end + len("</think>"):].lstrip()
    text = text.rstrip("\ufffd").rstrip()
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:k]):
                text = text[:-k]
                break
    return text


class Completions:
    def __init__(self, models: dict[str, ServedModel], max_body: int = MAX_BODY) -> None:
        self.models, self.max_body = models, max_body

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": "chatsft"}
            for m in self.models.values()]})

    async def create(self, request: Request) -> Response:
        req = parse_request(await read_json(request, self.max_body))
        served = self.models.get(req.model)
        if served is None:
            raise ApiError(404, f"model {req.model!r} is not served (GET /v1/models lists "
                           f"them: {', '.join(self.models)})", param="model",
                           code="model_not_found")
        job, tools = make_job(served, req)
        loop, updates = asyncio.get_running_loop(), asyncio.Queue()
        job.notify = lambda: loop.call_soon_threadsafe(updates.put_nowait, None)
        served.batcher.submit(job)
        head = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": served.name}
        parse_calls = bool(tools) and served.parses_tool_calls
        if req.stream:
            return StreamingResponse(self._stream(job, updates, req, head, parse_calls),
                                     media_type="text/event-stream")
        while not job.finish_reason:
            await updates.get()
        choice, usage = self._result(job, parse_calls)
        return JSONResponse({**head, "object": "chat.completion", "usage": usage,
                             "choices": [{"index": 0, "logprobs": None, **choice}]})

    @staticmethod
    def _result(job: Job, parse_calls: bool) -> tuple[dict, dict]:
        if job.finish_reason == "error":
            raise ApiError(503, f"generation failed: {job.error}", "server_error")
        reasoning, content, calls = split_reply(job.text.strip(), parse_calls)
        message = {"role": "assistant", "content": content}
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = calls
        usage = {"prompt_tokens": len(job.prompt), "completion_tokens": len(job.tokens),
                 "total_tokens": len(job.prompt) + len(job.tokens)}
        return {"message": message,
                "finish_reason": "tool_calls" if calls else job.finish_reason}, usage

    async def _stream(self, job: Job, updates: asyncio.Queue, req: ChatRequest, head: dict,
                      parse_calls: bool) -> AsyncIterator[str]:
        def event(delta: dict, finish: str | None = None, **extra) -> str:
            return "data: " + json.dumps({**head, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                **extra}, ensure_ascii=False) + "\n\n"

        try:
            yield event({"role": "assistant", "content": ""})
            sent = ""
            while not job.finish_reason:
                await updates.get()
                if parse_calls or job.finish_reason:
                    continue  # tool calls are parsed from the whole reply, sent at the end
                text = _safe_text(job.text, req.stop)
                if len(text) > len(sent) and text.startswith(sent):
                    yield event({"content": text[len(sent):]})
                    sent = text
            try:
                choice, usage = self._result(job, parse_calls)
            except ApiError as err:
                yield "data: " + json.dumps(err.body()) + "\n\n"
                return
            message = choice["message"]
            delta = {k: v for k, v in message.items() if k in ("reasoning_content", "tool_calls")}
            content = message["content"] or ""
            rest = content[len(sent):] if content.startswith(sent) else content
            if rest or (not delta and parse_calls):
                delta["content"] = rest
            if delta.get("tool_calls"):
                delta["tool_calls"] = [{"index": i, **c} for i, c in
                                       enumerate(delta["tool_calls"])]
            yield event(delta, choice["finish_reason"])
            if req.stream_options and req.stream_options.include_usage:
                yield "data: " + json.dumps({**head, "object": "chat.completion.chunk",
                                             "choices": [], "usage": usage}) + "\n\n"
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled = True  # a client that goes away frees its row at the next step


async def _api_error(request: Request, exc: ApiError) -> Response:
    return JSONResponse(exc.body(), status_code=exc.status)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    err = ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                   code=code)
    return JSONResponse(err.body(), status_code=exc.status_code)


async def _server_error(request: Request, exc: Exception) -> Response:
    err = ApiError(500, f"internal error: {type(exc).__name__}", "server_error")
    return JSONResponse(err.body(), status_code=500)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(models: dict[str, ServedModel], api_key: str | None = None,
               max_body: int = MAX_BODY, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    completions = Completions(models, max_body)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        # uvicorn has finished the in-flight requests by now (SIGTERM, Ctrl-C).
        for served in models.values():
            await anyio.to_thread.run_sync(served.batcher.close)

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", completions.list_models, methods=["GET"]),
        Route("/v1/chat/completions", completions.create, methods=["POST"]),
        *extra_routes,
    ]
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _server_error})
    app.add_middleware(ApiKeyMiddleware, key=api_key)
    return app
