"""Anthropic's native Messages API: tools, JSON instructions and streaming events.

Example:
    >>> provider = AnthropicProvider("claude-3-5-haiku-latest", "sk-ant-x",
    ...                              base_url="http://127.0.0.1:9")
    >>> provider.url, provider.headers["anthropic-version"]
    ('http://127.0.0.1:9/v1/messages', '2023-06-01')
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from genai_factory.gateway import anthropic_format
from genai_factory.gateway.providers.base import HTTPProvider, malformed
from genai_factory.gateway.sse import iter_sse
from genai_factory.shared.errors import ProviderError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)

__all__ = ["AnthropicProvider"]


class AnthropicProvider(HTTPProvider):
    """Claude models through ``POST /v1/messages``.

    Args:
        model: the Anthropic model id.
        api_key: sent as ``x-api-key``.
        base_url: the API root (a test server's address in tests).
        version: the ``anthropic-version`` header.
        default_max_tokens: ``max_tokens`` when the request sets none (Anthropic requires one).
        extra_headers: e.g. ``anthropic-beta``.
    """

    provider_name = "anthropic"

    def __init__(
        self,
        model: str,
        api_key: str | None = None,
        *,
        base_url: str = "https://api.anthropic.com",
        version: str = "2023-06-01",
        default_max_tokens: int = 4096,
        extra_headers: dict[str, str] | None = None,
        connect_timeout_s: float = 5.0,
        max_connections: int = 100,
    ) -> None:
        super().__init__(connect_timeout_s=connect_timeout_s, max_connections=max_connections)
        self.model = model
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.version = version
        self.default_max_tokens = default_max_tokens
        self.extra_headers = dict(extra_headers or {})
        self.url = f"{self.base_url}/v1/messages"
        self.headers = {
            "content-type": "application/json",
            "anthropic-version": version,
            **self.extra_headers,
        }
        if api_key:
            self.headers["x-api-key"] = api_key

    def to_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "api_key": self.api_key,
            "base_url": self.base_url,
            "version": self.version,
            "default_max_tokens": self.default_max_tokens,
            "extra_headers": self.extra_headers,
        }

    def _body(self, request: ChatCompletionRequest, stream: bool) -> bytes:
        body = anthropic_format.chat_to_request(request, self.model, self.default_max_tokens)
        body["stream"] = stream
        return orjson.dumps(body)

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        data, _ = await self._post(self.url, self._body(request, False), self.headers)
        if not isinstance(data, dict) or data.get("type") == "error":
            raise malformed(self.provider_name, "not a message")
        return anthropic_format.response_to_chat(data, self.model)

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        decoder = anthropic_format.StreamDecoder(self.model, self.provider_name)
        lines = self._post_lines(self.url, self._body(request, True), self.headers)
        async for event in iter_sse(lines):
            chunk = decoder.decode(event)
            if chunk is not None:
                yield chunk
            if decoder.finished:
                return
        raise ProviderError(
            f"{self.provider_name}: stream ended before message_stop",
            retryable=True,
            provider=self.provider_name,
            code="stream_truncated",
        )
