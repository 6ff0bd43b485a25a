"""Operations: the CLI (zero-config and file), admin API, hot reload, metrics, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from click.testing import CliRunner

from genai_factory.gateway.cli import gateway as gateway_cli
from genai_factory.gateway.config import GatewaySettings, load_gateway_settings
from genai_factory.gateway.runtime import Gateway
from genai_factory.gateway.testing import Fault, ScriptedUpstream
from genai_factory.shared.errors import ConfigError

from .conftest import GatewayFactory, deployment, free_port, settings_for, wait_for_http
from .test_api import CHAT, sse_events

MASTER = {"authorization": "Bearer mk-admin-123456"}


def write_config(path: Path, upstream: ScriptedUpstream, models: list[str], **extra: Any) -> None:
    data = {
        "master_key": "mk-admin-123456",
        "deployments": [{"name": f"d-{m}", "model": m, "base_url": upstream.url} for m in models],
        "auth": {"keys_env": None},
        **extra,
    }
    path.write_text(yaml.safe_dump(data))


def serve(*args: str) -> subprocess.Popen[bytes]:
    env = os.environ | {"GF_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "genai_factory.gateway", "serve", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )


# uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is a clean exit
CLEAN_EXIT = (0, -signal.SIGTERM)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        return -9


@pytest.mark.e2e
async def test_zero_config_serve_starts_fast_and_runs_the_default_pipeline(
    upstream: ScriptedUpstream,
) -> None:
    port = free_port()
    started = time.monotonic()
    process = serve(
        "--upstream",
        upstream.url,
        "--model",
        "m",
        "--api-key",
        "sk-cli-key-001",
        "--port",
        str(port),
    )
    try:
        await asyncio.to_thread(
            wait_for_http, f"http://127.0.0.1:{port}/health/liveness", 30, process
        )
        startup_s = time.monotonic() - started
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            denied = await client.post("/v1/chat/completions", json=CHAT)
            assert denied.status_code == 401
            answer = await client.post(
                "/v1/chat/completions",
                json=CHAT,
                headers={"authorization": "Bearer sk-cli-key-001"},
            )
            assert answer.status_code == 200
            assert answer.json()["choices"][0]["message"]["content"] == "Hello from primary"
            assert "x-gf-overhead-ms" in answer.headers
        assert startup_s < 10  # the benchmark measures the real figure on a quiet machine
    finally:
        assert stop(process) in CLEAN_EXIT


@pytest.mark.e2e
@pytest.mark.slow
async def test_shutdown_drains_streams_in_flight(
    upstream: ScriptedUpstream, tmp_path: Path
) -> None:
    upstream.default = Fault.ok("one two three four five six", chunk_delay_s=0.25)
    config = tmp_path / "gateway.yaml"
    write_config(config, upstream, ["m"])
    port = free_port()
    process = serve("--config", str(config), "--port", str(port))
    try:
        await asyncio.to_thread(
            wait_for_http, f"http://127.0.0.1:{port}/health/liveness", 30, process
        )
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        async with (
            httpx.AsyncClient(timeout=30) as client,
            client.stream("POST", url, json=CHAT | {"stream": True}) as response,
        ):
            body = b""
            async for piece in response.aiter_bytes():
                if not body:
                    process.send_signal(signal.SIGTERM)  # mid-stream
                body += piece
        assert sse_events(body)[-1] == "[DONE]"
        assert b"six" in body
        assert process.wait(15) in CLEAN_EXIT
    finally:
        stop(process)


async def test_the_admin_api_needs_the_master_key(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, closed = await gateway_client(settings_for(deployment("a", "m", upstream)))
    assert (await closed.get("/admin/deployments")).status_code == 403
    _, client = await gateway_client(
        settings_for(deployment("a", "m", upstream), master_key="mk-admin-123456")
    )
    assert (await client.get("/admin/deployments")).status_code == 401
    assert (
        await client.get("/admin/deployments", headers={"x-api-key": "nope"})
    ).status_code == 401
    await client.post("/v1/chat/completions", json=CHAT)
    view = (await client.get("/admin/deployments", headers=MASTER)).json()
    first = view["deployments"][0]
    assert first["name"] == "a" and first["breaker"]["state"] == "closed" and first["served"] == 1
    assert first["ewma_latency_ms"] is not None
    assert view["models"]["m"]["deployments"] == ["a"]
    no_file = await client.post("/admin/reload", headers=MASTER)
    assert no_file.status_code == 409


async def test_reload_swaps_config_and_keeps_unchanged_deployments(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    write_config(config, upstream, ["m"])
    gateway, client = await gateway_client(load_gateway_settings(config), config)
    before = gateway.runtime.router.deployments[0]
    before.breaker.record_failure()
    assert (
        await client.post("/v1/chat/completions", json=CHAT | {"model": "n"})
    ).status_code == 404
    write_config(config, upstream, ["m", "n"])
    result = (await client.post("/admin/reload", headers=MASTER)).json()
    assert result == {"deployments": ["d-m", "d-n"], "kept": ["d-m"], "removed": []}
    assert (
        await client.post("/v1/chat/completions", json=CHAT | {"model": "n"})
    ).status_code == 200
    assert gateway.runtime.router.groups["m"].deployments[0] is before  # same breaker and stats
    config.write_text("deployments: [{model: 5")
    broken = await client.post("/admin/reload", headers=MASTER)
    assert broken.status_code == 422 and "gateway.yaml" in broken.json()["error"]["message"]
    assert (
        await client.post("/v1/chat/completions", json=CHAT | {"model": "n"})
    ).status_code == 200
    write_config(config, upstream, ["n"])
    result = (await client.post("/admin/reload", headers=MASTER)).json()
    assert result["removed"] == ["d-m"]
    await asyncio.sleep(0.1)  # the removed deployment's pool closes once drained
    assert before.provider._session is None  # type: ignore[attr-defined]


async def test_the_config_file_is_watched_and_a_bad_edit_keeps_the_running_config(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory, tmp_path: Path
) -> None:
    config = tmp_path / "gateway.yaml"
    write_config(config, upstream, ["m"])
    gateway, client = await gateway_client(load_gateway_settings(config), config)
    watcher = asyncio.create_task(gateway.watch(0.05))
    try:
        await asyncio.sleep(0.1)
        config.write_text("deployments: nope")
        os.utime(config, (time.time() + 1, time.time() + 1))
        await asyncio.sleep(0.2)
        assert sorted(gateway.runtime.router.groups) == ["m"]
        write_config(config, upstream, ["m", "fresh"])
        os.utime(config, (time.time() + 2, time.time() + 2))
        for _ in range(40):
            if "fresh" in gateway.runtime.router.groups:
                break
            await asyncio.sleep(0.05)
        assert "fresh" in gateway.runtime.router.groups
        ok = await client.post("/v1/chat/completions", json=CHAT | {"model": "fresh"})
        assert ok.status_code == 200
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def test_metrics_are_exposed_for_prometheus(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    await client.post("/v1/chat/completions", json=CHAT)
    await client.post("/v1/chat/completions", json=CHAT | {"model": "nope"})
    text = (await client.get("/metrics")).text
    assert 'gf_gateway_requests_total{model="m",operation="chat",status="200"} 1.0' in text
    assert 'gf_gateway_requests_total{model="other",operation="chat",status="404"} 1.0' in text
    assert "nope" not in text  # client-chosen names never become label values
    assert 'gf_gateway_breaker_state{deployment="a",model="m"} 0.0' in text
    assert 'gen_ai_client_token_usage_total{deployment="a",type="output"} 3.0' in text
    assert "gf_gateway_overhead_seconds_bucket" in text


def test_cli_check_and_hash_key(upstream: ScriptedUpstream, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    write_config(config, upstream, ["m", "n"])
    runner = CliRunner()
    checked = runner.invoke(gateway_cli, ["check", "--config", str(config)])
    assert checked.exit_code == 0 and "m: d-m" in checked.output
    config.write_text("deployments: [{model: m, provider: azure, base_url: 'http://x'}]")
    bad = runner.invoke(gateway_cli, ["check", "--config", str(config)])
    assert bad.exit_code == 1 and "azure_deployment" in bad.output
    digest = runner.invoke(gateway_cli, ["hash-key", "sk-some-key"]).output.strip()
    assert digest == hashlib.sha256(b"sk-some-key").hexdigest()
    usage = runner.invoke(gateway_cli, ["serve"])
    assert usage.exit_code == 2 and "--upstream" in usage.output
    both = runner.invoke(gateway_cli, ["serve", "--config", str(config), "--model", "m"])
    assert both.exit_code == 2


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"deployments": [{"name": "x", "model": "m", "base_url": "u"}] * 2}, "used twice"),
        (
            {
                "deployments": [{"model": "m", "base_url": "u"}],
                "models": [{"name": "m", "fallbacks": ["z"]}],
            },
            "unknown model 'z'",
        ),
        (
            {"deployments": [{"model": "m", "base_url": "u"}], "models": [{"name": "q"}]},
            "has no deployment",
        ),
        ({"deployments": [{"model": "m"}]}, "needs 'base_url'"),
        ({"deployments": [{"model": "m", "provider": "custom"}]}, "needs 'component'"),
        ({"rate_limits": [{"scope": "key"}]}, "needs 'rpm' or 'tpm'"),
        ({"routing": {"strategy": "random-ish"}}, "unknown routing strategy"),
        ({"rate_limits": [{"rpm": 5, "backend": "redis"}]}, "redis.url"),
    ],
)
def test_config_mistakes_name_the_field(data: dict[str, Any], field: str, tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=field):
        Gateway.from_file(config)


def test_custom_providers_come_from_the_factory() -> None:
    settings = GatewaySettings.model_validate(
        {
            "deployments": [
                {
                    "model": "m",
                    "provider": "custom",
                    "component": {"type": "genai_factory.gateway.routing:CostPolicy"},
                }
            ]
        }
    )
    with pytest.raises(ConfigError, match="does not implement ChatModel"):
        Gateway(settings)
