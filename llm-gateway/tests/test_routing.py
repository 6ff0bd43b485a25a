"""Routing policies, the capability and health filters, hints, and pluggable policies."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.gateway.breaker import CircuitBreaker
from genai_factory.gateway.deployment import Capabilities, Deployment
from genai_factory.gateway.providers.openai import OpenAICompatibleProvider
from genai_factory.gateway.routing import (
    CapabilityPolicy,
    CostPolicy,
    LatencyPolicy,
    LeastBusyPolicy,
    ModelGroup,
    OrderedPolicy,
    RouteHints,
    Router,
    RouteRequest,
    WeightedPolicy,
    route_request_for,
)
from genai_factory.gateway.runtime import build_router
from genai_factory.gateway.testing import ScriptedUpstream
from genai_factory.shared.errors import BadRequest, NotFound, ServiceUnavailable
from genai_factory.shared.models import ChatCompletionRequest

from .conftest import GatewayFactory, deployment, settings_for
from .test_api import CHAT

pytestmark = pytest.mark.unit


def dep(name: str, **fields: Any) -> Deployment:
    provider = OpenAICompatibleProvider("http://127.0.0.1:9/v1", model=name)
    return Deployment(name=name, model="m", provider=provider, **fields)


def order(router: Router, request: RouteRequest) -> list[str]:
    plan = router.plan(request)
    names = []
    while (d := plan.next(None)) is not None:
        names.append(d.name)
    return names


def test_cost_policy_puts_the_cheapest_estimate_first() -> None:
    cheap_in = dep("cheap-input", input_cost_per_token=1e-7, output_cost_per_token=1e-5)
    cheap_out = dep("cheap-output", input_cost_per_token=1e-5, output_cost_per_token=1e-7)
    router = Router([ModelGroup("m", [cheap_in, cheap_out])], policy=CostPolicy())
    long_prompt = RouteRequest(model="m", prompt_tokens=10_000, output_tokens=10)
    long_answer = RouteRequest(model="m", prompt_tokens=10, output_tokens=10_000)
    assert order(router, long_prompt) == ["cheap-input", "cheap-output"]
    assert order(router, long_answer) == ["cheap-output", "cheap-input"]


def test_latency_policy_tries_unmeasured_first_then_the_fastest() -> None:
    fast, slow, new = dep("fast"), dep("slow"), dep("new")
    for _ in range(3):
        fast.stats.observe_total(0.1)
        slow.stats.observe_total(1.0)
    slow.stats.observe_ttft(0.05)
    fast.stats.observe_ttft(0.5)
    router = Router([ModelGroup("m", [slow, fast, new])], policy=LatencyPolicy())
    assert order(router, RouteRequest(model="m")) == ["new", "fast", "slow"]
    assert order(router, RouteRequest(model="m", stream=True)) == ["new", "slow", "fast"]


def test_ewma_follows_recent_latency() -> None:
    d = dep("d")
    d.stats.observe_total(1.0)
    for _ in range(20):
        d.stats.observe_total(0.1)
    assert d.stats.total_s is not None and d.stats.total_s < 0.11


def test_weighted_policy_spreads_load_by_weight() -> None:
    heavy, light = dep("heavy", weight=3.0), dep("light", weight=1.0)
    router = Router([ModelGroup("m", [heavy, light])], policy=WeightedPolicy(seed=7))
    firsts = Counter(order(router, RouteRequest(model="m"))[0] for _ in range(2000))
    assert 0.70 < firsts["heavy"] / 2000 < 0.80


def test_least_busy_prefers_fewest_in_flight() -> None:
    busy, idle = dep("busy"), dep("idle")
    busy.in_flight = 5
    router = Router([ModelGroup("m", [busy, idle])], policy=LeastBusyPolicy(seed=1))
    assert order(router, RouteRequest(model="m")) == ["idle", "busy"]


def test_capability_filter_and_best_fit() -> None:
    small = dep("small", capabilities=Capabilities(context_window=1000, tools=False))
    big = dep("big", capabilities=Capabilities(context_window=100_000, vision=True))
    mid = dep("mid", capabilities=Capabilities(context_window=8000, json_mode=False))
    router = Router([ModelGroup("m", [big, mid, small])], policy=CapabilityPolicy())
    assert order(router, RouteRequest(model="m", prompt_tokens=100)) == ["small", "mid", "big"]
    assert order(router, RouteRequest(model="m", prompt_tokens=5000)) == ["mid", "big"]
    assert order(router, RouteRequest(model="m", needs_tools=True)) == ["mid", "big"]
    assert order(router, RouteRequest(model="m", needs_json=True)) == ["small", "big"]
    assert order(router, RouteRequest(model="m", needs_vision=True)) == ["big"]
    plan = router.plan(RouteRequest(model="m", prompt_tokens=10**6))
    assert plan.next(None) is None
    error = plan.exhausted_error(None)
    assert isinstance(error, BadRequest) and error.code == "context_length_exceeded"


def test_unhealthy_and_full_deployments_are_skipped() -> None:
    broken = dep("broken", breaker=CircuitBreaker(failure_threshold=1, cooldown_s=60))
    broken.breaker.record_failure()
    full = dep("full", max_in_flight=1)
    full.in_flight = 1
    ok = dep("ok")
    router = Router([ModelGroup("m", [broken, full, ok])], policy=OrderedPolicy())
    assert order(router, RouteRequest(model="m")) == ["ok"]
    none_left = Router([ModelGroup("m", [broken])], policy=OrderedPolicy()).plan(
        RouteRequest(model="m")
    )
    assert none_left.next(None) is None
    error = none_left.exhausted_error(None)
    assert isinstance(error, ServiceUnavailable) and error.retry_after and error.retry_after > 50


def test_hints_pin_a_deployment_or_pick_a_strategy() -> None:
    a, b = dep("a", input_cost_per_token=1.0), dep("b")
    router = Router([ModelGroup("m", [a, b])], policy=OrderedPolicy())
    assert order(router, RouteRequest(model="m", hints=RouteHints(deployment="b"))) == ["b"]
    cost_hint = RouteRequest(model="m", prompt_tokens=10, hints=RouteHints(strategy="cost"))
    assert order(router, cost_hint) == ["b", "a"]
    with pytest.raises(BadRequest):
        router.plan(RouteRequest(model="m", hints=RouteHints(strategy="magic")))
    with pytest.raises(NotFound):
        router.plan(RouteRequest(model="other"))
    pinned_elsewhere = router.plan(RouteRequest(model="m", hints=RouteHints(deployment="zzz")))
    assert pinned_elsewhere.next(None) is None
    assert isinstance(pinned_elsewhere.exhausted_error(None), NotFound)


def test_any_object_with_rank_is_a_policy() -> None:
    class Reverse:
        def rank(self, candidates: Sequence[Deployment], request: RouteRequest) -> list[Deployment]:
            return list(reversed(candidates))

    router = Router([ModelGroup("m", [dep("a"), dep("b"), dep("c")])], policy=Reverse())
    assert order(router, RouteRequest(model="m")) == ["c", "b", "a"]


def test_policies_are_built_from_config_through_the_factory(upstream: Any) -> None:
    settings = settings_for(
        {"name": "x", "model": "m", "base_url": "http://127.0.0.1:9/v1"},
        {"name": "y", "model": "n", "base_url": "http://127.0.0.1:9/v1"},
        routing={
            "policy": {
                "type": "genai_factory.gateway.routing:WeightedPolicy",
                "params": {"seed": 3},
            }
        },
        models=[{"name": "n", "strategy": "cost"}],
    )
    router, _ = build_router(settings)
    assert isinstance(router.policy, WeightedPolicy) and router.policy.seed == 3
    assert isinstance(router.groups["n"].policy, CostPolicy)


def test_route_request_reads_what_a_request_needs() -> None:
    request = ChatCompletionRequest.model_validate(
        CHAT
        | {
            "max_tokens": 99,
            "stream": True,
            "response_format": {"type": "json_object"},
            "tools": [{"type": "function", "function": {"name": "t"}}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "look"},
                        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                    ],
                }
            ],
        }
    )
    route = route_request_for(request)
    assert (route.output_tokens, route.stream) == (99, True)
    assert route.needs_json and route.needs_tools and route.needs_vision
    assert route.prompt_tokens > 256


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a busy CI box
@given(st.text(max_size=80))
def test_route_hints_parse_or_refuse_cleanly(header: str) -> None:
    try:
        hints = RouteHints.parse(header)
    except BadRequest as exc:
        assert exc.param == "x-gf-route"
    else:
        assert isinstance(hints.fallbacks, bool)


async def test_the_route_header_reaches_the_router(
    upstream: ScriptedUpstream, backup: ScriptedUpstream, gateway_client: GatewayFactory
) -> None:
    _, client = await gateway_client(
        settings_for(deployment("a", "m", upstream), deployment("b", "m", backup))
    )
    pinned = await client.post(
        "/v1/chat/completions", json=CHAT, headers={"x-gf-route": "deployment=b"}
    )
    assert pinned.headers["x-gf-deployment"] == "b" and upstream.served == 0
    bad = await client.post("/v1/chat/completions", json=CHAT, headers={"x-gf-route": "nonsense"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-gf-route"
