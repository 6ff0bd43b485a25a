"""Schemathesis over the gateway's OpenAPI document, against a live server: no input makes a 5xx."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from genai_factory.gateway.app import create_app
from genai_factory.gateway.openapi import openapi_spec
from genai_factory.gateway.runtime import Gateway
from genai_factory.gateway.testing import ScriptedUpstream

from .conftest import free_port, settings_for, wait_for_http

pytestmark = [pytest.mark.integration, pytest.mark.slow]

schema = schemathesis.openapi.from_dict(openapi_spec())


@pytest.fixture(scope="module")
def live_gateway() -> Iterator[str]:
    """A real uvicorn server (own thread and loop) in front of a scripted upstream."""
    port = free_port()
    ready = threading.Event()
    state: dict[str, object] = {}

    async def main() -> None:
        async with ScriptedUpstream("primary") as upstream:
            gateway = Gateway(
                settings_for(
                    {"name": "a", "model": "smollm2", "base_url": upstream.url},
                    max_body_bytes=64 * 1024,
                )
            )
            config = uvicorn.Config(
                create_app(gateway), host="127.0.0.1", port=port, log_level="error"
            )
            server = uvicorn.Server(config)
            state["server"] = server
            ready.set()
            await server.serve()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    ready.wait(10)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + "/health/liveness", 30)
    yield url
    server = state["server"]
    assert isinstance(server, uvicorn.Server)
    server.should_exit = True
    thread.join(10)


@schema.parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_generated_request_gets_a_server_error(
    case: schemathesis.Case, live_gateway: str
) -> None:
    response = case.call(base_url=live_gateway, timeout=10)
    assert response.status_code < 500, (case.method, case.path, case.body, response.text)
    assert "x-request-id" in response.headers
    if response.status_code >= 400:
        body = response.json()
        assert body.get("error") or body.get("type") == "error"
