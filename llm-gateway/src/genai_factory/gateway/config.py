"""The gateway's settings: deployments, model groups, routing, failover, limits and pipeline stages.

One YAML file (``gf gateway serve --config FILE``) plus ``GF_*`` environment overrides, loaded with
the shared :func:`~genai_factory.shared.settings.load_settings`; every mistake is a ConfigError
naming the field. Pipeline components are ``{type, params}`` specs built by the shared factory.

Example:
    >>> settings = GatewaySettings.model_validate({"deployments": [
    ...     {"model": "smollm2", "base_url": "http://127.0.0.1:8080/v1"}]})
    >>> settings.deployments[0].name, settings.deployments[0].provider, settings.port
    ('smollm2-0', 'openai', 4000)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from genai_factory.gateway.components import expand_settings_env
from genai_factory.shared.factory import ComponentSpec
from genai_factory.shared.settings import GFSettings, load_settings, settings_config

__all__ = [
    "AnyComponent",
    "AuthSettings",
    "BreakerSettings",
    "CacheSettings",
    "ComponentRef",
    "DeploymentSettings",
    "GatewaySettings",
    "ModelSettings",
    "MountSettings",
    "RateLimitSettings",
    "RetrySettings",
    "TimeoutSettings",
    "load_gateway_settings",
    "zero_config",
]

ProviderKind = Literal["openai", "azure", "anthropic", "bedrock", "gemini", "litellm", "custom"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ComponentRef(BaseModel):
    """``{$ref: NAME}`` or ``{$ref: NAME.attr}``: a component from ``components`` (shared)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    ref: str = Field(alias="$ref", pattern=r"^[A-Za-z_][\w-]*(\.[A-Za-z_]\w*)*$")


# A component in config: built from {type, params}, or a named one from `components`.
AnyComponent = ComponentSpec | ComponentRef


class TimeoutSettings(_Section):
    connect_s: float = Field(default=5.0, gt=0)
    ttft_s: float = Field(default=30.0, gt=0, description="first streamed chunk")
    idle_s: float = Field(default=30.0, gt=0, description="between streamed chunks")
    total_s: float = Field(default=600.0, gt=0)


class DeploymentSettings(_Section):
    """One upstream endpoint serving ``model`` (the public name clients ask for)."""

    name: str = Field(default="", description="unique; defaults to '<model>-<index>'")
    model: str = Field(min_length=1)
    provider: ProviderKind = "openai"
    upstream_model: str | None = Field(default=None, description="the upstream's own model id")
    base_url: str | None = None
    api_key: SecretStr | None = None
    api_key_env: str | None = Field(default=None, description="read the key from this env var")
    azure_deployment: str | None = None
    api_version: str | None = None
    region: str | None = None
    aws_access_key_id: SecretStr | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    extra_headers: dict[str, str] = Field(default_factory=dict)
    component: AnyComponent | None = Field(
        default=None, description="provider: custom -> any ChatModel-like class"
    )
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    max_connections: int = Field(default=100, ge=1)
    input_cost_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M input tokens")
    output_cost_per_mtok: float = Field(default=0.0, ge=0, description="USD per 1M output tokens")
    context_window: int | None = Field(default=None, ge=1)
    supports_tools: bool = True
    supports_json: bool = True
    supports_vision: bool = False
    weight: float = Field(default=1.0, gt=0)
    max_in_flight: int | None = Field(default=None, ge=1)

    def key(self) -> str | None:
        """The API key, from the file or the named environment variable."""
        if self.api_key is not None:
            return self.api_key.get_secret_value()
        if self.api_key_env:
            return os.environ.get(self.api_key_env)
        return None

    @model_validator(mode="after")
    def _needs_what_its_provider_needs(self) -> DeploymentSettings:
        if self.provider in ("openai", "azure") and not self.base_url:
            raise ValueError(f"a '{self.provider}' deployment needs 'base_url'")
        if self.provider == "azure" and not self.azure_deployment:
            raise ValueError("an 'azure' deployment needs 'azure_deployment'")
        if self.provider == "custom" and self.component is None:
            raise ValueError("a 'custom' deployment needs 'component'")
        return self


class ModelSettings(_Section):
    """Routing and fallbacks for a model name (its deployments are those naming it)."""

    name: str = Field(min_length=1)
    strategy: str | None = Field(default=None, description="overrides routing.strategy")
    fallbacks: list[str] = Field(default_factory=list)
    context_window_fallbacks: list[str] = Field(default_factory=list)
    content_policy_fallbacks: list[str] = Field(default_factory=list)


class RoutingSettings(_Section):
    strategy: str = Field(
        default="latency",
        description="ordered | cost | latency | capability | weighted | least_busy",
    )
    policy: AnyComponent | None = Field(
        default=None, description="a custom policy: any object with rank(candidates, request)"
    )


class RetrySettings(_Section):
    max_retries: int = Field(default=2, ge=0, le=10)
    base_delay_s: float = Field(default=0.25, ge=0)
    max_delay_s: float = Field(default=8.0, ge=0)
    max_retry_after_s: float = Field(default=30.0, ge=0)
    jitter: float = Field(default=0.5, ge=0, le=1)


class BreakerSettings(_Section):
    failure_threshold: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=30.0, ge=0)
    half_open_probes: int = Field(default=1, ge=1)


