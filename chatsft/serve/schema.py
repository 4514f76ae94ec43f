"""The request body of `POST /v1/chat/completions`, and OpenAI-style errors.

Every refusal is an `ApiError` with an OpenAI error body (`{"error": {"message", "type",
"param", "code"}}`): 400 bad JSON or a request the model cannot serve (context, tools), 401 a
missing or wrong API key, 404 an unknown model or route, 413 an oversize body, 422 a body that
does not match this schema (missing messages, a wrong role, a bad value).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status, message, type_, param, code)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


class _Lenient(BaseModel):
    # Clients send fields this server does not use (user, metadata, ...): accepted, ignored.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class Message(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def plain(self) -> dict:
        """The message with text content (parts joined) and the OpenAI `developer` role as
        `system`, as templates know it."""
        content = self.content if not isinstance(self.content, list) else "".join(
            p.text for p in self.content)
        role = "system" if self.role == "developer" else self.role
        return {"role": role, "content": content, "name": self.name,
                "tool_calls": self.tool_calls, "tool_call_id": self.tool_call_id}


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    model: str
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = Field(None, validate_default=True)  # a list after checks
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="one choice per request")
    stream: bool = False
    stream_options: StreamOptions | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto"] | None = None
    frequency_penalty: float = Field(0.0, ge=0, le=0, description="not supported")
    presence_penalty: float = Field(0.0, ge=0, le=0, description="not supported")

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return stops

    @field_validator("messages")
    @classmethod
    def _order(cls, v: list[Message]) -> list[Message]:
        if v[-1].role not in ("user", "tool"):
            raise ValueError("the last message must be a user or tool message")
        for i, m in enumerate(v):
            if m.role in ("system", "developer") and i != 0:
                raise ValueError(f"messages[{i}]: a system message must come first")
            if m.role in ("user", "system", "developer", "tool") and m.content is None:
                raise ValueError(f"messages[{i}]: a {m.role} message needs content")
        return v


def parse_request(data: Any) -> ChatRequest:
    """The request, or a 422 naming each wrong field."""
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}"
                             for e in err.errors()[:5])
        raise ApiError(422, problems, param=param, code="invalid_value") from None
