"""The runner in process: REST and gRPC up, a SIGTERM drains and returns; a failed start raises."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from typing import Any

import httpx
import pytest

from genai_factory.serving.server import ServerConfig
from genai_factory.serving.server.runner import serve
from genai_factory.shared.errors import ServiceUnavailable

pytestmark = pytest.mark.integration

ENGINE = {
    "type": "genai_factory.serving.engines.llamacpp:LlamaCppChatModel",
    "params": {"model": "smollm2", "context_window": 256, "threads": 1},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(**overrides: Any) -> ServerConfig:
    model = {"name": "smollm2", "engine": ENGINE, "preload": True, "max_output_tokens": 8}
    return ServerConfig.model_validate(
        {"models": [model], "embeddings": [], "drain_timeout_s": 5, **overrides}
    )


async def test_serve_answers_then_drains_and_returns_on_sigterm() -> None:
    port = free_port()
    task = asyncio.create_task(
        serve(config(grpc_port=0), host="127.0.0.1", port=port, log_level="warning")
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
        for _ in range(1200):
            assert not task.done(), task
            try:
                if (await http.get("/ready")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
        body = {"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}]}
        answer = await http.post("/v1/chat/completions", json=body)
        assert answer.status_code == 200
        assert answer.json()["usage"]["completion_tokens"] <= 8  # the model's cap is the default
    os.kill(os.getpid(), signal.SIGTERM)  # the runner's handler drains; the process lives on
    await asyncio.wait_for(task, timeout=60)
    assert task.exception() is None


async def test_a_failed_start_raises() -> None:
    broken = config(memory_budget_mb=1)  # the preloaded model cannot fit
    with pytest.raises(ServiceUnavailable, match="did not start"):
        await serve(broken, host="127.0.0.1", port=free_port(), log_level="critical")
