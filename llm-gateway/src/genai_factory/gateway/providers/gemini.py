"""Google Gemini's ``generateContent`` and ``streamGenerateContent`` (SSE) endpoints.

Example:
    >>> chat = ChatCompletionRequest(model="m", messages=[
    ...     {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    >>> body = to_gemini(chat)
    >>> body["systemInstruction"], body["contents"]
    ({'parts': [{'text': 'Be brief.'}]}, [{'role': 'user', 'parts': [{'text': 'Hi'}]}])
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import quote

import orjson

from genai_factory.gateway.providers.base import (
    CONTENT_FILTER,
    HTTPProvider,
    arguments_object,
    malformed,
)
from genai_factory.gateway.sse import iter_sse
from genai_factory.shared.errors import BadRequest, ProviderError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    FinishReason,
    NamedToolChoice,
    ToolCallDelta,
    Usage,
    new_id,
)

__all__ = ["GeminiProvider", "from_gemini", "to_gemini"]

FINISH = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
_DATA_URL = re.compile(r"^data:(?P<type>[\w/+.-]+);base64,(?P<data>.+)$", re.DOTALL)


def _parts(message: ChatMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"text": message.content}] if message.content else []
    parts: list[dict[str, Any]] = []
    for part in message.content or ():
        if part.type == "text":
            parts.append({"text": part.text or ""})
        elif part.type == "image_url" and part.image_url is not None:
            match = _DATA_URL.match(part.image_url.url)
            if match:
                parts.append({"inlineData": {"mimeType": match["type"], "data": match["data"]}})
            else:
                parts.append({"fileData": {"fileUri": part.image_url.url}})
        else:
            raise BadRequest(f"Gemini does not take '{part.type}' content", param="messages")
    return parts


def to_gemini(request: ChatCompletionRequest) -> dict[str, Any]:
    """The internal chat request as a ``generateContent`` body."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for message in request.messages:
        if message.role in ("system", "developer"):
            system.append({"text": message.text()})
        elif message.role == "user":
            add("user", _parts(message))
        elif message.role == "assistant":
            parts = _parts(message)
            for call in message.tool_calls or ():
                call_names[call.id] = call.function.name
                parts.append(
                    {
                        "functionCall": {
                            "name": call.function.name,
                            "args": arguments_object(call.function.arguments),
                        }
                    }
                )
            add("model", parts)
        else:
            name = call_names.get(message.tool_call_id or "", message.name or "tool")
            add(
                "user",
                [{"functionResponse": {"name": name, "response": {"content": message.text()}}}],
            )
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    for source, target in (
        (request.temperature, "temperature"),
        (request.top_p, "topP"),
        (request.output_limit, "maxOutputTokens"),
        (request.seed, "seed"),
    ):
        if source is not None:
            config[target] = source
    if request.n != 1:
        config["candidateCount"] = request.n
    if request.stop is not None:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        config["responseMimeType"] = "application/json"
        schema = response_format.schema_ or (
            response_format.json_schema.schema_ if response_format.json_schema else None
        )
        if schema:
            config["responseJsonSchema"] = schema
    if config:
        body["generationConfig"] = config
    if request.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": tool.function.name,
                        "description": tool.function.description or "",
                        "parametersJsonSchema": tool.function.parameters or {"type": "object"},
                    }
                    for tool in request.tools
                ]
            }
        ]
        mode: dict[str, Any] | None = None
        if request.tool_choice == "none":
            mode = {"mode": "NONE"}
        elif request.tool_choice == "required":
            mode = {"mode": "ANY"}
        elif isinstance(request.tool_choice, NamedToolChoice):
            mode = {"mode": "ANY", "allowedFunctionNames": [request.tool_choice.function["name"]]}
        elif request.tool_choice == "auto":
            mode = {"mode": "AUTO"}
        if mode is not None:
            body["toolConfig"] = {"functionCallingConfig": mode}
    return body


def _blocked(data: dict[str, Any]) -> ProviderError | None:
    feedback = data.get("promptFeedback") or {}
    if feedback.get("blockReason") and not data.get("candidates"):
        return ProviderError(
            f"gemini: the prompt was blocked ({feedback['blockReason']})",
            retryable=False,
            upstream_status=400,
            provider="gemini",
            code=CONTENT_FILTER,
        )
    return None


def _usage(data: dict[str, Any]) -> dict[str, int] | None:
    meta = data.get("usageMetadata")
    if not meta:
        return None
    prompt = int(meta.get("promptTokenCount") or 0)
    completion = int(meta.get("candidatesTokenCount") or 0) + int(
        meta.get("thoughtsTokenCount") or 0
    )
    return {"prompt_tokens": prompt, "completion_tokens": completion}


