"""Rate limits: both algorithms in process and in Redis, the gateway's 429s and headers, and
exact admission across three gateway processes sharing one Redis."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections import deque
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.gateway.ratelimit import (
    Admission,
    RateLimitExceeded,
    RateLimitRule,
    SlidingWindowLimiter,
    TokenBucketLimiter,
)
from genai_factory.gateway.redis_ratelimit import RedisSlidingWindowLimiter, RedisTokenBucketLimiter
from genai_factory.gateway.testing import ScriptedUpstream
from genai_factory.shared.models import Principal

from .conftest import GatewayFactory, deployment, free_port, settings_for, wait_for_http
from .test_api import CHAT


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_token_bucket_bursts_refills_and_says_when_to_retry() -> None:
    clock = Clock()
    bucket = TokenBucketLimiter(limit=4, period_s=60, clock=clock)
    decisions = [await bucket.acquire("k") for _ in range(5)]
    assert [d.allowed for d in decisions] == [True, True, True, True, False]
    assert decisions[3].remaining == 0 and decisions[4].retry_after_s == pytest.approx(15)
    clock.now += 15  # one token refilled
    assert (await bucket.acquire("k")).allowed
    assert not (await bucket.acquire("k")).allowed
    assert (await bucket.acquire("other")).allowed  # keys are independent


async def test_token_bucket_forgets_idle_keys_beyond_max_keys() -> None:
    bucket = TokenBucketLimiter(limit=1, max_keys=2, clock=Clock())
    for key in ("a", "b", "c"):
        await bucket.acquire(key)
    assert (await bucket.acquire("a")).allowed  # "a" was dropped, so it starts full again


async def test_sliding_window_slides_and_refuses_what_can_never_fit() -> None:
    clock = Clock(0.0)
    window = SlidingWindowLimiter(limit=3, window_s=10, slots=10, clock=clock)
    assert [(await window.acquire("k")).allowed for _ in range(3)] == [True] * 3
    refused = await window.acquire("k")
    assert not refused.allowed and refused.retry_after_s == pytest.approx(10)
    clock.now = 9.9
    assert not (await window.acquire("k")).allowed
    clock.now = 10.0  # the first slot left the window
    assert (await window.acquire("k")).allowed
    huge = await window.acquire("other", cost=4)
    assert not huge.allowed and huge.retry_after_s == 10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.floats(min_value=0, max_value=3), st.integers(min_value=1, max_value=4)),
        max_size=60,
    )
)
def test_sliding_window_never_admits_more_than_the_limit_in_any_window(
    steps: list[tuple[float, int]],
) -> None:
    clock = Clock(0.0)
    window = SlidingWindowLimiter(limit=6, window_s=10, slots=10, clock=clock)
    admitted: deque[tuple[float, int]] = deque()

    async def run() -> None:
        for dt, cost in steps:
            clock.now += dt
            if (await window.acquire("k", cost)).allowed:
                admitted.append((clock.now, cost))
            # exact to one slot: nothing admitted in the last (window - slot) seconds exceeds it
            recent = sum(c for t, c in admitted if t > clock.now - 9.0)
            assert recent <= 6

    asyncio.run(run())


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", ["token_bucket", "sliding_window"])
async def test_redis_limiters_admit_exactly_the_limit_under_concurrency(
    redis_url: str, redis_namespace: str, algorithm: str
) -> None:
    limiter: RedisTokenBucketLimiter | RedisSlidingWindowLimiter
    if algorithm == "token_bucket":
        limiter = RedisTokenBucketLimiter(
            redis_url, limit=20, period_s=3600, key_prefix=redis_namespace
        )
    else:
        limiter = RedisSlidingWindowLimiter(
            redis_url, limit=20, window_s=60, key_prefix=redis_namespace
        )
    try:
        decisions = await asyncio.gather(*(limiter.acquire("key:a:requests") for _ in range(50)))
        assert sum(d.allowed for d in decisions) == 20
        refused = [d for d in decisions if not d.allowed]
        assert all(d.remaining == 0 and d.retry_after_s and d.retry_after_s > 0 for d in refused)
        assert (await limiter.acquire("key:b:requests", cost=5)).remaining == 15
        assert not (await limiter.acquire("key:c:tokens", cost=21)).allowed
    finally:
        await limiter.aclose()


async def test_admission_applies_each_scope_and_unit() -> None:
    admission = Admission(
        [
            RateLimitRule("key", "requests", SlidingWindowLimiter(2)),
            RateLimitRule("org", "tokens", SlidingWindowLimiter(100)),
            RateLimitRule("team", "requests", SlidingWindowLimiter(1)),  # no team: not applied
        ]
    )
    alice = Principal(subject="alice", org_id="acme")
    decisions = await admission.admit(alice, tokens=60)
    assert [unit for unit, _ in decisions] == ["requests", "tokens"]
    with pytest.raises(RateLimitExceeded) as refused:
        await admission.admit(Principal(subject="bob", org_id="acme"), tokens=60)
    assert refused.value.headers()["x-ratelimit-remaining-tokens"] == "40"


async def test_the_gateway_answers_429_with_retry_after_and_ratelimit_headers(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    settings = settings_for(
        deployment("a", "m", upstream),
        auth={
            "keys": [
                {"key": "sk-alice-0001", "subject": "alice"},
                {"key": "sk-bob-00000001", "subject": "bob"},
            ],
            "keys_env": None,
        },
        rate_limits=[{"scope": "key", "rpm": 2, "tpm": 10_000}],
    )
    _, client = await gateway_client(settings)
    alice = {"authorization": "Bearer sk-alice-0001"}
    first = await client.post("/v1/chat/completions", json=CHAT, headers=alice)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-limit-tokens"] == "10000"
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    await client.post("/v1/chat/completions", json=CHAT, headers=alice)
    third = await client.post("/v1/chat/completions", json=CHAT, headers=alice)
    assert third.status_code == 429
    assert third.json()["error"]["type"] == "rate_limit_exceeded"
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    bob = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"authorization": "Bearer sk-bob-00000001"}
    )
    assert bob.status_code == 200  # per-key limits
    assert upstream.served == 3


async def test_token_limits_count_the_request_estimate(
    upstream: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    settings = settings_for(
        deployment("a", "m", upstream), rate_limits=[{"scope": "global", "tpm": 300}]
    )
    _, client = await gateway_client(settings)
    ok = await client.post("/v1/chat/completions", json=CHAT | {"max_tokens": 200})
    assert ok.status_code == 200
    refused = await client.post("/v1/chat/completions", json=CHAT | {"max_tokens": 200})
    assert refused.status_code == 429 and "tokens" in refused.json()["error"]["message"]


def start_gateway(config: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "genai_factory.gateway", "serve", "--config", str(config)]
    return subprocess.Popen(
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


@pytest.mark.e2e
@pytest.mark.slow
async def test_three_gateway_processes_share_one_exact_limit(
    redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    limit, requests = 25, 75
    async with ScriptedUpstream("shared") as upstream:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "deployments": [{"name": "a", "model": "m", "base_url": upstream.url}],
                    "rate_limits": [
                        {"scope": "global", "rpm": limit, "backend": "redis", "window_s": 600}
                    ],
                    "redis": {"url": redis_url, "key_prefix": redis_namespace},
                    "auth": {"keys_env": None},
                    "cache": {"enabled": False},
                    "log_level": "WARNING",
                }
            )
        )
        ports = [free_port() for _ in range(3)]
        processes = [start_gateway(config, port) for port in ports]
        try:
            for port, process in zip(ports, processes, strict=True):
                await asyncio.to_thread(
                    wait_for_http, f"http://127.0.0.1:{port}/health/liveness", 30, process
                )
            async with httpx.AsyncClient(timeout=30) as client:
                answers = await asyncio.gather(
                    *(
                        client.post(
                            f"http://127.0.0.1:{ports[i % 3]}/v1/chat/completions", json=CHAT
                        )
                        for i in range(requests)
                    )
                )
            statuses = [a.status_code for a in answers]
            assert statuses.count(200) == limit
            assert statuses.count(429) == requests - limit
            assert upstream.served == limit
            per_process = {
                p: sum(1 for i, a in enumerate(answers) if i % 3 == n and a.status_code == 200)
                for n, p in enumerate(ports)
            }
            assert sum(per_process.values()) == limit
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
