"""AWS Bedrock's Converse API (``/converse`` and the event-stream ``/converse-stream``).

Requests are signed with SigV4 (service ``bedrock``); the stream is AWS's binary event stream.

Example:
    >>> chat = ChatCompletionRequest(model="m", max_tokens=32, messages=[
    ...     {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    >>> body = to_converse(chat)
    >>> body["system"], body["messages"], body["inferenceConfig"]
    ([{'text': 'Be brief.'}], [{'role': 'user', 'content': [{'text': 'Hi'}]}], {'maxTokens': 32})
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import orjson

from genai_factory.gateway.providers.aws import EventStreamDecoder, EventStreamError, sign_v4
from genai_factory.gateway.providers.base import HTTPProvider, arguments_object, malformed
from genai_factory.shared.errors import BadRequest, ProviderError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    NamedToolChoice,
    ToolCallDelta,
    new_id,
)

__all__ = ["BedrockConverseProvider", "from_converse", "to_converse"]

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
_DATA_URL = re.compile(r"^data:image/(?P<format>\w+);base64,(?P<data>.+)$", re.DOTALL)
_EXCEPTION_STATUS = {
    "throttlingException": 429,
    "serviceUnavailableException": 503,
    "internalServerException": 500,
    "modelStreamErrorException": 424,
    "validationException": 400,
    "modelTimeoutException": 408,
}


def _content(message: ChatMessage) -> list[dict[str, Any]]:
    if isinstance(message.content, str):
        return [{"text": message.content}] if message.content else []
    blocks: list[dict[str, Any]] = []
    for part in message.content or ():
        if part.type == "text":
            blocks.append({"text": part.text or ""})
        elif part.type == "image_url" and part.image_url is not None:
            match = _DATA_URL.match(part.image_url.url)
            if match is None:
                raise BadRequest("Bedrock takes images as base64 data URLs", param="messages")
            blocks.append(
                {"image": {"format": match["format"], "source": {"bytes": match["data"]}}}
            )
        else:
            raise BadRequest(f"Bedrock does not take '{part.type}' content", param="messages")
    return blocks


def to_converse(request: ChatCompletionRequest) -> dict[str, Any]:
    """The internal chat request as a Converse request body."""
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for message in request.messages:
        if message.role in ("system", "developer"):
            system.append({"text": message.text()})
        elif message.role == "user":
            add("user", _content(message))
        elif message.role == "assistant":
            blocks = _content(message)
            for call in message.tool_calls or ():
                blocks.append(
                    {
                        "toolUse": {
                            "toolUseId": call.id,
                            "name": call.function.name,
                            "input": arguments_object(call.function.arguments),
                        }
                    }
                )
            add("assistant", blocks)
        else:
            result = {
                "toolUseId": message.tool_call_id or "",
                "content": [{"text": message.text()}],
            }
            add("user", [{"toolResult": result}])
    response_format = request.response_format
    if response_format is not None and response_format.type != "text":
        system.append({"text": "Answer with one JSON object and nothing else."})
    body: dict[str, Any] = {"messages": messages}
    if system:
        body["system"] = system
    config: dict[str, Any] = {}
    if request.output_limit:
        config["maxTokens"] = request.output_limit
    if request.temperature is not None:
        config["temperature"] = min(1.0, request.temperature)
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop is not None:
        config["stopSequences"] = [request.stop] if isinstance(request.stop, str) else request.stop
    if config:
        body["inferenceConfig"] = config
    if request.tools and request.tool_choice != "none":
        tool_config: dict[str, Any] = {
            "tools": [
                {
                    "toolSpec": {
                        "name": tool.function.name,
                        "description": tool.function.description or tool.function.name,
                        "inputSchema": {"json": tool.function.parameters or {"type": "object"}},
                    }
                }
                for tool in request.tools
            ]
        }
        if request.tool_choice == "required":
            tool_config["toolChoice"] = {"any": {}}
        elif isinstance(request.tool_choice, NamedToolChoice):
            tool_config["toolChoice"] = {"tool": {"name": request.tool_choice.function["name"]}}
        elif request.tool_choice == "auto":
            tool_config["toolChoice"] = {"auto": {}}
        body["toolConfig"] = tool_config
    return body


def from_converse(data: dict[str, Any], model: str) -> ChatCompletionResponse:
    """A Converse response as the internal chat response."""
    message = ((data.get("output") or {}).get("message")) or {}
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if "text" in block:
            texts.append(str(block["text"]))
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(
                {
                    "id": str(use.get("toolUseId")),
                    "type": "function",
                    "function": {
                        "name": str(use.get("name")),
                        "arguments": orjson.dumps(use.get("input") or {}).decode(),
                    },
                }
            )
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        answer["tool_calls"] = calls
    elif answer["content"] is None:
        answer["content"] = ""
    usage = data.get("usage") or {}
    return ChatCompletionResponse.model_validate(
        {
            "id": new_id("chatcmpl"),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": answer,
                    "finish_reason": STOP_TO_FINISH.get(str(data.get("stopReason")), "stop"),
                }
            ],
            "usage": {
                "prompt_tokens": int(usage.get("inputTokens") or 0),
                "completion_tokens": int(usage.get("outputTokens") or 0),
            },
        }
    )


class BedrockConverseProvider(HTTPProvider):
    """Bedrock models through the Converse API.

    Args:
        model: the Bedrock model id (e.g. ``anthropic.claude-3-haiku-20240307-v1:0``).
        region: the AWS region.
        access_key_id / secret_access_key / session_token: AWS credentials.
        base_url: overrides ``https://bedrock-runtime.{region}.amazonaws.com`` (tests, VPC).
    """

    provider_name = "bedrock"

    def __init__(
        self,
        model: str,
        *,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        session_token: str | None = None,
        base_url: str | None = None,
        connect_timeout_s: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        super().__init__(connect_timeout_s=connect_timeout_s, max_connections=max_connections)
        self.model = model
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.session_token = session_token
        self.base_url = (base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
        model_path = f"{self.base_url}/model/{quote(model, safe='')}"
        self.url = f"{model_path}/converse"
        self.stream_url = f"{model_path}/converse-stream"

    def to_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "session_token": self.session_token,
            "base_url": self.base_url,
        }

    def _signed(self, url: str, body: bytes) -> dict[str, str]:
        headers = sign_v4(
            "POST",
            url,
            {"content-type": "application/json", "accept": "application/json"},
            body,
            service="bedrock",
            region=self.region,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            session_token=self.session_token,
        )
        headers.pop("host")  # the client sends the same Host itself
        return headers

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        body = orjson.dumps(to_converse(request))
        data, _ = await self._post(self.url, body, self._signed(self.url, body))
        if not isinstance(data, dict):
            raise malformed(self.provider_name, "not an object")
        return from_converse(data, self.model)

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        body = orjson.dumps(to_converse(request))
        decoder = EventStreamDecoder()
        translate = _StreamTranslator(self.model)
        try:
            async for piece in self._post_bytes(
                self.stream_url, body, self._signed(self.stream_url, body)
            ):
                for message in decoder.feed(piece):
                    chunk = translate.event(message.headers, message.payload)
                    if chunk is not None:
                        yield chunk
        except EventStreamError as exc:
            raise malformed(self.provider_name, str(exc)) from None
        if not translate.stopped or decoder.pending:
            raise ProviderError(
                f"{self.provider_name}: stream ended before messageStop",
                retryable=True,
                provider=self.provider_name,
                code="stream_truncated",
            )


class _StreamTranslator:
    """Converse stream events -> internal chunks."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = new_id("chatcmpl")
        self.tools: dict[int, int] = {}
        self.stopped = False

    def _chunk(self, delta: ChunkDelta | None = None, **fields: Any) -> ChatCompletionChunk:
        choices = [] if fields.get("usage") else [ChunkChoice(delta=delta or ChunkDelta())]
        if "finish" in fields:
            choices = [ChunkChoice(delta=ChunkDelta(), finish_reason=fields.pop("finish"))]
        return ChatCompletionChunk(id=self.id, model=self.model, choices=choices, **fields)

    def event(self, headers: dict[str, Any], payload: bytes) -> ChatCompletionChunk | None:
        try:
            data = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            raise malformed("bedrock", "event payload is not JSON") from None
        if headers.get(":message-type") == "exception":
            kind = str(headers.get(":exception-type", "internalServerException"))
            status = _EXCEPTION_STATUS.get(kind, 500)
            raise ProviderError(
                f"bedrock: {data.get('message', kind)}",
                retryable=status in (408, 429, 500, 503),
                upstream_status=status,
                provider="bedrock",
                code=kind,
            )
        event = headers.get(":event-type")
        if event == "messageStart":
            return self._chunk(ChunkDelta(role="assistant", content=""))
        if event == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if use:
                index = len(self.tools)
                self.tools[int(data.get("contentBlockIndex", 0))] = index
                call = ToolCallDelta(
                    index=index,
                    id=str(use.get("toolUseId")),
                    type="function",
                    function={"name": str(use.get("name")), "arguments": ""},
                )
                return self._chunk(ChunkDelta(tool_calls=[call]))
            return None
        if event == "contentBlockDelta":
            delta = data.get("delta") or {}
            if "text" in delta:
                return self._chunk(ChunkDelta(content=str(delta["text"])))
            if "toolUse" in delta:
                index = self.tools.get(int(data.get("contentBlockIndex", 0)), 0)
                arguments = str((delta["toolUse"] or {}).get("input", ""))
                call = ToolCallDelta(index=index, function={"arguments": arguments})
                return self._chunk(ChunkDelta(tool_calls=[call]))
            return None
        if event == "messageStop":
            self.stopped = True
            return self._chunk(finish=STOP_TO_FINISH.get(str(data.get("stopReason")), "stop"))
        if event == "metadata":
            usage = data.get("usage") or {}
            return self._chunk(
                usage={
                    "prompt_tokens": int(usage.get("inputTokens") or 0),
                    "completion_tokens": int(usage.get("outputTokens") or 0),
                }
            )
        return None
