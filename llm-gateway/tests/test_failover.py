"""Failover against a fault-injecting upstream: every fault the issue lists, fast and exact.

Two real HTTP upstreams on 127.0.0.1 ("primary" and "backup") serve model "m" in that order;
each test scripts what they do and checks what the client saw and who served it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
import pytest

from genai_factory.gateway.testing import Fault, ScriptedUpstream

from .conftest import GatewayFactory, deployment, fast_timeouts, settings_for
from .test_api import CHAT, sse_events

pytestmark = pytest.mark.integration


# short enough to keep the suite fast, long enough for a busy machine's normal answers
TIMEOUTS = fast_timeouts(total_s=1.0, ttft_s=0.6, idle_s=0.4)


def pair(primary: ScriptedUpstream, backup: ScriptedUpstream, **options: Any) -> Any:
    return settings_for(
        deployment("primary", "m", primary, timeouts=TIMEOUTS),
        deployment("backup", "m", backup, timeouts=TIMEOUTS),
        routing={"strategy": "ordered"},
        **options,
    )


def stream_text(body: bytes) -> tuple[str, list[Any]]:
    events = sse_events(body)
    parsed = [orjson.loads(e) for e in events if e != "[DONE]"]
    text = "".join(
        (c["choices"][0]["delta"].get("content") or "") for c in parsed if c.get("choices")
    )
    return text, events


async def test_429_with_retry_after_is_waited_out_on_the_same_deployment(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.push(Fault.error(429, "slow down", retry_after=0.2))
    _, client = await gateway_client(pair(upstream, backup))
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2  # Retry-After honoured, not the tiny backoff
    assert response.headers["x-gf-deployment"] == "primary"
    assert response.headers["x-gf-attempts"] == "2"
    assert (upstream.served, backup.served) == (2, 0)


async def test_a_long_retry_after_moves_on_to_the_next_deployment_at_once(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.push(Fault.error(429, "slow down", retry_after=120))
    _, client = await gateway_client(pair(upstream, backup))
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200 and time.monotonic() - started < 1
    assert response.headers["x-gf-deployment"] == "backup"


async def test_persistent_429_everywhere_reaches_the_client_as_429_with_retry_after(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(429, "primary is rate limited", retry_after=0.01)
    backup.default = Fault.error(429, "backup is rate limited", retry_after=0.01)
    _, client = await gateway_client(pair(upstream, backup))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert "backup is rate limited" in response.json()["error"]["message"]
    assert (upstream.served, backup.served) == (2, 2)  # first try + 1 retry each


async def test_one_500_is_retried_on_the_same_deployment(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.push(Fault.error(500, "oops"))
    _, client = await gateway_client(pair(upstream, backup))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello from primary"
    assert (upstream.served, backup.served) == (2, 0)


async def test_503s_exhaust_the_retries_then_fail_over(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(503, "overloaded")
    _, client = await gateway_client(pair(upstream, backup))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello from backup"
    assert response.headers["x-gf-attempts"] == "3"


@pytest.mark.parametrize("fault", [Fault.reset(), Fault.close()], ids=["tcp-reset", "closed"])
async def test_a_broken_connection_is_retried(
    upstream: ScriptedUpstream,
    backup: ScriptedUpstream,
    gateway_client: GatewayFactory,
    fault: Fault,
) -> None:
    upstream.push(fault)
    _, client = await gateway_client(pair(upstream, backup))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-gf-deployment"] == "primary"
    assert upstream.served == 2


async def test_no_response_times_out_and_fails_over(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.hang()
    _, client = await gateway_client(pair(upstream, backup, retry={"max_retries": 0}))
    started = time.monotonic()
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert 1.0 <= time.monotonic() - started < 3.0
    assert response.headers["x-gf-deployment"] == "backup"


async def test_no_response_anywhere_is_a_504(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = backup.default = Fault.hang()
    _, client = await gateway_client(pair(upstream, backup, retry={"max_retries": 0}))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"


async def test_slow_first_token_switches_deployment_invisibly(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok(first_delay_s=5)
    _, client = await gateway_client(pair(upstream, backup, retry={"max_retries": 0}))
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    text, events = stream_text(response.content)
    assert response.status_code == 200
    assert text == "Hello from backup" and events[-1] == "[DONE]"
    assert response.headers["x-gf-deployment"] == "backup"


async def test_a_failure_before_the_first_token_fails_over_transparently(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok(malformed_at=0)  # breaks before any content
    backup.push(Fault.error(500, "hiccup"))  # and the backup's first try fails too
    _, client = await gateway_client(pair(upstream, backup, retry={"max_retries": 1}))
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    text, events = stream_text(response.content)
    assert text == "Hello from backup" and events[-1] == "[DONE]"
    assert response.headers["x-gf-attempts"] == "4"


async def test_all_deployments_failing_before_the_first_token_is_an_http_error(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = backup.default = Fault.error(503, "down")
    _, client = await gateway_client(pair(upstream, backup))
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    assert response.status_code == 502
    assert "down" in response.json()["error"]["message"]


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
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    assert response.status_code == 200
    text, events = stream_text(response.content)
    assert text.startswith("one two")
    assert "[DONE]" not in events
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == code
    assert not any(
        c.get("choices") and c["choices"][0].get("finish_reason")
        for c in map(orjson.loads, events[:-1])
    )
    assert backup.served == 0  # no switching once the client has seen tokens
    primary = gateway.runtime.router.deployments[0]
    assert primary.counters.failures == 1 and primary.in_flight == 0


async def test_missing_done_after_a_finish_is_still_a_complete_answer(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.ok("all here", done=False)
    _, client = await gateway_client(pair(upstream, backup))
    response = await client.post("/v1/chat/completions", json=CHAT | {"stream": True})
    text, events = stream_text(response.content)
    assert text == "all here" and events[-1] == "[DONE]"


async def test_context_length_errors_go_to_the_context_window_fallback(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(
        400, "This model's maximum context length is 2048 tokens", code="context_length_exceeded"
    )
    settings = settings_for(
        deployment("small", "m", upstream),
        deployment("large", "m-large", backup),
        models=[{"name": "m", "context_window_fallbacks": ["m-large"]}],
    )
    _, client = await gateway_client(settings)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-gf-deployment"] == "large"
    assert upstream.served == 1  # a context error is not retried


async def test_a_context_length_error_without_fallback_passes_through(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(400, "Requested tokens (3000) exceed context window of 2048")
    _, client = await gateway_client(settings_for(deployment("small", "m", upstream)))
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert "exceed context window" in response.json()["error"]["message"]


async def test_a_request_too_big_for_the_configured_window_routes_to_the_fallback(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    settings = settings_for(
        deployment("small", "m", upstream, context_window=64),
        deployment("large", "m-large", backup, context_window=100_000),
        models=[{"name": "m", "context_window_fallbacks": ["m-large"]}],
    )
    _, client = await gateway_client(settings)
    long = CHAT | {"messages": [{"role": "user", "content": "word " * 200}]}
    response = await client.post("/v1/chat/completions", json=long)
    assert response.headers["x-gf-deployment"] == "large"
    assert upstream.served == 0  # never sent where it cannot fit


async def test_content_filter_errors_go_to_the_content_policy_fallback(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(
        400, "The response was filtered due to the prompt triggering content management policy"
    )
    settings = settings_for(
        deployment("strict", "m", upstream),
        deployment("lenient", "m-lenient", backup),
        models=[{"name": "m", "content_policy_fallbacks": ["m-lenient"]}],
    )
    _, client = await gateway_client(settings)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 200
    assert response.headers["x-gf-deployment"] == "lenient"


async def test_generic_fallback_models_take_over_when_a_group_is_down(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(500, "down")
    settings = settings_for(
        deployment("a", "m", upstream),
        deployment("b", "m-other", backup),
        models=[{"name": "m", "fallbacks": ["m-other"]}],
    )
    _, client = await gateway_client(settings)
    response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.headers["x-gf-deployment"] == "b"
    off = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"x-gf-route": "fallbacks=off"}
    )
    assert off.status_code == 502


async def test_a_flapping_primary_trips_its_breaker_and_is_probed_after_cooldown(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(500, "flap")
    gateway, client = await gateway_client(
        pair(
            upstream,
            backup,
            retry={"max_retries": 0},
            breaker={"failure_threshold": 2, "cooldown_s": 0.3},
        )
    )
    for _ in range(2):  # two failures open the breaker; the backup answers each time
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.headers["x-gf-deployment"] == "backup"
    primary, second = gateway.runtime.router.deployments
    assert primary.breaker.state == "open"
    for _ in range(3):  # while open, the primary is not even tried
        await client.post("/v1/chat/completions", json=CHAT)
    assert upstream.served == 2
    await asyncio.sleep(0.35)  # cooldown over: the next request probes the primary
    upstream.default = Fault.ok()
    probe = await client.post("/v1/chat/completions", json=CHAT)
    assert probe.headers["x-gf-deployment"] == "primary"
    assert primary.breaker.state == "closed"
    assert (upstream.served, backup.served) == (3, 5)
    # the accounting agrees: counters, admin view and metrics
    assert (primary.counters.served, primary.counters.failures) == (1, 2)
    assert (second.counters.served, second.counters.failures) == (5, 0)
    metrics = (await client.get("/metrics")).text
    assert 'gf_gateway_deployment_requests_total{deployment="backup",outcome="ok"} 5.0' in metrics
    assert (
        'gf_gateway_deployment_requests_total{deployment="primary",outcome="error"} 2.0' in metrics
    )


async def test_every_breaker_open_answers_503_with_retry_after(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    upstream.default = Fault.error(500, "down")
    _, client = await gateway_client(
        settings_for(
            deployment("only", "m", upstream),
            retry={"max_retries": 0},
            breaker={"failure_threshold": 1, "cooldown_s": 30},
        )
    )
    first = await client.post("/v1/chat/completions", json=CHAT)
    assert first.status_code == 502
    second = await client.post("/v1/chat/completions", json=CHAT)
    assert second.status_code == 503
    assert int(second.headers["retry-after"]) >= 29
    assert upstream.served == 1
    ready = await client.get("/health/readiness")
    assert ready.status_code == 503


async def test_a_client_leaving_mid_stream_frees_the_deployment(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    from genai_factory.gateway.observe import RequestSummary
    from genai_factory.gateway.pipeline import RequestContext
    from genai_factory.gateway.routing import route_request_for
    from genai_factory.shared.models import ChatCompletionRequest

    class Seen:
        def __init__(self) -> None:
            self.summaries: list[RequestSummary] = []

        def observe(self, summary: RequestSummary) -> None:
            self.summaries.append(summary)

    upstream.default = Fault.ok("one two three four five six", chunk_delay_s=0.05)
    gateway, _ = await gateway_client(
        settings_for(
            deployment(
                "primary", "m", upstream, timeouts=fast_timeouts(ttft_s=10, idle_s=10, total_s=20)
            )
        )
    )
    seen = Seen()
    gateway.runtime.pipeline.observe.observers.append(seen)
    chat = ChatCompletionRequest.model_validate(CHAT | {"stream": True})
    ctx = RequestContext(request_id="r", operation="chat", route=route_request_for(chat), chat=chat)
    chunks = await gateway.runtime.pipeline.chat_stream(ctx)
    first = await anext(chunks)
    assert first.choices
    primary = gateway.runtime.router.deployments[0]
    assert primary.in_flight == 1
    await chunks.aclose()  # the client disconnected
    assert primary.in_flight == 0 and primary.breaker.state == "closed"
    assert primary.counters.failures == 0, ctx.record.attempts  # leaving is not a failure
    assert seen.summaries[-1].status == 499
