"""Helpers for tests that need a real model server: run one on loopback, read its SSE.

Example:
    >>> from genai_factory.serving.testing import sse_payloads
    >>> sse_payloads('data: {"a": 1}\\n\\ndata: [DONE]\\n\\n')
    [{'a': 1}, '[DONE]']
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from genai_factory.serving.server.app import ServerParts, create_app
from genai_factory.shared.contracts import ChatModel
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
)

__all__ = ["BorrowedEngine", "running_server", "sse_payloads"]


class BorrowedEngine:
    """Lends an engine to a server without letting the server close it (e.g. a session-wide
    model in tests: evicting or shutting down one server must not unload it for the next)."""

    def __init__(self, engine: ChatModel) -> None:
        self.engine = engine

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        return await self.engine.complete(request)

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        return self.engine.stream(request)

    def load(self) -> None:
        load = getattr(self.engine, "load", None)
        if callable(load):
            load()

    def memory_bytes(self) -> int:
        measure = getattr(self.engine, "memory_bytes", None)
        return int(measure()) if callable(measure) else 0

    def stats(self) -> dict[str, float]:
        stats = getattr(self.engine, "stats", None)
        return dict(stats()) if callable(stats) else {}


@contextlib.asynccontextmanager
async def running_server(parts: ServerParts, *, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """A real uvicorn server for ``parts`` on a free port of ``host``, in this event loop; yields
    its base URL and shuts it down (lifespan included) on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(parts=parts),
        log_level="warning",
        lifespan="on",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(3000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if not server.started:
            raise RuntimeError("uvicorn did not start")
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)
        sock.close()


class _QuietServer(uvicorn.Server):
    """Leaves the process's signal handlers alone (the test runner owns them)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def sse_payloads(text: str) -> list[Any]:
    """The JSON payloads of a server-sent-events body; ``[DONE]`` stays a string."""
    events = [
        line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")
    ]
    return [event if event == "[DONE]" else json.loads(event) for event in events]
