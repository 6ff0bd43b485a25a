"""What every provider adapter shares: the contract, error classification and one pooled HTTP client.

A provider is a small adapter: it takes the internal (OpenAI-shaped) request, speaks its upstream's
wire format and returns a response or a stream of chunks. Every failure is a
:class:`~genai_factory.shared.errors.ProviderError` that says whether retrying can help
(``retryable``), what the upstream answered (``upstream_status``), how long it asked us to wait
(``retry_after``) and, for failures a fallback can fix, a ``code`` (``context_length_exceeded``,
``content_filter``).

Example:
    >>> err = classify_error("openai", 429, b'{"error": {"message": "slow down"}}', {"retry-after": "2"})
    >>> err.retryable, err.upstream_status, err.retry_after, err.message
    (True, 429, 2.0, 'openai: slow down')
    >>> classify_error("openai", 400, b'{"error": {"message": "maximum context length is 8192"}}', {}).code
    'context_length_exceeded'
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import orjson

from genai_factory.shared.errors import ProviderError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
)

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "CONTENT_FILTER",
    "CONTEXT_LENGTH",
    "EmbeddingProvider",
    "HTTPProvider",
    "Provider",
    "TextCompletionProvider",
    "TextStreamProvider",
    "Timeouts",
    "UpstreamTimeout",
    "classify_error",
    "parse_retry_after",
]

CONTEXT_LENGTH = "context_length_exceeded"
CONTENT_FILTER = "content_filter"

_CONTEXT_PATTERN = re.compile(
    r"context[ _-]?(length|window)|maximum context|too many tokens|prompt is too long|"
    r"input is too long|exceeds? the (model'?s? )?(maximum|max)|requested tokens .* exceed",
    re.IGNORECASE,
)
_FILTER_PATTERN = re.compile(
    r"content[ _-]?(filter|policy|management)|responsible ai|safety (system|filter)|"
    r"blocked by (the )?(safety|content)",
    re.IGNORECASE,
)
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})


@runtime_checkable
class Provider(Protocol):
    """A chat model behind an upstream API (the ChatModel contract plus closing its client)."""

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse: ...

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse: ...


@runtime_checkable
class TextCompletionProvider(Protocol):
    async def text_complete(self, request: CompletionRequest) -> dict[str, Any]: ...


@runtime_checkable
class TextStreamProvider(Protocol):
    """Streams legacy completions natively; each text piece comes as a chunk's ``delta.content``.

    Carrying text completions in chat chunks lets streamed completions share the chat stream's
    failover, screening and accounting; the API turns them back into ``text_completion`` events.
    """

    def text_stream(self, request: CompletionRequest) -> AsyncIterator[ChatCompletionChunk]: ...


@dataclass(frozen=True, slots=True)
class Timeouts:
    """How long to wait: to connect, for the first streamed chunk, between chunks, in total."""

    connect_s: float = 5.0
    ttft_s: float = 30.0
    idle_s: float = 30.0
    total_s: float = 600.0


class UpstreamTimeout(ProviderError):
    """The upstream did not answer in time: the gateway answers 504."""

    status = 504

    @property
    def http_status(self) -> int:
        return 504


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``retry-after`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_message(body: bytes) -> tuple[str, str | None]:
    """The provider's own message and code from any of the error shapes we speak."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace").strip()
        return (text[:500] or "no error body"), None
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("Message") or data.get("message")
            code = error.get("code") or error.get("type") or error.get("status")
            return str(message or data)[:2000], (str(code) if code is not None else None)
        if isinstance(error, str):
            return error[:2000], None
    return str(data)[:2000], None


def classify_error(
    provider: str, status: int, body: bytes, headers: Mapping[str, str]
) -> ProviderError:
    """The ProviderError an upstream's HTTP error answer means (message and status kept)."""
    message, upstream_code = _error_message(body)
    code: str | None = None
    if upstream_code in (CONTEXT_LENGTH, "string_above_max_length") or (
        status in (400, 413, 422) and _CONTEXT_PATTERN.search(message)
    ):
        code = CONTEXT_LENGTH
    elif upstream_code in (CONTENT_FILTER, "content_policy_violation") or (
        status in (400, 403) and _FILTER_PATTERN.search(message)
    ):
        code = CONTENT_FILTER
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    return ProviderError(
        f"{provider}: {message}",
        retryable=retryable,
        upstream_status=status,
        provider=provider,
        retry_after=parse_retry_after(headers),
        code=code or upstream_code,
    )


