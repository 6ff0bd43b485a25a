"""The model server: OpenAI-compatible REST (and gRPC) over the engines, with admission control,
several models under a memory budget, and Prometheus metrics.

Example (what ``gf serving serve`` does)::

    from genai_factory.serving.server import ServerConfig, create_app

    app = create_app(ServerConfig())   # then: uvicorn.run(app, host="127.0.0.1", port=8000)
"""

from genai_factory.serving.server.app import ServerParts, create_app
from genai_factory.serving.server.config import (
    EmbeddingModelConfig,
    ModelConfig,
    ServerConfig,
    ServingSettings,
    load_serving_settings,
)
from genai_factory.serving.server.manager import ModelManager

__all__ = [
    "EmbeddingModelConfig",
    "ModelConfig",
    "ModelManager",
    "ServerConfig",
    "ServerParts",
    "ServingSettings",
    "create_app",
    "load_serving_settings",
]
