"""Streamed legacy completions (``/v1/completions`` with ``stream: true``).

OpenAI's ``text_completion`` events ending in ``[DONE]``, and the chat streams' failover rules:
a failure before the first token switches deployment invisibly, one after it ends the stream
with an error event and no ``[DONE]``. Upstreams are real HTTP servers on 127.0.0.1; a provider
without a completions API (Anthropic) streams through its chat API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.gateway.app import create_app
from genai_factory.gateway.runtime import Gateway
from genai_factory.gateway.testing import Fault, ScriptedUpstream
from genai_factory.gateway.testing.hosted import AnthropicUpstream

from .conftest import GatewayFactory, deployment, fast_timeouts, settings_for
from .test_api import sse_events
from .test_failover import TIMEOUTS, pair

pytestmark = pytest.mark.integration

PROMPT = {"model": "m", "prompt": "Once upon a time", "max_tokens": 12, "stream": True}


def completion_text(body: bytes) -> tuple[str, list[str], list[dict[str, Any]]]:
    events = sse_events(body)
    parsed = [orjson.loads(e) for e in events if e != "[DONE]"]
    text = "".join(c["choices"][0]["text"] for c in parsed if c.get("choices"))
    return text, events, parsed


async def test_a_streamed_completion_speaks_openai_text_completion_events(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok("the end of the story")
    _, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    response = await client.post("/v1/completions", json=PROMPT, headers={"x-request-id": "r1"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-request-id"] == "r1" and "x-gf-overhead-ms" in response.headers
    assert response.headers["x-gf-deployment"] == "a"
    text, events, chunks = completion_text(response.content)
    assert events[-1] == "[DONE]" and text == "the end of the story"
    for chunk in chunks:
        assert chunk["object"] == "text_completion" and chunk["id"].startswith("cmpl-")
        assert set(chunk["choices"][0]) == {"index", "text", "logprobs", "finish_reason"}
    assert [c["choices"][0]["finish_reason"] for c in chunks][-1] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == len(["the", "end", "of", "the", "story"])
    # the upstream's native completions API, streamed, with the caller's prompt
    assert upstream.paths == ["/v1/completions"]
    assert upstream.requests[0]["stream"] is True
    assert upstream.requests[0]["prompt"] == "Once upon a time"


async def test_usage_of_a_streamed_completion_is_accounted(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    gateway, client = await gateway_client(settings_for(deployment("a", "m", upstream)))
    response = await client.post("/v1/completions", json=PROMPT)
    assert response.status_code == 200
    counters = gateway.runtime.router.deployments[0].counters
    assert counters.served == 1
    assert counters.completion_tokens == len(["Hello", "from", "primary"])
    assert gateway.runtime.router.deployments[0].in_flight == 0


async def test_a_failure_before_the_first_token_switches_deployment_invisibly(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok(malformed_at=0)  # breaks before any text
    backup.push(Fault.error(503, "hiccup"))  # and the backup's first try fails too
    _, client = await gateway_client(pair(upstream, backup, retry={"max_retries": 1}))
    response = await client.post("/v1/completions", json=PROMPT)
    text, events, _ = completion_text(response.content)
    assert response.status_code == 200
    assert text == "Hello from backup" and events[-1] == "[DONE]"
    assert response.headers["x-gf-deployment"] == "backup"
    assert response.headers["x-gf-attempts"] == "4"


async def test_a_slow_first_token_switches_deployment(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok(first_delay_s=5)
    _, client = await gateway_client(pair(upstream, backup, retry={"max_retries": 0}))
    response = await client.post("/v1/completions", json=PROMPT)
    text, events, _ = completion_text(response.content)
    assert text == "Hello from backup" and events[-1] == "[DONE]"


async def test_every_deployment_failing_before_the_first_token_is_an_http_error(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = backup.default = Fault.error(503, "all down")
    _, client = await gateway_client(pair(upstream, backup))
    response = await client.post("/v1/completions", json=PROMPT)
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("application/json")
    assert "all down" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (Fault.ok("one two three four five", cut_after=2), "upstream_connection"),
        (Fault.ok("one two three four five", stall_after=2), "upstream_timeout"),
        (Fault.ok("one two three four five", malformed_at=2), "malformed_response"),
        (Fault.ok("one two three four five", done=False, finish=False), "stream_truncated"),
    ],
    ids=["cut-mid-answer", "stalled", "malformed-chunk", "no-done-no-finish"],
)
async def test_a_failure_after_the_first_token_ends_with_an_error_event_never_done(
    upstream: ScriptedUpstream,
    backup: ScriptedUpstream,
    gateway_client: GatewayFactory,
    fault: Fault,
    code: str,
) -> None:
    upstream.default = fault
    gateway, client = await gateway_client(pair(upstream, backup))
    response = await client.post("/v1/completions", json=PROMPT)
    assert response.status_code == 200
    events = sse_events(response.content)
    assert "[DONE]" not in events
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == code
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks).startswith("one two")
    assert not any(c["choices"][0]["finish_reason"] for c in chunks)
    assert backup.served == 0  # no switching once the client has seen text
    primary = gateway.runtime.router.deployments[0]
    assert primary.counters.failures == 1 and primary.in_flight == 0


async def test_a_provider_without_a_completions_api_streams_through_chat(
    gateway_client: GatewayFactory,
) -> None:
    async with AnthropicUpstream() as server:
        settings = settings_for(
            {
                "name": "claude",
                "model": "m",
                "provider": "anthropic",
                "upstream_model": "claude-test",
                "api_key": server.api_key,
                "base_url": server.url,
                "timeouts": fast_timeouts(),
            }
        )
        _, client = await gateway_client(settings)
        response = await client.post("/v1/completions", json=PROMPT)
        assert response.status_code == 200, response.text
        text, events, chunks = completion_text(response.content)
        assert events[-1] == "[DONE]" and text
        assert all(c["object"] == "text_completion" for c in chunks)
        sent = server.requests[-1]
        assert sent["stream"] is True
        assert sent["messages"][-1]["content"] in (
            "Once upon a time",
            [{"type": "text", "text": "Once upon a time"}],
        )


async def test_streamed_completions_are_rate_limited_and_authenticated(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GW_TEST_KEYS", "sk-completions-0123456789")
    _, client = await gateway_client(
        settings_for(
            deployment("a", "m", upstream, timeouts=TIMEOUTS),
            auth={"keys_env": "GW_TEST_KEYS"},
            rate_limits=[{"scope": "key", "rpm": 1}],
        )
    )
    assert (await client.post("/v1/completions", json=PROMPT)).status_code == 401
    headers = {"authorization": "Bearer sk-completions-0123456789"}
    first = await client.post("/v1/completions", json=PROMPT, headers=headers)
    assert first.status_code == 200 and first.headers["x-ratelimit-remaining-requests"] == "0"
    second = await client.post("/v1/completions", json=PROMPT, headers=headers)
    assert second.status_code == 429 and "retry-after" in second.headers
    assert upstream.served == 1


# ------------------------------------------------------------------ request validation (Hypothesis)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 300)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=10,
)
completion_like = st.fixed_dictionaries(
    {"stream": st.just(True)},
    optional={
        "model": st.sampled_from(["m", "", "unknown", "x" * 300]) | json_values,
        "prompt": st.text(max_size=40) | st.lists(st.text(max_size=10), max_size=3) | json_values,
        "max_tokens": st.integers(-3, 64) | json_values,
        "temperature": st.floats(-1, 3) | json_values,
        "top_p": st.floats(-0.5, 1.5) | json_values,
        "n": st.integers(-1, 200) | json_values,
        "stop": json_values,
    },
)


@pytest.fixture(scope="module")
def live() -> Iterator[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient, ScriptedUpstream]]:
    """One loop, one real upstream and one in-process gateway for every example."""
    loop = asyncio.new_event_loop()
    upstream = loop.run_until_complete(ScriptedUpstream("prop").start())
    gateway = Gateway(settings_for(deployment("a", "m", upstream), retry={"max_retries": 0}))
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(gateway)), base_url="http://g"
    )
    yield loop, client, upstream
    loop.run_until_complete(client.aclose())
    loop.run_until_complete(gateway.aclose())
    loop.run_until_complete(upstream.stop())
    loop.close()


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(completion_like)
def test_any_streamed_completion_request_is_a_clean_stream_or_a_4xx(
    live: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient, ScriptedUpstream],
    body: dict[str, Any],
) -> None:
    loop, client, upstream = live
    before = upstream.served
    response = loop.run_until_complete(client.post("/v1/completions", content=orjson.dumps(body)))
    if response.status_code == 200:
        # only a request the model schema accepts reaches the upstream, and streams back whole
        assert isinstance(body.get("prompt"), str | list) and body.get("model") == "m"
        assert response.headers["content-type"].startswith("text/event-stream")
        text, events, _ = completion_text(response.content)
        assert events[-1] == "[DONE]" and text == "Hello from prop"
        assert upstream.served == before + 1
    else:
        assert response.status_code in (400, 404), response.text
        error = response.json()["error"]
        assert error["message"] and error["type"]
        assert upstream.served == before  # refused before anything went upstream
