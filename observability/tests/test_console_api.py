"""The console's JSON APIs over the store, fed by our own instrumentation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.routing import Mount

from genai_factory.observability.alerts import AlertRule, StoreNotifier
from genai_factory.observability.console import create_app, create_console_app
from genai_factory.observability.cost import CostTracker
from genai_factory.observability.setup import Telemetry, TelemetryConfig, setup_telemetry
from genai_factory.observability.store import TelemetryStore

from .conftest import produce_traffic

pytestmark = pytest.mark.unit


@pytest.fixture
async def telemetry(tmp_path: Path) -> AsyncIterator[Telemetry]:
    telemetry = setup_telemetry(
        TelemetryConfig(sqlite_path=tmp_path / "t.db", schedule_delay_ms=50)
    )
    yield telemetry
    telemetry.shutdown()


async def fill(telemetry: Telemetry) -> list[str]:
    assert telemetry.store is not None
    rule = AlertRule(name="team-spend", kind="threshold", dimension="team", threshold=0.00001)
    tracker = CostTracker(store=telemetry.store, price_table=telemetry.genai.price_table,
                          rules=[rule], notifiers=[StoreNotifier(telemetry.store)])  # fmt: skip
    trace_ids = await produce_traffic(telemetry, tracker, requests=30)
    await tracker.drain()
    return trace_ids


def client_for(telemetry: Telemetry, token: str | None = None) -> httpx.AsyncClient:
    assert telemetry.store is not None and telemetry.prometheus is not None
    app = create_app(telemetry.store, metrics_endpoint=telemetry.prometheus.endpoint, token=token)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://console")


async def test_every_api_answers_with_data_from_the_instrumented_run(telemetry: Telemetry) -> None:
    trace_ids = await fill(telemetry)
    async with client_for(telemetry) as client:
        summary = (await client.get("/console/api/summary")).json()
        assert summary["model_calls"] > 10 and summary["errors"] >= 1
        assert 0 < summary["cache_hit_rate"] < 1 and summary["cost_usd"] > 0
        requests = (await client.get("/console/api/requests", params={"limit": 5})).json()[
            "requests"
        ]
        assert len(requests) == 5 and requests[0]["trace_id"] == trace_ids[-1]
        older = (
            await client.get("/console/api/requests", params={"before": requests[-1]["start_ns"]})
        ).json()
        assert older["requests"][0]["start_ns"] < requests[-1]["start_ns"]
        trace = (await client.get(f"/console/api/traces/{trace_ids[0]}")).json()
        names = [s["name"] for s in trace["spans"]]
        assert names[0] == "POST /v1/chat/completions" and names[1].startswith("chat ")
        latency = (await client.get("/console/api/latency", params={"window": 900})).json()
        assert set(latency["by_model"]) == {"gpt-4o-mini", "smollm2", "claude-3-5-haiku"}
        assert all(m["p50"] > 1 for m in latency["by_model"].values())
        cost = (
            await client.get("/console/api/cost", params={"group_by": "model", "step": 600})
        ).json()
        assert set(cost["groups"]) == {"gpt-4o-mini", "claude-3-5-haiku", "smollm2"}
        assert len(cost["series"]) >= 3  # records are spread over the last hour
        by_team = (await client.get("/console/api/cost")).json()
        assert set(by_team["groups"]) == {"search", "ads", "support"}
        cache = (await client.get("/console/api/cache")).json()["series"]
        assert cache and sum(p["hits"] for p in cache) == 7
        guards = (await client.get("/console/api/guard")).json()["guards"]
        assert guards["pii:input"]["block"] >= 1 and guards["pii:output"]["allow"] >= 1
        alerts = (await client.get("/console/api/alerts")).json()["alerts"]
        # smollm2 (team ads) is a local model and costs nothing: only the other teams alert
        assert {a["scope"] for a in alerts} == {"team:search", "team:support"}
        metrics = await client.get("/metrics")
        assert "gen_ai_client_operation_duration_seconds_bucket" in metrics.text
        assert "gf_cache_hits_total" in metrics.text


async def test_the_page_and_its_assets_are_served_with_a_strict_policy(
    telemetry: Telemetry,
) -> None:
    async with client_for(telemetry) as client:
        assert (await client.get("/")).headers["location"] == "/console/"
        page = await client.get("/console/")
        assert page.status_code == 200 and "<svg" in page.text
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "unsafe-inline" not in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        script = await client.get("/console/static/console.js")
        assert script.status_code == 200 and "textContent" in script.text
        # no CDN, no external URL anywhere in the page or its assets
        css = (await client.get("/console/static/console.css")).text
        for text in (page.text, script.text, css):
            assert "https://" not in text and "//cdn" not in text
        assert (
            "http://www.w3.org/2000/svg" in script.text
        )  # the SVG namespace is a name, not a fetch


async def test_bad_parameters_are_400_and_missing_things_404_in_openai_shape(
    telemetry: Telemetry,
) -> None:
    async with client_for(telemetry) as client:
        for path, params, param in [
            ("/console/api/summary", {"window": "abc"}, "window"),
            ("/console/api/summary", {"window": "5"}, "window"),
            ("/console/api/requests", {"limit": "100000"}, "limit"),
            ("/console/api/cost", {"group_by": "user"}, "group_by"),
            ("/console/api/latency", {"step": "1"}, "step"),
            ("/console/api/traces/XYZ", {}, "trace_id"),
        ]:
            response = await client.get(path, params=params)
            assert response.status_code == 400, path
            assert response.json()["error"]["param"] == param
        missing = await client.get(f"/console/api/traces/{'a' * 32}")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
        unknown = await client.get("/console/api/nothing")
        assert unknown.status_code == 404 and "error" in unknown.json()


async def test_a_token_protects_the_apis(telemetry: Telemetry) -> None:
    async with client_for(telemetry, token="console-token-123") as client:
        assert (await client.get("/console/")).status_code == 200  # the page holds no data
        denied = await client.get("/console/api/summary")
        assert (
            denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
        )
        wrong = await client.get("/console/api/summary", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = await client.get(
            "/console/api/summary", headers={"authorization": "Bearer console-token-123"}
        )
        assert ok.status_code == 200


async def test_the_console_mounts_under_any_prefix(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    gateway = Starlette(routes=[Mount("/ops/console", app=create_console_app(store))])
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        assert (await client.get("/ops/console")).headers["location"].endswith("/ops/console/")
        assert (await client.get("/ops/console/")).status_code == 200
        assert (await client.get("/ops/console/api/alerts")).json() == {"alerts": []}
        assert (await client.get("/ops/console/static/console.css")).status_code == 200
    store.close()


@settings(
    max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
@given(
    path=st.sampled_from(["summary", "requests", "latency", "cost", "cache", "guard", "alerts", "traces/x"]),
    params=st.dictionaries(st.sampled_from(["window", "limit", "step", "group_by", "before"]),
                           st.text(max_size=12), max_size=3),
)  # fmt: skip
def test_no_query_string_makes_the_api_fail_with_a_500(
    tmp_path: Path, path: str, params: dict[str, str]
) -> None:
    store = TelemetryStore(tmp_path / "fuzz.db")

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=create_console_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
            return await client.get(f"/api/{path}", params=params)

    response = asyncio.run(call())
    store.close()
    assert response.status_code in {200, 400, 404}
    if response.status_code != 200:
        assert set(response.json()["error"]) >= {"message", "type"}


async def test_spend_totals_match_between_tracker_and_console(telemetry: Telemetry) -> None:
    assert telemetry.store is not None
    tracker = CostTracker(store=telemetry.store, price_table=telemetry.genai.price_table)
    await produce_traffic(telemetry, tracker, requests=12, seed=3)
    async with client_for(telemetry) as client:
        summary = (await client.get("/console/api/summary")).json()
    assert Decimal(str(summary["cost_usd"])).quantize(Decimal("0.000001")) == (
        await tracker.total("all")
    ).quantize(Decimal("0.000001"))
