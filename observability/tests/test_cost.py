"""Cost attribution from CostRecords, alert rules, and delivery to a real webhook on 127.0.0.1."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from genai_factory.observability.alerts import (
    AlertRule,
    LogNotifier,
    StoreNotifier,
    WebhookNotifier,
    signature_ok,
)
from genai_factory.observability.cost import CostTracker, scope_keys
from genai_factory.observability.pricing import PriceTable
from genai_factory.observability.store import TelemetryStore
from genai_factory.shared.contracts import SpendLedger
from genai_factory.shared.errors import ValidationError
from genai_factory.shared.models import CostRecord

pytestmark = pytest.mark.unit


def record(**fields: Any) -> CostRecord:
    base: dict[str, Any] = {
        "request_id": "r",
        "model": "gpt-4o-mini",
        "org_id": "acme",
        "team_id": "search",
        "user_id": "u1",
        "key_id": "k1",
        "route": "/v1/chat/completions",
        "tags": {"feature": "summarise"},
        "input_tokens": 1000,
        "output_tokens": 500,
    }
    base.update(fields)
    return CostRecord(**base)


async def test_every_record_is_attributed_to_every_dimension(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    tracker = CostTracker(store=store, price_table=PriceTable.load())
    assert isinstance(tracker, SpendLedger)
    await tracker.record(record())  # priced: 1000 * 0.15 + 500 * 0.60 per 1M = 0.00045
    await tracker.record(
        record(team_id="ads", model="gpt-4o", user_id="u2", cost_usd=Decimal("0.5"))
    )
    await tracker.record(record(cache_hit=True))  # a cache hit costs nothing
    assert await tracker.total("all") == Decimal("0.500450")
    assert await tracker.total("team:search") == Decimal("0.000450")
    assert await tracker.total("model:gpt-4o") == Decimal("0.5")
    assert await tracker.total("feature:summarise") == Decimal("0.500450")
    assert await tracker.total("user:nobody") == Decimal(0)
    teams = tracker.breakdown("team")
    assert list(teams) == ["ads", "search"] and teams["search"]["requests"] == 2
    assert teams["search"]["cache_hits"] == 1
    assert tracker.breakdown("all")["all"]["requests"] == 3
    # the same totals from SQLite, restricted in time
    assert await tracker.total("team:search", since_epoch_s=0) == Decimal("0.000450")
    assert await tracker.total("key:k1", since_epoch_s=0) == Decimal("0.500450")
    future = (datetime.now(UTC) + timedelta(hours=1)).timestamp()
    assert await tracker.total("all", since_epoch_s=future) == 0
    by_model = store.cost(since_ns=0, group_by="model")
    assert by_model["totals"]["gpt-4o"]["cost_usd"] == 0.5
    store.close()


async def test_scopes_are_validated() -> None:
    tracker = CostTracker()
    with pytest.raises(ValidationError, match="scope"):
        await tracker.total("planet:mars")
    with pytest.raises(ValidationError, match="needs a store"):
        await tracker.total("all", since_epoch_s=0)
    assert scope_keys(CostRecord(request_id="r", model="m")) == ["all", "model:m"]


async def test_unknown_models_stay_unpriced_and_memory_is_bounded() -> None:
    tracker = CostTracker(price_table=PriceTable.load(), max_scopes=5)
    for i in range(20):
        await tracker.record(record(model="mystery", user_id=f"user-{i}"))
    assert await tracker.total("all") == 0
    assert len(tracker._totals) <= 5


def webhook_app(received: list[dict[str, Any]], status: list[int]) -> Starlette:
    async def hook(request: Request) -> JSONResponse:
        body = await request.body()
        received.append({"body": json.loads(body), "raw": body, "headers": dict(request.headers)})
        return JSONResponse({"ok": True}, status_code=status[0] if status else 200)

    return Starlette(routes=[Route("/hook", hook, methods=["POST"])])


async def test_a_threshold_alert_reaches_a_signed_webhook_the_log_and_the_store(
    tmp_path: Path, serve: Any, caplog: pytest.LogCaptureFixture
) -> None:
    received: list[dict[str, Any]] = []
    server = serve(webhook_app(received, []))
    store = TelemetryStore(tmp_path / "t.db")
    rule = AlertRule(
        name="search-burn",
        kind="threshold",
        dimension="team",
        value="search",
        threshold=1.0,
        window_s=3600,
        severity="critical",
    )
    webhook = WebhookNotifier(f"{server.url}/hook", secret="whsec-test-123")
    tracker = CostTracker(
        store=store, rules=[rule], notifiers=[webhook, LogNotifier(), StoreNotifier(store)]
    )
    caplog.set_level(logging.WARNING, logger="genai_factory.observability.alerts")
    assert await tracker.record_many([record(cost_usd=Decimal("0.6"))]) == []
    fired = await tracker.record_many([record(cost_usd=Decimal("0.6"))])
    assert [a.scope for a in fired] == ["team:search"]
    await tracker.record(record(cost_usd=Decimal("5")))  # cooling down: no second alert
    await tracker.record(record(team_id="ads", cost_usd=Decimal("50")))  # rule is for search only
    await tracker.drain()
    assert len(received) == 1 and webhook.delivered == 1
    alert = received[0]["body"]["alert"]
    assert alert["rule"] == "search-burn" and alert["value"] == pytest.approx(1.2)
    headers = received[0]["headers"]
    assert signature_ok(
        "whsec-test-123", headers["x-gf-timestamp"], received[0]["raw"], headers["x-gf-signature"]
    )
    assert not signature_ok(
        "wrong", headers["x-gf-timestamp"], received[0]["raw"], headers["x-gf-signature"]
    )
    assert "alert search-burn fired for team:search" in caplog.text
    (stored,) = store.alerts()
    assert stored["rule"] == "search-burn" and stored["severity"] == "critical"
    assert tracker.alerts_fired == 1
    store.close()


async def test_a_rate_of_change_alert_compares_two_windows(serve: Any) -> None:
    received: list[dict[str, Any]] = []
    server = serve(webhook_app(received, []))
    rule = AlertRule(
        name="spike",
        kind="rate_of_change",
        dimension="model",
        threshold=3.0,
        window_s=600,
        min_previous=0.5,
    )
    tracker = CostTracker(rules=[rule], notifiers=[WebhookNotifier(f"{server.url}/hook")])
    now = datetime.now(UTC)
    earlier = now - timedelta(minutes=15)
    await tracker.record_many(
        [record(cost_usd=Decimal("0.2"), timestamp=earlier) for _ in range(5)]
    )
    assert (
        await tracker.record_many([record(cost_usd=Decimal("0.5"), timestamp=now)]) == []
    )  # 0.5 < 3 x 1.0
    fired = await tracker.record_many([record(cost_usd=Decimal("2.6"), timestamp=now)])
    assert [(a.scope, a.previous) for a in fired] == [("model:gpt-4o-mini", pytest.approx(1.0))]
    await tracker.drain()
    assert "rose from 1 to 3.1" in received[0]["body"]["alert"]["message"]


async def test_webhook_failures_are_retried_then_logged_never_raised(serve: Any) -> None:
    received: list[dict[str, Any]] = []
    server = serve(webhook_app(received, [503]))
    webhook = WebhookNotifier(f"{server.url}/hook", retries=1)
    rule = AlertRule(name="any", kind="threshold", threshold=0.1)
    tracker = CostTracker(rules=[rule], notifiers=[webhook])
    await tracker.record(record(cost_usd=Decimal("1")))
    await tracker.drain()
    assert len(received) == 2 and webhook.failed == 1 and webhook.delivered == 0
    unreachable = WebhookNotifier("http://127.0.0.1:9/hook", retries=0, timeout_s=1)
    tracker = CostTracker(rules=[rule], notifiers=[unreachable])
    await tracker.record(record(cost_usd=Decimal("1")))
    await tracker.drain()
    assert unreachable.failed == 1
    with pytest.raises(ValueError, match="http"):
        WebhookNotifier("file:///etc/passwd")


def test_rules_validate_their_config() -> None:
    with pytest.raises(ValueError, match="window_s"):
        AlertRule(name="x", kind="threshold", threshold=1, window_s=5)
    rule = AlertRule(name="x", kind="rate_of_change", threshold=2, min_previous=1)
    assert rule.check(current=10, previous=0.5) is None  # baseline too small to judge
    assert rule.check(current=1.9, previous=1) is None
    assert rule.check(current=2, previous=1) is not None
