"""Test servers for hosted providers, each checking requests against its documented wire format.

* :class:`AnthropicUpstream`: ``POST /v1/messages`` (``x-api-key``, ``anthropic-version``), JSON and
  SSE events, Anthropic's error shape and types (``overloaded_error`` is 529).
* :class:`BedrockUpstream`: ``/model/{id}/converse`` and ``/converse-stream``; verifies the SigV4
  signature; answers in the binary event stream; errors carry ``x-amzn-errortype``.
* :class:`GeminiUpstream`: ``/v1beta/models/{m}:generateContent`` and
  ``:streamGenerateContent?alt=sse`` (``x-goog-api-key``); Google's ``{"error": {code, status}}``.

Each takes the same scripted :class:`~genai_factory.gateway.testing.upstream.Fault` steps as the
OpenAI-compatible one, rendered in its own provider's format, and records what it received.

Example:
    >>> AnthropicUpstream().error_for(529, "busy")[1]["error"]["type"]
    'overloaded_error'
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import orjson

from genai_factory.gateway.providers.aws import encode_event, encode_message, verify_v4
from genai_factory.gateway.testing.http import HTTPRequest, MiniHTTPServer, Reply
from genai_factory.gateway.testing.upstream import Fault

__all__ = ["AnthropicUpstream", "BedrockUpstream", "GeminiUpstream"]

_JSON = {"content-type": "application/json"}
_CITY_ARGS = {"city": "Paris"}


class Invalid(Exception):
    """The request breaks the provider's wire format: answer ``status`` with ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _require(condition: bool, message: str, status: int = 400) -> None:
    if not condition:
        raise Invalid(status, message)


class _Hosted:
    name = "hosted"

    def __init__(self, text: str | None = None) -> None:
        self.text = text or f"Hello from {self.name}"
        self.default = Fault.ok()
        self.script: deque[Fault] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._server = MiniHTTPServer(self._handle)

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def served(self) -> int:
        return len(self.requests)

    def push(self, *faults: Fault) -> _Hosted:
        self.script.extend(faults)
        return self

    async def start(self) -> _Hosted:
        await self._server.start()
        return self

    async def stop(self) -> None:
        await self._server.stop()

    async def __aenter__(self) -> Any:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def error_for(self, status: int, message: str) -> tuple[dict[str, str], dict[str, Any]]:
        raise NotImplementedError

    async def _error(
        self, reply: Reply, status: int, message: str, headers: Mapping[str, str] = {}
    ) -> None:
        extra, body = self.error_for(status, message)
        await reply.send(status, orjson.dumps(body), {**_JSON, **extra, **headers})

    async def _handle(self, request: HTTPRequest, reply: Reply) -> None:
        try:
            body = orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            await self._error(reply, 400, "malformed JSON body")
            return
        try:
            _require(isinstance(body, dict), "the body must be a JSON object")
            assert isinstance(body, dict)
            stream = self.check(request, body)
        except Invalid as exc:
            await self._error(reply, exc.status, exc.message)
            return
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        fault = self.script.popleft() if self.script else self.default
        if fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault.kind == "reset":
            reply.reset()
        elif fault.kind in ("close", "hang"):
            reply.close()
        elif fault.kind == "status":
            message = "upstream error"
            if isinstance(fault.body, dict):
                message = str((fault.body.get("error") or {}).get("message", message))
            await self._error(reply, fault.status, message, fault.headers)
        elif stream:
            if fault.first_delay_s:
                await asyncio.sleep(fault.first_delay_s)
            await self.stream(body, fault, reply)
        else:
            await reply.send(200, orjson.dumps(self.answer(body, fault)), _JSON)

    def words(self, fault: Fault) -> list[str]:
        text = fault.text if fault.text is not None else self.text
        words = [w + " " for w in text.split(" ")]
        words[-1] = words[-1].rstrip()
        return words

    def check(self, request: HTTPRequest, body: dict[str, Any]) -> bool:
        """Validate the request; True when it asks for a stream."""
        raise NotImplementedError

    def answer(self, body: dict[str, Any], fault: Fault) -> dict[str, Any]:
        raise NotImplementedError

    async def stream(self, body: dict[str, Any], fault: Fault, reply: Reply) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------------- Anthropic

