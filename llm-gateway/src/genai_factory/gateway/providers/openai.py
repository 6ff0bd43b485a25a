"""OpenAI-compatible upstreams: OpenAI, Azure OpenAI, vLLM, llama.cpp server, Ollama, Groq, Together...

The request goes out as OpenAI JSON with the deployment's own model name; unknown fields the
caller sent are forwarded untouched. Azure OpenAI differs only in its URL (deployment +
``api-version``) and its ``api-key`` header.

Example:
    >>> provider = OpenAICompatibleProvider("http://127.0.0.1:8080/v1", model="smollm2")
    >>> provider.chat_url
    'http://127.0.0.1:8080/v1/chat/completions'
    >>> azure = OpenAICompatibleProvider("https://res.openai.azure.com", model="gpt-4o",
    ...     api_key="k", azure_deployment="prod-4o", api_version="2024-10-21")
    >>> azure.chat_url
    'https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21'
    >>> azure.headers["api-key"]
    'k'
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import pydantic

from genai_factory.gateway.providers.base import HTTPProvider, classify_error, malformed
from genai_factory.gateway.sse import iter_sse
from genai_factory.shared.errors import ProviderError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    EmbeddingData,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)

__all__ = ["OpenAICompatibleProvider"]


class OpenAICompatibleProvider(HTTPProvider):
    """Any server that speaks OpenAI's chat completions, completions and embeddings.

    Args:
        base_url: the API root, e.g. ``https://api.openai.com/v1`` (Azure: the resource URL).
        model: the model name the upstream knows.
        api_key: sent as ``Authorization: Bearer`` (Azure: ``api-key``).
        azure_deployment: Azure's deployment name; switches on Azure URLs.
        api_version: Azure's ``api-version`` query parameter.
        extra_headers: sent with every request (e.g. ``OpenAI-Organization``).
        connect_timeout_s: TCP/TLS connect timeout.
        max_connections: size of the connection pool.
    """

    provider_name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        azure_deployment: str | None = None,
        api_version: str | None = None,
        extra_headers: dict[str, str] | None = None,
        connect_timeout_s: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        super().__init__(connect_timeout_s=connect_timeout_s, max_connections=max_connections)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.azure_deployment = azure_deployment
        self.api_version = api_version
        self.extra_headers = dict(extra_headers or {})
        self.headers = {"content-type": "application/json", **self.extra_headers}
        if azure_deployment:
            self.provider_name = "azure"
            if api_key:
                self.headers["api-key"] = api_key
        elif api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.chat_url = self._url("chat/completions")
        self.completions_url = self._url("completions")
        self.embeddings_url = self._url("embeddings")

    def to_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"base_url": self.base_url, "model": self.model}
        for name in ("api_key", "azure_deployment", "api_version"):
            if getattr(self, name) is not None:
                params[name] = getattr(self, name)
        if self.extra_headers:
            params["extra_headers"] = self.extra_headers
        return params

    def _url(self, path: str) -> str:
        if self.azure_deployment:
            version = self.api_version or "2024-10-21"
            return (
                f"{self.base_url}/openai/deployments/{self.azure_deployment}/{path}"
                f"?api-version={version}"
            )
        return f"{self.base_url}/{path}"

    def _body(self, request: pydantic.BaseModel, **overrides: Any) -> bytes:
        payload = request.model_dump(exclude_none=True, by_alias=True)
        payload["model"] = self.model
        payload.update(overrides)
        return orjson.dumps(payload)

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        data, _ = await self._post(self.chat_url, self._body(request, stream=False), self.headers)
        try:
            return ChatCompletionResponse.model_validate(data)
        except pydantic.ValidationError as exc:
            raise malformed(self.provider_name, _first_error(exc)) from None

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        return self._events(self.chat_url, self._body(request, stream=True), self._chunk)

    def text_stream(self, request: CompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        """``/completions`` streamed; each ``text_completion`` event as a chat chunk."""
        return self._events(
            self.completions_url, self._body(request, stream=True), self._text_chunk
        )

    async def _events(
        self, url: str, body: bytes, parse: Callable[[str], ChatCompletionChunk]
    ) -> AsyncIterator[ChatCompletionChunk]:
        finished = False
        async for event in iter_sse(self._post_lines(url, body, self.headers)):
            if event.data == "[DONE]":
                return
            chunk = parse(event.data)
            finished = finished or any(c.finish_reason for c in chunk.choices)
            yield chunk
        if not finished:
            raise ProviderError(
                f"{self.provider_name}: stream ended before the answer finished (no [DONE])",
                retryable=True,
                provider=self.provider_name,
                code="stream_truncated",
            )

    def _payload(self, data: str) -> Any:
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise malformed(self.provider_name, "stream chunk is not JSON") from None
        if isinstance(payload, dict) and "error" in payload:
            status = payload["error"].get("code") if isinstance(payload["error"], dict) else None
            raise classify_error(
                self.provider_name, status if isinstance(status, int) else 500, data.encode(), {}
            )
        return payload

    def _chunk(self, data: str) -> ChatCompletionChunk:
        try:
            return ChatCompletionChunk.model_validate(self._payload(data))
        except pydantic.ValidationError as exc:
            raise malformed(self.provider_name, _first_error(exc)) from None

    def _text_chunk(self, data: str) -> ChatCompletionChunk:
        payload = self._payload(data)
        try:
            choices = [
                {
                    "index": choice.get("index", 0),
                    "delta": {"content": choice.get("text")},
                    "finish_reason": choice.get("finish_reason"),
                    "logprobs": choice.get("logprobs"),
                }
                for choice in payload.get("choices") or ()
            ]
            return ChatCompletionChunk.model_validate(
                {
                    "id": payload.get("id") or "",
                    "created": payload.get("created") or 0,
                    "model": payload.get("model") or self.model,
                    "choices": choices,
                    "usage": payload.get("usage"),
                }
            )
        except (AttributeError, TypeError):
            raise malformed(self.provider_name, "completion chunk is not an object") from None
        except pydantic.ValidationError as exc:
            raise malformed(self.provider_name, _first_error(exc)) from None

    async def text_complete(self, request: CompletionRequest) -> dict[str, Any]:
        data, _ = await self._post(
            self.completions_url, self._body(request, stream=False), self.headers
        )
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise malformed(self.provider_name, "completion without choices")
        return data

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        data, _ = await self._post(self.embeddings_url, self._body(request), self.headers)
        try:
            items = data["data"]
            usage = data.get("usage") or {}
            return EmbeddingResponse(
                data=[
                    EmbeddingData(index=item.get("index", i), embedding=item["embedding"])
                    for i, item in enumerate(items)
                ],
                model=str(data.get("model") or self.model),
                usage=Usage.model_validate(usage),
            )
        except (KeyError, TypeError, AttributeError, pydantic.ValidationError):
            raise malformed(self.provider_name, "embedding answer") from None


def _first_error(exc: pydantic.ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}"
