"""Server configuration: which models to serve, how many requests each takes, and the limits.

A YAML file (``gf serving serve --config FILE``) or ``GF_SERVING__*`` environment variables fill
:class:`ServingSettings`; every engine is a component spec built by the shared factory.

Example:
    >>> from genai_factory.serving.server.config import ServerConfig
    >>> config = ServerConfig.model_validate({"models": [{"name": "smollm2"}]})
    >>> config.models[0].engine.type
    'genai_factory.serving.engines.llamacpp:LlamaCppChatModel'
    >>> config.models[0].max_concurrency, config.default_model
    (4, 'smollm2')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genai_factory.shared.factory import ComponentSpec
from genai_factory.shared.settings import GFSettings, load_settings

__all__ = [
    "LLAMACPP_ENGINE",
    "LLAMACPP_PARALLEL",
    "MINILM_EMBEDDER",
    "TORCH_ENGINE",
    "EmbeddingModelConfig",
    "ModelConfig",
    "ServerConfig",
    "ServingSettings",
    "load_serving_settings",
]

LLAMACPP_ENGINE = "genai_factory.serving.engines.llamacpp:LlamaCppChatModel"
LLAMACPP_PARALLEL = 4  # LlamaCppChatModel's default batch slots
TORCH_ENGINE = "genai_factory.serving.torch_engine:TorchChatModel"
MINILM_EMBEDDER = "genai_factory.serving.embeddings:MiniLMEmbedder"

_NAME = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$"


class ModelConfig(BaseModel):
    """One chat model the server offers under ``name``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=_NAME, description="the name clients put in 'model'")
    engine: ComponentSpec = Field(
        default_factory=lambda: ComponentSpec(type=LLAMACPP_ENGINE, params={"model": "smollm2"}),
        description="the engine component (any ChatModel)",
    )
    max_concurrency: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="requests the engine runs at once (llama.cpp: its 'parallel' by default)",
    )
    max_queue: int = Field(
        default=32, ge=0, le=100_000, description="requests that may wait; more get 429"
    )
    queue_timeout_s: float = Field(
        default=60.0, gt=0, description="a request waiting longer gets 503 with Retry-After"
    )
    max_output_tokens: int = Field(
        default=1024, ge=1, description="the largest max_tokens a request may ask for"
    )
    max_choices: int = Field(
        default=1, ge=1, le=128, description="the largest n (choices per request) the engine gives"
    )
    logprobs: bool = Field(default=False, description="whether the engine returns logprobs")
    memory_mb: float | None = Field(
        default=None, gt=0, description="the engine's size for the budget (default: estimated)"
    )
    preload: bool = Field(default=False, description="load at start-up instead of on first use")

    @model_validator(mode="before")
    @classmethod
    def _concurrency_from_engine(cls, data: Any) -> Any:
        """Without ``max_concurrency``, a llama.cpp engine takes as many requests at once as it
        has batch slots (its ``parallel``), so that its batches fill."""
        if isinstance(data, dict) and data.get("max_concurrency") is None:
            engine = data.get("engine")
            spec: dict[str, Any] = {"type": LLAMACPP_ENGINE, "params": {}}  # the default engine
            if isinstance(engine, ComponentSpec):
                spec = engine.model_dump()
            elif isinstance(engine, dict):
                spec = engine
            params = spec.get("params")
            if spec.get("type") == LLAMACPP_ENGINE and isinstance(params, dict | None):
                parallel = (params or {}).get("parallel", LLAMACPP_PARALLEL)
                data = {**data, "max_concurrency": parallel}
        return data


class EmbeddingModelConfig(BaseModel):
    """One embedding model the server offers under ``name`` on /v1/embeddings."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="all-minilm-l6-v2", pattern=_NAME)
    engine: ComponentSpec = Field(default_factory=lambda: ComponentSpec(type=MINILM_EMBEDDER))
    max_inputs: int = Field(default=256, ge=1, le=2048, description="inputs per request")


class ServerConfig(BaseModel):
    """Everything ``gf serving serve`` needs besides host and port."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelConfig] = Field(
        default_factory=lambda: [ModelConfig(name="smollm2", preload=True)], min_length=1
    )
    embeddings: list[EmbeddingModelConfig] = Field(default_factory=lambda: [EmbeddingModelConfig()])
    memory_budget_mb: float = Field(
        default=4096, gt=0, description="engines held at once; least recently used go first"
    )
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024, description="larger: 413")
    retry_after_s: float = Field(default=1.0, gt=0, description="Retry-After when not ready")
    drain_timeout_s: float = Field(default=30.0, ge=0, description="grace for running requests")
    grpc_port: int | None = Field(default=None, ge=0, le=65535, description="also serve gRPC")

    @model_validator(mode="after")
    def _unique_names(self) -> Self:
        names = [m.name for m in self.models] + [e.name for e in self.embeddings]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names must be unique; repeated: {', '.join(duplicates)}")
        return self

    @property
    def default_model(self) -> str:
        return self.models[0].name


class ServingSettings(GFSettings):
    """Platform settings plus the ``serving:`` section (env: ``GF_SERVING__MEMORY_BUDGET_MB``)."""

    serving: ServerConfig = Field(default_factory=ServerConfig)


def load_serving_settings(path: str | Path | None = None, **overrides: Any) -> ServingSettings:
    """Settings from ``path`` (or ``$GF_CONFIG``) and the environment; ConfigError if invalid."""
    return load_settings(ServingSettings, path, **overrides)