def _candidate(candidate: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str | None]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if "text" in part and not part.get("thought"):
            texts.append(str(part["text"]))
        elif "functionCall" in part:
            call = part["functionCall"]
            calls.append(
                {
                    "id": str(call.get("id") or new_id("call")),
                    "type": "function",
                    "function": {
                        "name": str(call.get("name")),
                        "arguments": orjson.dumps(call.get("args") or {}).decode(),
                    },
                }
            )
    reason = candidate.get("finishReason")
    finish = None
    if reason:
        finish = "tool_calls" if calls and reason == "STOP" else FINISH.get(str(reason), "stop")
    return "".join(texts), calls, finish


def from_gemini(data: dict[str, Any], model: str) -> ChatCompletionResponse:
    """A ``generateContent`` response as the internal chat response."""
    blocked = _blocked(data)
    if blocked is not None:
        raise blocked
    choices = []
    for index, candidate in enumerate(data.get("candidates") or ()):
        text, calls, finish = _candidate(candidate)
        message: dict[str, Any] = {
            "role": "assistant",
            "content": text if text or not calls else None,
        }
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": candidate.get("index", index),
                "message": message,
                "finish_reason": finish or "stop",
            }
        )
    if not choices:
        raise malformed("gemini", "no candidates")
    return ChatCompletionResponse.model_validate(
        {
            "id": str(data.get("responseId") or new_id("chatcmpl")),
            "model": str(data.get("modelVersion") or model),
            "choices": choices,
            "usage": _usage(data),
        }
    )


class GeminiProvider(HTTPProvider):
    """Gemini models through the Generative Language API.

    Args:
        model: e.g. ``gemini-2.0-flash``.
        api_key: sent as ``x-goog-api-key``.
        base_url: the API root (a test server's address in tests).
        api_version: the path version (``v1beta``).
    """

    provider_name = "gemini"

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        *,
        base_url: str = "https://generativelanguage.googleapis.com",
        api_version: str = "v1beta",
        connect_timeout_s: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        super().__init__(connect_timeout_s=connect_timeout_s, max_connections=max_connections)
        self.model = model
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.api_version = api_version
        root = f"{self.base_url}/{api_version}/models/{quote(model, safe='')}"
        self.url = f"{root}:generateContent"
        self.stream_url = f"{root}:streamGenerateContent?alt=sse"
        self.headers = {"content-type": "application/json"}
        if api_key:
            self.headers["x-goog-api-key"] = api_key

    def to_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "api_key": self.api_key,
            "base_url": self.base_url,
            "api_version": self.api_version,
        }

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        data, _ = await self._post(self.url, orjson.dumps(to_gemini(request)), self.headers)
        if not isinstance(data, dict):
            raise malformed(self.provider_name, "not an object")
        return from_gemini(data, self.model)

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        body = orjson.dumps(to_gemini(request))
        chunk_id = new_id("chatcmpl")
        finished = False
        tool_count = 0
        first = True
        async for event in iter_sse(self._post_lines(self.stream_url, body, self.headers)):
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                raise malformed(self.provider_name, "stream event is not JSON") from None
            if isinstance(data, dict) and "error" in data:
                error = data["error"] or {}
                status = int(error.get("code") or 500)
                raise ProviderError(
                    f"gemini: {error.get('message', 'stream error')}",
                    retryable=status in (429, 500, 503, 504),
                    upstream_status=status,
                    provider=self.provider_name,
                )
            blocked = _blocked(data)
            if blocked is not None:
                raise blocked
            choices = []
            for index, candidate in enumerate(data.get("candidates") or ()):
                text, calls, finish = _candidate(candidate)
                deltas = []
                for call in calls:
                    deltas.append(
                        ToolCallDelta(
                            index=tool_count,
                            id=call["id"],
                            type="function",
                            function=call["function"],
                        )
                    )
                    tool_count += 1
                delta = ChunkDelta(
                    role="assistant" if first else None,
                    content=text or None,
                    tool_calls=deltas or None,
                )
                choices.append(
                    ChunkChoice(
                        index=candidate.get("index", index),
                        delta=delta,
                        finish_reason=cast(FinishReason | None, finish),
                    )
                )
                finished = finished or finish is not None
            first = False
            usage = _usage(data)
            yield ChatCompletionChunk(
                id=chunk_id,
                model=str(data.get("modelVersion") or self.model),
                choices=choices,
                usage=Usage.model_validate(usage) if finished and usage else None,
            )
        if not finished:
            raise ProviderError(
                f"{self.provider_name}: stream ended without a finishReason",
                retryable=True,
                provider=self.provider_name,
                code="stream_truncated",
            )
