"""The long tail of providers through LiteLLM (optional; imported only when a deployment uses it).

``pip install genai-factory-llm-gateway[litellm]``. LiteLLM takes ``provider/model`` names
(``cohere/command-r``, ``mistral/mistral-small-latest``, ``hosted_vllm/NAME`` with a
``base_url``...). It is imported on the first call, in a worker thread (it takes seconds), never
at gateway start-up. Before that import the adapter makes LiteLLM offline-safe unless the
environment already says otherwise: ``LITELLM_LOCAL_MODEL_COST_MAP=True`` (its bundled price map
instead of a download) and ``TIKTOKEN_CACHE_DIR`` pointing at the tokenizer files LiteLLM ships.

Retries belong to the gateway's failover, so LiteLLM's own are switched off (``max_retries=0``);
its exceptions become the same :class:`~genai_factory.shared.errors.ProviderError` every other
adapter raises (status, message, Retry-After, context-length and content-filter codes kept).

Example (needs litellm)::

    provider = LiteLLMProvider("mistral/mistral-small-latest", api_key="...")
    answer = await provider.complete(request)
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pydantic

from genai_factory.gateway.providers.base import (
    CONTENT_FILTER,
    CONTEXT_LENGTH,
    UpstreamTimeout,
    classify_error,
    malformed,
)
from genai_factory.shared.errors import ConfigError, ProviderError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)

__all__ = ["LiteLLMProvider", "offline_environment"]

_NAME = "litellm"


def offline_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables that keep LiteLLM off the network, for those ``environ`` does not set.

    >>> env = offline_environment({"LITELLM_LOCAL_MODEL_COST_MAP": "False"})
    >>> "LITELLM_LOCAL_MODEL_COST_MAP" in env  # an explicit choice is kept
    False
    """
    environ = os.environ if environ is None else environ
    wanted: dict[str, str] = {}
    if "LITELLM_LOCAL_MODEL_COST_MAP" not in environ:
        wanted["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    if "TIKTOKEN_CACHE_DIR" not in environ:
        spec = importlib.util.find_spec("litellm")
        if spec is not None and spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations)))
            wanted["TIKTOKEN_CACHE_DIR"] = str(root / "litellm_core_utils" / "tokenizers")
    return wanted


def _import_litellm() -> Any:
    # the process environment is the only switch LiteLLM reads at import time: set the offline
    # defaults there (never overriding the operator's own), then import
    for name, value in offline_environment().items():
        os.environ.setdefault(name, value)
    module: Any = importlib.import_module("litellm")
    module.suppress_debug_info = True  # no "Give Feedback / Get Help" banners on stdout
    return module


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) and 100 <= status <= 599 else None


