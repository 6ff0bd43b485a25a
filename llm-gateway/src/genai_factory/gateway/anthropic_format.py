"""Anthropic Messages <-> the internal (OpenAI-shaped) chat request, response and stream.

Both directions live here: the ``/v1/messages`` ingress (Anthropic request in, internal request to
the pipeline, Anthropic response or SSE events out) and the Anthropic provider (internal request
out to Anthropic, its response and events back to internal chunks).

Example:
    >>> chat = request_to_chat({"model": "m", "max_tokens": 64, "system": "Be brief.",
    ...     "messages": [{"role": "user", "content": "Hi"}]})
    >>> [(m.role, m.text()) for m in chat.messages], chat.max_tokens
    ([('system', 'Be brief.'), ('user', 'Hi')], 64)
    >>> chat_to_request(chat, "claude-x")["system"]
    'Be brief.'
"""

from __future__ import annotations

import re
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from genai_factory.gateway.providers.base import arguments_object
from genai_factory.gateway.sse import SSEEvent, encode_sse
from genai_factory.shared.errors import BadRequest, ProviderError, ValidationError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    ChunkDelta,
    NamedToolChoice,
    ToolCallDelta,
    new_id,
    parse,
)

__all__ = [
    "StreamDecoder",
    "StreamEncoder",
    "chat_to_request",
    "error_body",
    "request_to_chat",
    "response_from_chat",
    "response_to_chat",
]

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_DATA_URL = re.compile(r"^data:(?P<type>[\w/+.-]+);base64,(?P<data>.+)$", re.DOTALL)