def connection_error(provider: str, exc: BaseException) -> ProviderError:
    reason = type(exc).__name__
    detail = str(exc).strip()
    return ProviderError(
        f"{provider}: connection to upstream failed ({reason}{': ' + detail if detail else ''})",
        retryable=True,
        provider=provider,
        code="upstream_connection",
    )


def arguments_object(arguments: str) -> dict[str, Any]:
    """Tool-call arguments (a JSON string) as the JSON object Anthropic, Bedrock and Gemini want.

    A model may emit arguments that are not JSON or not an object; they are kept rather than
    dropped, so the upstream sees what the model said.
    """
    try:
        value = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"value": value}


def malformed(provider: str, what: str) -> ProviderError:
    return ProviderError(
        f"{provider}: malformed upstream answer ({what})",
        retryable=True,
        provider=provider,
        code="malformed_response",
    )


def _url_type() -> Any:
    from yarl import URL

    return URL


def aiohttp_module() -> ModuleType:
    """aiohttp, imported on first use: its import builds TLS contexts (~0.2 s of start-up).

    The app's lifespan warms it up in a worker thread right after start, so the first request
    does not pay for it either.
    """
    import aiohttp

    return aiohttp


class HTTPProvider:
    """A provider over HTTP with one pooled ``aiohttp`` session, opened on first use.

    URLs are sent exactly as built (already percent-encoded): SigV4 signs the encoded path.

    Sessions bind to the event loop that opens them; :meth:`aclose` releases the pool. The connect
    timeout lives here; TTFT, idle and total timeouts wrap every call one level up (the
    deployment), so they apply the same way to every provider.
    """

    provider_name: str = "http"

    def __init__(self, *, connect_timeout_s: float = 5.0, max_connections: int = 100) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            aiohttp = aiohttp_module()
            connector = aiohttp.TCPConnector(
                limit=self.max_connections, ttl_dns_cache=300, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=self.connect_timeout_s, sock_connect=self.connect_timeout_s
                ),
                read_bufsize=2**20,
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def _post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[Any, Mapping[str, str]]:
        """POST ``body`` and return the decoded JSON answer and its headers; errors classified."""
        aiohttp, url_type = aiohttp_module(), _url_type()
        try:
            async with self._client().post(
                url_type(url, encoded=True), data=body, headers=headers
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise classify_error(self.provider_name, response.status, raw, response.headers)
                answer_headers = response.headers
        except aiohttp.ClientError as exc:
            raise connection_error(self.provider_name, exc) from None
        try:
            return orjson.loads(raw), answer_headers
        except orjson.JSONDecodeError:
            raise malformed(self.provider_name, "not JSON") from None

    async def _post_lines(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[bytes]:
        """POST ``body`` and yield the streamed answer line by line; errors classified."""
        aiohttp, url_type = aiohttp_module(), _url_type()
        try:
            async with self._client().post(
                url_type(url, encoded=True), data=body, headers=headers
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise classify_error(self.provider_name, response.status, raw, response.headers)
                async for line in response.content:
                    yield line
        except aiohttp.ClientError as exc:
            raise connection_error(self.provider_name, exc) from None
        except ValueError as exc:  # aiohttp: a line longer than the read buffer
            raise malformed(self.provider_name, str(exc)) from None

    async def _post_bytes(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> AsyncIterator[bytes]:
        """POST ``body`` and yield the raw streamed answer in whatever pieces arrive."""
        aiohttp, url_type = aiohttp_module(), _url_type()
        try:
            async with self._client().post(
                url_type(url, encoded=True), data=body, headers=headers
            ) as response:
                if response.status >= 400:
                    raw = await response.read()
                    raise classify_error(self.provider_name, response.status, raw, response.headers)
                async for piece in response.content.iter_any():
                    yield piece
        except aiohttp.ClientError as exc:
            raise connection_error(self.provider_name, exc) from None
