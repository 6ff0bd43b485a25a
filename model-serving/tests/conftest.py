from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from genai_factory.serving.engines.llamacpp import LlamaCppChatModel
from genai_factory.serving.server import ModelManager, ServerConfig, ServerParts, create_app
from genai_factory.serving.testing import BorrowedEngine


@pytest.fixture(scope="session")
def smollm2() -> LlamaCppChatModel:
    """The real packaged SmolLM2 model, loaded once for the whole session."""
    # one thread: on a shared 2-core machine two llama.cpp threads spin-wait on each other
    return LlamaCppChatModel("smollm2", context_window=1024, threads=1)


# --- the server's fixtures: every server test shares the one session engine above ---


def server_config(**overrides: Any) -> ServerConfig:
    """One model, 'smollm2', with small limits so tests stay fast."""
    model: dict[str, Any] = {"name": "smollm2", "max_output_tokens": 64, "preload": True}
    model.update(overrides.pop("model", {}))
    return ServerConfig.model_validate({"models": [model], **overrides})


@pytest.fixture
def make_parts(smollm2: LlamaCppChatModel) -> Callable[..., ServerParts]:
    """ServerParts over the session engine: make_parts(model={...}, max_body_bytes=...)."""

    def make(**overrides: Any) -> ServerParts:
        config = server_config(**overrides)
        manager = ModelManager(
            config.models,
            memory_budget_mb=config.memory_budget_mb,
            retry_after_s=config.retry_after_s,
            builder=lambda _: BorrowedEngine(smollm2),
        )
        return ServerParts(config, manager)

    return make


@pytest.fixture
async def parts(make_parts: Callable[..., ServerParts]) -> ServerParts:
    """Started ServerParts over the session engine, default test limits."""
    started = make_parts()
    await started.start()
    return started


@pytest.fixture
async def client(parts: ServerParts) -> AsyncIterator[httpx.AsyncClient]:
    """An in-process client of a started app over the session engine."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(parts=parts)),
        base_url="http://serving.test",
        timeout=300,
    ) as http:
        yield http