class RateLimitSettings(_Section):
    """A limit per scope: requests per minute and/or tokens per minute."""

    scope: Literal["key", "user", "team", "org", "global"] = "key"
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    algorithm: Literal["token_bucket", "sliding_window"] = "sliding_window"
    window_s: float = Field(default=60.0, gt=0)
    backend: Literal["memory", "redis"] = "memory"

    @model_validator(mode="after")
    def _some_limit(self) -> RateLimitSettings:
        if self.rpm is None and self.tpm is None:
            raise ValueError("a rate limit needs 'rpm' or 'tpm'")
        return self


class AuthSettings(_Section):
    """API keys clients present (``Authorization: Bearer``, ``x-api-key`` or ``api-key``)."""

    keys: list[dict[str, Any]] = Field(
        default_factory=list,
        description="{key | key_sha256 | key_env, subject, org_id, team_id, user_id, roles}",
    )
    keys_env: str | None = Field(
        default="GF_GATEWAY_API_KEYS", description="comma-separated keys in this env var"
    )
    required: bool | None = Field(
        default=None, description="default: required when any key is configured"
    )
    component: AnyComponent | None = Field(default=None, description="a custom Authenticator")
    authorizer: AnyComponent | None = Field(
        default=None,
        description="an Authorizer asked before every model call (action gateway:chat, "
        "gateway:completion or gateway:embedding; resource model:NAME)",
    )


class CacheSettings(_Section):
    enabled: bool = True
    max_entries: int = Field(default=2048, ge=1)
    ttl_s: float = Field(default=300.0, gt=0)
    component: AnyComponent | None = Field(default=None, description="a custom ResponseCache")


_RESERVED_PREFIXES = ("/v1", "/chat", "/health", "/metrics", "/admin", "/openapi.json")


class MountSettings(_Section):
    """Another ASGI app served under ``path`` (e.g. the observability console at /console)."""

    path: str = Field(pattern=r"^/[A-Za-z0-9._~-]+(/[A-Za-z0-9._~-]+)*$")
    app: AnyComponent = Field(description="an ASGI app (or a factory call returning one)")

    @field_validator("path")
    @classmethod
    def _not_an_api_path(cls, path: str) -> str:
        for reserved in _RESERVED_PREFIXES:
            if path == reserved or path.startswith(reserved + "/"):
                raise ValueError(f"'{path}' would hide the gateway's own '{reserved}' endpoints")
        return path


class GatewaySettings(GFSettings):
    """Everything ``gf gateway serve`` needs; see the module README for a full example."""

    model_config = settings_config()

    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=0, le=65535)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    deployments: list[DeploymentSettings] = Field(default_factory=list)
    models: list[ModelSettings] = Field(default_factory=list)
    routing: RoutingSettings = Field(default_factory=RoutingSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    rate_limits: list[RateLimitSettings] = Field(default_factory=list)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    # components (from GFSettings): named components, built once in order; {$ref: NAME} elsewhere
    guards: list[AnyComponent] = Field(default_factory=list)
    budget: AnyComponent | None = None
    ledger: AnyComponent | list[AnyComponent] | None = Field(
        default=None, description="SpendLedgers fed besides the in-memory usage counters"
    )
    observers: list[AnyComponent] = Field(default_factory=list)
    telemetry: AnyComponent | None = Field(
        default=None,
        description="a GenAI tracer (observability's GenAITelemetry): one span per request",
    )
    mounts: list[MountSettings] = Field(default_factory=list)
    stream_screen_chars: int = Field(
        default=200, ge=1, description="streamed text is screened by output guards in windows"
    )
    reload_interval_s: float | None = Field(
        default=None, gt=0, description="poll the config file and reload when it changes"
    )
    drain_timeout_s: float = Field(default=30.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _read_environment_references(cls, data: Any) -> Any:
        """``${VAR}`` in any string reads the environment (component params: when built)."""
        return expand_settings_env(data) if isinstance(data, dict) else data

    @model_validator(mode="after")
    def _names(self) -> GatewaySettings:
        seen: set[str] = set()
        for index, deployment in enumerate(self.deployments):
            if not deployment.name:
                deployment.name = f"{deployment.model}-{index}"
            if deployment.name in seen:
                raise ValueError(f"deployment name '{deployment.name}' is used twice")
            seen.add(deployment.name)
        paths = [mount.path for mount in self.mounts]
        for path in paths:
            if paths.count(path) > 1:
                raise ValueError(f"mount path '{path}' is used twice")
        served = {d.model for d in self.deployments}
        for group in self.models:
            if group.name not in served:
                raise ValueError(f"model '{group.name}' has no deployment")
            for target in (
                *group.fallbacks,
                *group.context_window_fallbacks,
                *group.content_policy_fallbacks,
            ):
                if target not in served:
                    raise ValueError(f"model '{group.name}' falls back to unknown model '{target}'")
        return self


def load_gateway_settings(path: str | Path | None = None, **overrides: Any) -> GatewaySettings:
    """Settings from ``path`` (or ``$GF_CONFIG``), the environment and ``overrides``."""
    return load_settings(GatewaySettings, path, **overrides)


def zero_config(
    upstream: str,
    model: str,
    *,
    api_key: str | None = None,
    upstream_api_key: str | None = None,
    host: str = "127.0.0.1",
    port: int = 4000,
) -> GatewaySettings:
    """Settings for one OpenAI-compatible upstream serving ``model``, default pipeline on."""
    keys = [{"key": api_key, "subject": "cli"}] if api_key else []
    deployment: dict[str, Any] = {"name": model, "model": model, "base_url": upstream}
    if upstream_api_key:
        deployment["api_key"] = upstream_api_key
    return load_gateway_settings(
        None,
        host=host,
        port=port,
        deployments=[deployment],
        auth={"keys": keys},
        rate_limits=[],
    )