def _headers(exc: BaseException) -> Mapping[str, str]:
    """The upstream's response headers (Retry-After), wherever LiteLLM kept them."""
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        getattr(exc, "headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if isinstance(headers, Mapping) and headers:
            return headers
    return {}


def _upstream_error(exc: BaseException, message: str, code: str | None) -> bytes:
    """The upstream's own error object when LiteLLM kept it, else LiteLLM's message."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return orjson.dumps({"error": body if code is None else {**body, "code": code}})
    return orjson.dumps({"error": {"message": message, "code": code}})


def _provider_error(litellm: Any, exc: BaseException) -> ProviderError:
    """LiteLLM's exception as the ProviderError the failover understands."""
    message = str(getattr(exc, "message", None) or exc).strip() or type(exc).__name__
    if isinstance(exc, litellm.Timeout):
        return UpstreamTimeout(
            f"{_NAME}: {message}", retryable=True, provider=_NAME, code="upstream_timeout"
        )
    if isinstance(exc, litellm.APIConnectionError):  # LiteLLM labels these 500; nothing answered
        return ProviderError(
            f"{_NAME}: connection to upstream failed ({message})",
            retryable=True,
            provider=_NAME,
            code="upstream_connection",
        )
    code: str | None = None
    if isinstance(exc, litellm.ContextWindowExceededError):
        code = CONTEXT_LENGTH
    elif isinstance(exc, litellm.ContentPolicyViolationError):
        code = CONTENT_FILTER
    status = _status(exc) or 502
    return classify_error(_NAME, status, _upstream_error(exc, message, code), _headers(exc))


class LiteLLMProvider:
    """Calls ``litellm.acompletion`` for a ``provider/model`` name.

    Args:
        model: LiteLLM's model name.
        api_key: passed through as ``api_key``.
        base_url: passed through as ``api_base``.
    """

    provider_name = _NAME

    def __init__(self, model: str, api_key: str | None = None, base_url: str | None = None) -> None:
        if importlib.util.find_spec("litellm") is None:  # say so at start-up, not per request
            raise ConfigError(
                "provider 'litellm' needs the litellm package "
                "(pip install genai-factory-llm-gateway[litellm])",
                param="deployments.provider",
            )
        self.model = model
        self.api_key = api_key
        self.base_url = base_url
        self._module: Any = None

    async def _litellm(self) -> Any:
        if self._module is None:
            # seconds of imports: off the event loop so other requests keep flowing meanwhile
            try:
                self._module = await asyncio.to_thread(_import_litellm)
            except Exception as exc:  # a broken install: this deployment cannot serve
                raise ProviderError(
                    f"{_NAME}: the litellm package failed to import ({type(exc).__name__}: {exc})",
                    retryable=False,
                    provider=_NAME,
                    code="provider_unavailable",
                ) from None
        return self._module

    def _kwargs(self, request: ChatCompletionRequest, stream: bool) -> dict[str, Any]:
        kwargs = request.model_dump(exclude_none=True, by_alias=True)
        kwargs.update(model=self.model, stream=stream, max_retries=0)
        # LiteLLM 1.106 sends any request with tools through its proxy's MCP handler, which
        # imports the `mcp` package of the [proxy] extra; we never use LiteLLM's MCP gateway
        kwargs["_skip_mcp_handler"] = True
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if self.base_url:
            kwargs["api_base"] = self.base_url
        return kwargs

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        litellm = await self._litellm()
        try:
            answer = await litellm.acompletion(**self._kwargs(request, False))
        except Exception as exc:
            raise _provider_error(litellm, exc) from None
        try:
            return ChatCompletionResponse.model_validate(_plain(answer))
        except pydantic.ValidationError as exc:
            raise malformed(_NAME, str(exc.errors(include_url=False)[0]["msg"])) from None

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        litellm = await self._litellm()
        finished = False
        try:
            chunks = await litellm.acompletion(**self._kwargs(request, True))
            async for chunk in chunks:
                try:
                    parsed = ChatCompletionChunk.model_validate(_plain(chunk))
                except pydantic.ValidationError as exc:
                    raise malformed(_NAME, str(exc.errors(include_url=False)[0]["msg"])) from None
                finished = finished or any(c.finish_reason for c in parsed.choices)
                yield parsed
        except ProviderError:
            raise
        except Exception as exc:
            raise _provider_error(litellm, exc) from None
        if not finished:  # never let a cut stream pass for a complete answer
            raise ProviderError(
                f"{_NAME}: stream ended before the answer finished",
                retryable=True,
                provider=_NAME,
                code="stream_truncated",
            )

    async def aclose(self) -> None:
        return None


def _plain(answer: Any) -> Any:
    """LiteLLM's pydantic answer as plain OpenAI data: empty fields and its own extras left out."""
    data = answer.model_dump(exclude_none=True) if hasattr(answer, "model_dump") else answer
    return _clean(data)


_LITELLM_ONLY = frozenset({"provider_specific_fields", "_hidden_params", "_response_ms"})


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None and k not in _LITELLM_ONLY}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value
