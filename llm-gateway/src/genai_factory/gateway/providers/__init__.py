"""Provider adapters, built from a deployment's settings (heavier ones imported only when used).

``openai``/``azure``: :class:`~genai_factory.gateway.providers.openai.OpenAICompatibleProvider`;
``anthropic``: :mod:`~genai_factory.gateway.providers.anthropic`; ``bedrock``:
:mod:`~genai_factory.gateway.providers.bedrock`; ``gemini``:
:mod:`~genai_factory.gateway.providers.gemini`; ``litellm``: the long tail through LiteLLM
(optional, imported lazily); ``custom``: any ChatModel-like class from the component factory.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from genai_factory.gateway.components import ComponentRegistry
from genai_factory.gateway.providers.base import Provider
from genai_factory.shared.contracts import ChatModel

if TYPE_CHECKING:
    from genai_factory.gateway.config import DeploymentSettings

__all__ = ["ChatModelProvider", "build_provider"]


class ChatModelProvider:
    """Wraps any ChatModel (a custom component) so it can be closed like a provider."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model

    async def complete(self, request: Any) -> Any:
        return await self.model.complete(request)

    def stream(self, request: Any) -> Any:
        return self.model.stream(request)

    async def aclose(self) -> None:
        closer = getattr(self.model, "aclose", None)
        if closer is not None:
            await closer()


def _secret(value: Any, env: str) -> str | None:
    if value is not None:
        return str(value.get_secret_value())
    return os.environ.get(env)


def build_provider(
    settings: DeploymentSettings, registry: ComponentRegistry | None = None
) -> Provider:
    """The provider a deployment's settings describe (``registry``: named components)."""
    model = settings.upstream_model or settings.model
    common: dict[str, Any] = {
        "connect_timeout_s": settings.timeouts.connect_s,
        "max_connections": settings.max_connections,
    }
    if settings.provider in ("openai", "azure"):
        from genai_factory.gateway.providers.openai import OpenAICompatibleProvider

        assert settings.base_url is not None
        return OpenAICompatibleProvider(
            settings.base_url,
            model,
            settings.key(),
            azure_deployment=settings.azure_deployment,
            api_version=settings.api_version,
            extra_headers=settings.extra_headers,
            **common,
        )
    if settings.provider == "anthropic":
        from genai_factory.gateway.providers.anthropic import AnthropicProvider

        return AnthropicProvider(
            model,
            settings.key() or os.environ.get("ANTHROPIC_API_KEY"),
            base_url=settings.base_url or "https://api.anthropic.com",
            extra_headers=settings.extra_headers,
            **common,
        )
    if settings.provider == "bedrock":
        from genai_factory.gateway.providers.bedrock import BedrockConverseProvider

        return BedrockConverseProvider(
            model,
            region=settings.region or os.environ.get("AWS_REGION", "us-east-1"),
            access_key_id=_secret(settings.aws_access_key_id, "AWS_ACCESS_KEY_ID") or "",
            secret_access_key=_secret(settings.aws_secret_access_key, "AWS_SECRET_ACCESS_KEY")
            or "",
            session_token=_secret(settings.aws_session_token, "AWS_SESSION_TOKEN"),
            base_url=settings.base_url,
            **common,
        )
    if settings.provider == "gemini":
        from genai_factory.gateway.providers.gemini import GeminiProvider

        return GeminiProvider(
            model,
            settings.key() or os.environ.get("GEMINI_API_KEY"),
            base_url=settings.base_url or "https://generativelanguage.googleapis.com",
            **common,
        )
    if settings.provider == "litellm":
        from genai_factory.gateway.providers.litellm import LiteLLMProvider

        return LiteLLMProvider(model, api_key=settings.key(), base_url=settings.base_url)
    assert settings.component is not None
    component = (registry or ComponentRegistry()).build(
        settings.component, ChatModel, where=f"deployments.{settings.name}.component"
    )
    return ChatModelProvider(component)
