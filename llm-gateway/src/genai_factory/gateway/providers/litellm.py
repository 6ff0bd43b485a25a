"""The long tail of providers through LiteLLM (optional; imported only when a deployment uses it).

``pip install litellm`` and set ``LITELLM_LOCAL_MODEL_COST_MAP=True`` offline. LiteLLM takes
``provider/model`` names (``cohere/command-r``, ``mistral/mistral-large-latest``, ...).

Example (needs litellm)::

    provider = LiteLLMProvider("mistral/mistral-small-latest", api_key="...")
    answer = await provider.complete(request)
"""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from typing import Any

from genai_factory.shared.errors import ConfigError, ProviderError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)

__all__ = ["LiteLLMProvider"]


def _litellm() -> Any:
    import litellm  # type: ignore[import-not-found, unused-ignore]  # checked at construction

    return litellm


def _provider_error(exc: Exception) -> ProviderError:
    status = getattr(exc, "status_code", None)
    status = status if isinstance(status, int) else None
    return ProviderError(
        f"litellm: {exc}",
        retryable=status is None or status == 429 or status >= 500,
        upstream_status=status,
        provider="litellm",
    )


class LiteLLMProvider:
    """Calls ``litellm.acompletion`` for a ``provider/model`` name.

    Args:
        model: LiteLLM's model name.
        api_key: passed through as ``api_key``.
        base_url: passed through as ``api_base``.
    """

    def __init__(self, model: str, api_key: str | None = None, base_url: str | None = None) -> None:
        if importlib.util.find_spec("litellm") is None:  # say so at start-up, not per request
            raise ConfigError(
                "provider 'litellm' needs the litellm package (pip install litellm)",
                param="deployments.provider",
            )
        self.model = model
        self.api_key = api_key
        self.base_url = base_url

    def _kwargs(self, request: ChatCompletionRequest, stream: bool) -> dict[str, Any]:
        kwargs = request.model_dump(exclude_none=True, by_alias=True)
        kwargs.update(model=self.model, stream=stream)
        if self.api_key:
            kwargs["api_key"] = self.api_key
        if self.base_url:
            kwargs["api_base"] = self.base_url
        return kwargs

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        litellm = _litellm()
        try:
            answer = await litellm.acompletion(**self._kwargs(request, False))
        except Exception as exc:
            raise _provider_error(exc) from None
        return ChatCompletionResponse.model_validate(answer.model_dump())

    async def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        litellm = _litellm()
        try:
            chunks = await litellm.acompletion(**self._kwargs(request, True))
            async for chunk in chunks:
                yield ChatCompletionChunk.model_validate(chunk.model_dump())
        except Exception as exc:
            raise _provider_error(exc) from None

    async def aclose(self) -> None:
        return None