_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_BLOCK_TYPES = {"text", "image", "tool_use", "tool_result", "document", "thinking"}


class AnthropicUpstream(_Hosted):
    """Speaks Anthropic's Messages API."""

    name = "anthropic"

    def __init__(self, api_key: str = "sk-ant-test", text: str | None = None) -> None:
        super().__init__(text)
        self.api_key = api_key

    def error_for(self, status: int, message: str) -> tuple[dict[str, str], dict[str, Any]]:
        kind = _ANTHROPIC_ERRORS.get(status, "api_error")
        return {}, {"type": "error", "error": {"type": kind, "message": message}}

    def check(self, request: HTTPRequest, body: dict[str, Any]) -> bool:
        _require(request.method == "POST" and request.path == "/v1/messages", "no such path", 404)
        _require(request.headers.get("x-api-key") == self.api_key, "invalid x-api-key", 401)
        _require("anthropic-version" in request.headers, "anthropic-version header is required")
        _require(isinstance(body.get("model"), str), "model: field required")
        max_tokens = body.get("max_tokens")
        _require(isinstance(max_tokens, int) and max_tokens >= 1, "max_tokens: must be >= 1")
        messages = body.get("messages")
        _require(isinstance(messages, list) and bool(messages), "messages: at least one message")
        assert isinstance(messages, list)
        for i, message in enumerate(messages):
            _require(message.get("role") in ("user", "assistant"), f"messages.{i}.role: invalid")
            content = message.get("content")
            if isinstance(content, list):
                for block in content:
                    _require(
                        block.get("type") in _BLOCK_TYPES,
                        f"messages.{i}.content: unknown block type {block.get('type')!r}",
                    )
            else:
                _require(isinstance(content, str), f"messages.{i}.content: str or blocks")
        system = body.get("system")
        _require(system is None or isinstance(system, str | list), "system: str or text blocks")
        temperature = body.get("temperature")
        _require(temperature is None or 0 <= temperature <= 1, "temperature: 0 to 1")
        for tool in body.get("tools") or ():
            _require(
                isinstance(tool.get("name"), str) and isinstance(tool.get("input_schema"), dict),
                "tools: each needs name and input_schema",
            )
        choice = body.get("tool_choice")
        if choice is not None:
            _require(choice.get("type") in ("auto", "any", "tool", "none"), "tool_choice.type")
        return bool(body.get("stream"))

    @staticmethod
    def _tool(body: dict[str, Any]) -> str | None:
        choice = body.get("tool_choice") or {}
        tools = body.get("tools") or []
        if not tools or choice.get("type") not in ("any", "tool"):
            return None
        return str(choice.get("name") or tools[0]["name"])

    def answer(self, body: dict[str, Any], fault: Fault) -> dict[str, Any]:
        tool = self._tool(body)
        content: list[dict[str, Any]]
        if tool:
            content = [{"type": "tool_use", "id": "toolu_01", "name": tool, "input": _CITY_ARGS}]
        else:
            content = [{"type": "text", "text": "".join(self.words(fault))}]
        return {
            "id": "msg_" + uuid.uuid4().hex[:24],
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": "tool_use" if tool else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": len(self.words(fault))},
        }

    async def stream(self, body: dict[str, Any], fault: Fault, reply: Reply) -> None:
        await reply.start(200, {"content-type": "text/event-stream"})

        async def send(name: str, payload: dict[str, Any]) -> None:
            await reply.write(f"event: {name}\ndata: ".encode() + orjson.dumps(payload) + b"\n\n")

        message = self.answer(body, fault) | {"content": [], "stop_reason": None}
        message["usage"] = {"input_tokens": 12, "output_tokens": 1}
        await send("message_start", {"type": "message_start", "message": message})
        tool = self._tool(body)
        if tool:
            block = {"type": "tool_use", "id": "toolu_01", "name": tool, "input": {}}
            await send(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
            for part in ('{"city": ', '"Paris"}'):
                delta = {"type": "input_json_delta", "partial_json": part}
                await send(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
        else:
            block = {"type": "text", "text": ""}
            await send(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            )
            await send("ping", {"type": "ping"})
            for number, word in enumerate(self.words(fault)):
                if fault.cut_after is not None and number >= fault.cut_after:
                    reply.reset()
                    return
                if fault.malformed_at == number:
                    await reply.write(b"event: content_block_delta\ndata: {oops\n\n")
                    continue
                delta = {"type": "text_delta", "text": word}
                await send(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
        await send("content_block_stop", {"type": "content_block_stop", "index": 0})
        if fault.finish:
            stop = "tool_use" if tool else "end_turn"
            await send(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": len(self.words(fault))},
                },
            )
        if fault.done:
            await send("message_stop", {"type": "message_stop"})
        await reply.end()


# ------------------------------------------------------------------------------------- Bedrock

_BEDROCK_ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}
_BEDROCK_BLOCKS = {"text", "image", "toolUse", "toolResult", "document"}
_INFERENCE_KEYS = {"maxTokens", "temperature", "topP", "stopSequences"}


class BedrockUpstream(_Hosted):
    """Speaks Bedrock's Converse API and checks every request's SigV4 signature."""

    name = "bedrock"

    def __init__(
        self,
        access_key_id: str = "AKIDTEST",
        secret_access_key: str = "test-secret",  # noqa: S107 - a test server's credential
        region: str = "us-east-1",
        text: str | None = None,
    ) -> None:
        super().__init__(text)
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self.models: list[str] = []

    def error_for(self, status: int, message: str) -> tuple[dict[str, str], dict[str, Any]]:
        kind = _BEDROCK_ERRORS.get(status, "InternalServerException")
        return {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/"}, {
            "message": message
        }

    def check(self, request: HTTPRequest, body: dict[str, Any]) -> bool:
        parts = request.path.split("/")
        _require(
            request.method == "POST" and len(parts) == 4 and parts[1] == "model",
            "unknown operation",
            404,
        )
        _require(parts[3] in ("converse", "converse-stream"), "unknown operation", 404)
        problem = verify_v4(
            request.method,
            f"http://{request.headers.get('host', '')}{request.target}",
            request.headers,
            request.body,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            region=self.region,
            service="bedrock",
        )
        _require(
            problem is None, f"The request signature we calculated does not match: {problem}", 403
        )
        self.models.append(unquote(parts[2]))
        messages = body.get("messages")
        _require(isinstance(messages, list) and bool(messages), "messages: at least one")
        assert isinstance(messages, list)
        for i, message in enumerate(messages):
            _require(message.get("role") in ("user", "assistant"), f"messages.{i}.role")
            content = message.get("content")
            _require(isinstance(content, list) and bool(content), f"messages.{i}.content: blocks")
            for block in content:
                _require(
                    len(block) == 1 and next(iter(block)) in _BEDROCK_BLOCKS,
                    f"messages.{i}.content: a block holds exactly one known member",
                )
        for block in body.get("system") or ():
            _require(set(block) == {"text"}, "system: text blocks")
        config = body.get("inferenceConfig") or {}
        _require(
            set(config) <= _INFERENCE_KEYS,
            f"inferenceConfig: unknown {set(config) - _INFERENCE_KEYS}",
        )
        for tool in (body.get("toolConfig") or {}).get("tools") or ():
            spec = tool.get("toolSpec") or {}
            _require(
                isinstance(spec.get("name"), str) and "json" in (spec.get("inputSchema") or {}),
                "toolSpec needs name and inputSchema.json",
            )
        return parts[3] == "converse-stream"

    @staticmethod
    def _tool(body: dict[str, Any]) -> str | None:
        config = body.get("toolConfig") or {}
        choice = config.get("toolChoice") or {}
        if not config.get("tools") or not ("any" in choice or "tool" in choice):
            return None
        return str((choice.get("tool") or {}).get("name") or config["tools"][0]["toolSpec"]["name"])

    def answer(self, body: dict[str, Any], fault: Fault) -> dict[str, Any]:
        tool = self._tool(body)
        content: list[dict[str, Any]]
        if tool:
            content = [{"toolUse": {"toolUseId": "tooluse_1", "name": tool, "input": _CITY_ARGS}}]
        else:
            content = [{"text": "".join(self.words(fault))}]
        words = len(self.words(fault))
        return {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": "tool_use" if tool else "end_turn",
            "usage": {"inputTokens": 9, "outputTokens": words, "totalTokens": 9 + words},
            "metrics": {"latencyMs": 5},
        }

    async def stream(self, body: dict[str, Any], fault: Fault, reply: Reply) -> None:
        await reply.start(200, {"content-type": "application/vnd.amazon.eventstream"})

        async def send(kind: str, payload: dict[str, Any]) -> None:
            await reply.write(encode_event(kind, orjson.dumps(payload)))

        await send("messageStart", {"role": "assistant"})
        tool = self._tool(body)
        if tool:
            start = {"toolUse": {"toolUseId": "tooluse_1", "name": tool}}
            await send("contentBlockStart", {"start": start, "contentBlockIndex": 0})
            delta = {"toolUse": {"input": orjson.dumps(_CITY_ARGS).decode()}}
            await send("contentBlockDelta", {"delta": delta, "contentBlockIndex": 0})
        else:
            for number, word in enumerate(self.words(fault)):
                if fault.cut_after is not None and number >= fault.cut_after:
                    reply.reset()
                    return
                if fault.malformed_at == number:
                    frame = bytearray(encode_event("contentBlockDelta", b'{"delta": {}}'))
                    frame[-1] ^= 0xFF  # a corrupt message CRC
                    await reply.write(bytes(frame))
                    continue
                await send("contentBlockDelta", {"delta": {"text": word}, "contentBlockIndex": 0})
        await send("contentBlockStop", {"contentBlockIndex": 0})
        if fault.status >= 400 and fault.kind == "ok":  # an in-stream exception
            await reply.write(
                encode_message(
                    {":message-type": "exception", ":exception-type": "throttlingException"},
                    b'{"message": "slow down"}',
                )
            )
        elif fault.done:
            await send("messageStop", {"stopReason": "tool_use" if tool else "end_turn"})
            words = len(self.words(fault))
            await send(
                "metadata",
                {"usage": {"inputTokens": 9, "outputTokens": words}, "metrics": {"latencyMs": 5}},
            )
        await reply.end()


# -------------------------------------------------------------------------------------- Gemini

_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_GEMINI_PARTS = {"text", "inlineData", "fileData", "functionCall", "functionResponse"}
_GENERATION_KEYS = {
    "temperature",
    "topP",
    "topK",
    "maxOutputTokens",
    "stopSequences",
    "candidateCount",
    "seed",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
}


class GeminiUpstream(_Hosted):
    """Speaks the Gemini API's generateContent and streamGenerateContent (SSE)."""

    name = "gemini"

    def __init__(self, api_key: str = "gemini-test-key", text: str | None = None) -> None:
        super().__init__(text)
        self.api_key = api_key

    def error_for(self, status: int, message: str) -> tuple[dict[str, str], dict[str, Any]]:
        code = _GEMINI_STATUS.get(status, "INTERNAL")
        return {}, {"error": {"code": status, "message": message, "status": code}}

    def check(self, request: HTTPRequest, body: dict[str, Any]) -> bool:
        path = request.path
        _require(request.method == "POST" and path.startswith("/v1beta/models/"), "not found", 404)
        model, _, method = path.removeprefix("/v1beta/models/").partition(":")
        _require(
            bool(model) and method in ("generateContent", "streamGenerateContent"), "not found", 404
        )
        key = request.headers.get("x-goog-api-key")
        _require(key is not None, "Method doesn't allow unregistered callers", 403)
        _require(key == self.api_key, "API key not valid. Please pass a valid API key.", 400)
        if method == "streamGenerateContent":
            _require(request.query.get("alt") == ["sse"], "this server streams only with alt=sse")
        contents = body.get("contents")
        _require(isinstance(contents, list) and bool(contents), "contents: at least one")
        assert isinstance(contents, list)
        for i, content in enumerate(contents):
            _require(content.get("role") in ("user", "model"), f"contents[{i}].role: user or model")
            parts = content.get("parts")
            _require(isinstance(parts, list) and bool(parts), f"contents[{i}].parts: at least one")
            for part in parts:
                _require(
                    len(set(part) & _GEMINI_PARTS) == 1, f"contents[{i}].parts: one data field"
                )
        config = body.get("generationConfig") or {}
        _require(
            set(config) <= _GENERATION_KEYS,
            f"generationConfig: unknown {set(config) - _GENERATION_KEYS}",
        )
        for tool in body.get("tools") or ():
            for declaration in tool.get("functionDeclarations") or ():
                _require(isinstance(declaration.get("name"), str), "functionDeclarations: name")
        return method == "streamGenerateContent"

    @staticmethod
    def _tool(body: dict[str, Any]) -> str | None:
        mode = ((body.get("toolConfig") or {}).get("functionCallingConfig")) or {}
        tools = body.get("tools") or []
        if not tools or mode.get("mode") != "ANY":
            return None
        allowed = mode.get("allowedFunctionNames") or [tools[0]["functionDeclarations"][0]["name"]]
        return str(allowed[0])

    def _usage(self, fault: Fault) -> dict[str, int]:
        words = len(self.words(fault))
        return {"promptTokenCount": 7, "candidatesTokenCount": words, "totalTokenCount": 7 + words}

    def answer(self, body: dict[str, Any], fault: Fault) -> dict[str, Any]:
        if fault.finish_reason == "content_filter":
            return {
                "promptFeedback": {"blockReason": "SAFETY"},
                "usageMetadata": self._usage(fault),
            }
        tool = self._tool(body)
        parts: list[dict[str, Any]]
        if tool:
            parts = [{"functionCall": {"name": tool, "args": _CITY_ARGS}}]
        else:
            parts = [{"text": "".join(self.words(fault))}]
        return {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "usageMetadata": self._usage(fault),
            "modelVersion": "gemini-test-001",
        }

    async def stream(self, body: dict[str, Any], fault: Fault, reply: Reply) -> None:
        await reply.start(200, {"content-type": "text/event-stream"})

        async def send(payload: dict[str, Any]) -> None:
            await reply.write(b"data: " + orjson.dumps(payload) + b"\r\n\r\n")

        tool = self._tool(body)
        if tool:
            await send(self.answer(body, fault))
            await reply.end()
            return
        words = self.words(fault)
        for number, word in enumerate(words):
            if fault.cut_after is not None and number >= fault.cut_after:
                reply.reset()
                return
            if fault.malformed_at == number:
                await reply.write(b"data: {oops\r\n\r\n")
                continue
            last = number == len(words) - 1 and fault.finish
            candidate: dict[str, Any] = {
                "content": {"role": "model", "parts": [{"text": word}]},
                "index": 0,
            }
            payload: dict[str, Any] = {"candidates": [candidate], "modelVersion": "gemini-test-001"}
            if last:
                candidate["finishReason"] = "STOP"
                payload["usageMetadata"] = self._usage(fault)
            await send(payload)
        await reply.end()