# ------------------------------------------------------------------------------ ingress side


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class _Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class MessagesRequest(BaseModel):
    """An Anthropic ``POST /v1/messages`` body (validated before translation)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1)
    messages: list[_Message] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stop_sequences: list[str] | None = None
    stream: bool = False
    tools: list[_Tool] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None


def _text_of(blocks: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(blocks, str):
        return blocks
    texts = []
    for i, block in enumerate(blocks):
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise ValidationError(f"'{where}.{i}' must be a text block", param=f"{where}.{i}")
        texts.append(block["text"])
    return "\n".join(texts)


def _image_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif isinstance(source, dict) and source.get("type") == "url" and source.get("url"):
        url = str(source["url"])
    else:
        raise ValidationError(f"'{where}.source' must be base64 or url", param=f"{where}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _user_messages(content: str | list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    tool_results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image_part(block, f"{where}.{i}"))
        elif kind == "tool_result" and isinstance(block.get("tool_use_id"), str):
            result = block.get("content", "")
            text = _text_of(result, f"{where}.{i}.content") if result else ""
            tool_results.append(
                {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}
            )
        else:
            raise ValidationError(
                f"unsupported content block '{kind}' at '{where}.{i}'", param=f"{where}.{i}"
            )
    messages = tool_results
    if parts:
        if all(p["type"] == "text" for p in parts):
            messages.append({"role": "user", "content": "".join(p["text"] for p in parts)})
        else:
            messages.append({"role": "user", "content": parts})
    return messages


def _assistant_message(content: str | list[dict[str, Any]], where: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use" and isinstance(block.get("id"), str) and block.get("name"):
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block["id"],
                    "type": "function",
                    "function": {"name": str(block["name"]), "arguments": arguments},
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise ValidationError(
                f"unsupported content block '{kind}' at '{where}.{i}'", param=f"{where}.{i}"
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _tool_choice(choice: dict[str, Any] | None) -> tuple[Any, bool | None]:
    if choice is None:
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice.get("type")
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool" and choice.get("name"):
        return {"type": "function", "function": {"name": str(choice["name"])}}, parallel
    raise ValidationError("tool_choice.type must be auto, any, tool or none", param="tool_choice")


def request_to_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    """An Anthropic Messages request as the internal chat request (ValidationError if invalid)."""
    request = parse(MessagesRequest, body)
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": _text_of(request.system, "system")})
    for i, message in enumerate(request.messages):
        where = f"messages.{i}.content"
        if message.role == "user":
            messages.extend(_user_messages(message.content, where))
        else:
            messages.append(_assistant_message(message.content, where))
    tool_choice, parallel = _tool_choice(request.tool_choice)
    chat: dict[str, Any] = {
        "model": request.model,
        "messages": messages,
        "max_tokens": request.max_tokens,
        "stream": request.stream,
    }
    optional = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "stop": request.stop_sequences,
        "tool_choice": tool_choice,
        "parallel_tool_calls": parallel,
    }
    chat.update({k: v for k, v in optional.items() if v is not None})
    if request.tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema,
                },
            }
            for tool in request.tools
        ]
    if request.metadata and isinstance(request.metadata.get("user_id"), str):
        chat["user"] = request.metadata["user_id"]
    return parse(ChatCompletionRequest, chat)


def _message_id(response_id: str) -> str:
    return response_id if response_id.startswith("msg_") else "msg_" + response_id.split("-")[-1]


def response_from_chat(response: ChatCompletionResponse) -> dict[str, Any]:
    """An internal answer as an Anthropic Messages response."""
    content: list[dict[str, Any]] = []
    stop_reason = "end_turn"
    if response.choices:
        choice = response.choices[0]
        text = choice.message.text()
        if text:
            content.append({"type": "text", "text": text})
        for call in choice.message.tool_calls or ():
            content.append(
                {
                    "type": "tool_use",
                    "id": call.id,
                    "name": call.function.name,
                    "input": arguments_object(call.function.arguments),
                }
            )
        stop_reason = FINISH_TO_STOP.get(choice.finish_reason or "stop", "end_turn")
    usage = response.usage
    return {
        "id": _message_id(response.id),
        "type": "message",
        "role": "assistant",
        "model": response.model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage.prompt_tokens if usage else 0,
            "output_tokens": usage.completion_tokens if usage else 0,
        },
    }


def error_body(status: int, openai_body: dict[str, Any]) -> dict[str, Any]:
    """Anthropic's error shape for an error the gateway answers with ``status``."""
    error = openai_body.get("error", {})
    kind = _ERROR_TYPES.get(status) or ("overloaded_error" if status == 503 else "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.get("message", "")}}


class StreamEncoder:
    """Internal chunks -> Anthropic SSE events (message_start ... message_stop)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.index = -1
        self.block: str | None = None
        self.tool_blocks: dict[int, int] = {}
        self.stop_reason = "end_turn"
        self.input_tokens = 0
        self.output_tokens = 0
        self.message_id = "msg_" + new_id("x").split("-")[1]

    def _start(self, chunk: ChatCompletionChunk) -> list[bytes]:
        self.started = True
        message: dict[str, Any] = {
            "id": _message_id(chunk.id) if chunk.id else self.message_id,
            "type": "message",
            "role": "assistant",
            "model": chunk.model or self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return [encode_sse({"type": "message_start", "message": message}, "message_start")]

    def _close_block(self) -> list[bytes]:
        if self.block is None:
            return []
        self.block = None
        return [
            encode_sse({"type": "content_block_stop", "index": self.index}, "content_block_stop")
        ]

    def _open_block(self, block: dict[str, Any]) -> list[bytes]:
        events = self._close_block()
        self.index += 1
        self.block = block["type"]
        payload = {"type": "content_block_start", "index": self.index, "content_block": block}
        events.append(encode_sse(payload, "content_block_start"))
        return events

    def _delta(self, index: int, delta: dict[str, Any]) -> bytes:
        payload = {"type": "content_block_delta", "index": index, "delta": delta}
        return encode_sse(payload, "content_block_delta")

    def encode(self, chunk: ChatCompletionChunk) -> list[bytes]:
        if chunk.usage is not None:
            self.input_tokens = chunk.usage.prompt_tokens
            self.output_tokens = chunk.usage.completion_tokens
        events = [] if self.started else self._start(chunk)
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                if self.block != "text":
                    events += self._open_block({"type": "text", "text": ""})
                events.append(
                    self._delta(self.index, {"type": "text_delta", "text": delta.content})
                )
            for call in delta.tool_calls or ():
                function = call.function or {}
                if call.index not in self.tool_blocks:
                    block = {
                        "type": "tool_use",
                        "id": call.id or new_id("toolu"),
                        "name": function.get("name", ""),
                        "input": {},
                    }
                    events += self._open_block(block)
                    self.tool_blocks[call.index] = self.index
                if function.get("arguments"):
                    events.append(
                        self._delta(
                            self.tool_blocks[call.index],
                            {"type": "input_json_delta", "partial_json": function["arguments"]},
                        )
                    )
            if choice.finish_reason:
                self.stop_reason = FINISH_TO_STOP.get(choice.finish_reason, "end_turn")
        return events

    def finish(self) -> list[bytes]:
        events = [] if self.started else self._start(ChatCompletionChunk(id="", model=self.model))
        events += self._close_block()
        usage = {"input_tokens": self.input_tokens, "output_tokens": self.output_tokens}
        delta = {"stop_reason": self.stop_reason, "stop_sequence": None}
        events.append(
            encode_sse({"type": "message_delta", "delta": delta, "usage": usage}, "message_delta")
        )
        events.append(encode_sse({"type": "message_stop"}, "message_stop"))
        return events

    def error(self, status: int, openai_body: dict[str, Any]) -> bytes:
        return encode_sse(error_body(status, openai_body), "error")


# ----------------------------------------------------------------------------- provider side


def _anthropic_blocks(message: Any) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks: list[dict[str, Any]] = []
    for part in message.content or ():
        if part.type == "text":
            blocks.append({"type": "text", "text": part.text or ""})
        elif part.type == "image_url" and part.image_url is not None:
            match = _DATA_URL.match(part.image_url.url)
            source = (
                {"type": "base64", "media_type": match["type"], "data": match["data"]}
                if match
                else {"type": "url", "url": part.image_url.url}
            )
            blocks.append({"type": "image", "source": source})
        else:
            raise BadRequest(f"Anthropic does not take '{part.type}' content", param="messages")
    return blocks


def chat_to_request(
    request: ChatCompletionRequest, model: str, default_max_tokens: int = 4096
) -> dict[str, Any]:
    """The internal chat request as an Anthropic Messages request body for ``model``."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:  # Anthropic wants roles to alternate
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for message in request.messages:
        if message.role in ("system", "developer"):
            system.append(message.text())
        elif message.role == "user":
            add("user", _anthropic_blocks(message))
        elif message.role == "assistant":
            blocks = _anthropic_blocks(message)
            for call in message.tool_calls or ():
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.function.name,
                        "input": arguments_object(call.function.arguments),
                    }
                )
            add("assistant", blocks)
        else:  # tool / function results
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.tool_call_id or message.name or "",
                        "content": message.text(),
                    }
                ],
            )
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        schema = response_format.schema_ or (
            response_format.json_schema.schema_ if response_format.json_schema else None
        )
        instruction = "Answer with one JSON object and nothing else."
        if schema:
            instruction += " It must match this JSON schema: " + orjson.dumps(schema).decode()
        system.append(instruction)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.output_limit or default_max_tokens,
        "messages": turns,
    }
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = min(1.0, request.temperature)
    if request.top_p is not None:
        body["top_p"] = request.top_p
    top_k = (request.model_extra or {}).get("top_k")
    if isinstance(top_k, int):
        body["top_k"] = top_k
    if request.stop is not None:
        body["stop_sequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if request.tools:
        body["tools"] = [
            {
                "name": tool.function.name,
                "description": tool.function.description or "",
                "input_schema": tool.function.parameters or {"type": "object", "properties": {}},
            }
            for tool in request.tools
        ]
        choice = request.tool_choice
        anthropic_choice: dict[str, Any] | None = None
        if choice == "auto":
            anthropic_choice = {"type": "auto"}
        elif choice == "required":
            anthropic_choice = {"type": "any"}
        elif choice == "none":
            anthropic_choice = {"type": "none"}
        elif isinstance(choice, NamedToolChoice):
            anthropic_choice = {"type": "tool", "name": choice.function["name"]}
        if request.parallel_tool_calls is False:
            anthropic_choice = (anthropic_choice or {"type": "auto"}) | {
                "disable_parallel_tool_use": True
            }
        if anthropic_choice is not None:
            body["tool_choice"] = anthropic_choice
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.stream:
        body["stream"] = True
    return body


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    prompt = sum(
        int(usage.get(name) or 0)
        for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    completion = int(usage.get("output_tokens") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def response_to_chat(data: dict[str, Any], model: str) -> ChatCompletionResponse:
    """An Anthropic Messages response as the internal chat response."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or ():
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id")),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name")),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    finish = STOP_TO_FINISH.get(str(data.get("stop_reason")), "stop")
    return ChatCompletionResponse.model_validate(
        {
            "id": str(data.get("id") or new_id("chatcmpl")),
            "model": str(data.get("model") or model),
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": _usage(data.get("usage")),
        }
    )


def provider_error(provider: str, payload: dict[str, Any]) -> ProviderError:
    """An in-stream Anthropic ``error`` event as a ProviderError."""
    error = payload.get("error") or {}
    kind = str(error.get("type", "api_error"))
    status = {v: k for k, v in _ERROR_TYPES.items()}.get(kind, 500)
    return ProviderError(
        f"{provider}: {error.get('message', kind)}",
        retryable=status in (429, 500, 529),
        upstream_status=status,
        provider=provider,
        code=kind,
    )


class StreamDecoder:
    """Anthropic SSE events -> internal chunks (None for events with nothing to pass on)."""

    def __init__(self, model: str, provider: str = "anthropic") -> None:
        self.model = model
        self.provider = provider
        self.id = new_id("chatcmpl")
        self.tools: dict[int, int] = {}
        self.input_tokens = 0
        self.finished = False

    def _chunk(self, delta: ChunkDelta | None = None, **fields: Any) -> ChatCompletionChunk:
        choice = ChunkChoice(delta=delta or ChunkDelta(), finish_reason=fields.pop("finish", None))
        return ChatCompletionChunk(id=self.id, model=self.model, choices=[choice], **fields)

    def decode(self, event: SSEEvent) -> ChatCompletionChunk | None:
        try:
            payload = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise ProviderError(
                f"{self.provider}: malformed stream event",
                retryable=True,
                provider=self.provider,
                code="malformed_response",
            ) from None
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "message_start":
            message = payload.get("message") or {}
            self.id = str(message.get("id") or self.id)
            self.model = str(message.get("model") or self.model)
            self.input_tokens = _usage(message.get("usage"))["prompt_tokens"]
            return self._chunk(ChunkDelta(role="assistant", content=""))
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                tool_index = len(self.tools)
                self.tools[int(payload.get("index", 0))] = tool_index
                call = ToolCallDelta(
                    index=tool_index,
                    id=str(block.get("id")),
                    type="function",
                    function={"name": str(block.get("name")), "arguments": ""},
                )
                return self._chunk(ChunkDelta(tool_calls=[call]))
            if block.get("type") == "text" and block.get("text"):
                return self._chunk(ChunkDelta(content=str(block["text"])))
            return None
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._chunk(ChunkDelta(content=str(delta.get("text", ""))))
            if delta.get("type") == "input_json_delta":
                tool_index = self.tools.get(int(payload.get("index", 0)), 0)
                call = ToolCallDelta(
                    index=tool_index, function={"arguments": str(delta.get("partial_json", ""))}
                )
                return self._chunk(ChunkDelta(tool_calls=[call]))
            return None
        if kind == "message_delta":
            stop = (payload.get("delta") or {}).get("stop_reason")
            usage = _usage(payload.get("usage"))
            usage["prompt_tokens"] = usage["prompt_tokens"] or self.input_tokens
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            return self._chunk(finish=STOP_TO_FINISH.get(str(stop), "stop"), usage=usage)
        if kind == "message_stop":
            self.finished = True
            return None
        if kind == "error" or event.event == "error":
            raise provider_error(self.provider, payload)
        return None
