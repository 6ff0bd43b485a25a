"""The console in headless Chromium: it loads, charts render real data, a trace opens.

Uses Debian's chromium (never a browser download) through the Python Playwright package. Data
comes from our own instrumentation (produce_traffic), served by uvicorn on 127.0.0.1.
Screenshots go to observability/test-artifacts/ (gitignored).
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from genai_factory.observability.alerts import AlertRule, StoreNotifier
from genai_factory.observability.console import create_app
from genai_factory.observability.cost import CostTracker
from genai_factory.observability.setup import TelemetryConfig, setup_telemetry

from .conftest import produce_traffic

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def test_the_console_renders_real_data_and_opens_a_trace(tmp_path: Path, serve: Any) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "Debian chromium is not installed (apt-get install -y chromium); CI must install it"
        )
    from playwright.sync_api import expect, sync_playwright

    telemetry = setup_telemetry(
        TelemetryConfig(sqlite_path=tmp_path / "t.db", schedule_delay_ms=50)
    )
    store = telemetry.store
    assert store is not None and telemetry.prometheus is not None
    rule = AlertRule(
        name="team-spend", kind="threshold", dimension="team", threshold=0.0001, severity="critical"
    )
    tracker = CostTracker(store=store, price_table=telemetry.genai.price_table, rules=[rule],
                          notifiers=[StoreNotifier(store)])  # fmt: skip

    async def traffic() -> list[str]:
        ids = await produce_traffic(telemetry, tracker, requests=40)
        await tracker.drain()
        return ids

    trace_ids = asyncio.run(traffic())
    server = serve(create_app(store, metrics_endpoint=telemetry.prometheus.endpoint))
    ARTIFACTS.mkdir(exist_ok=True)

    problems: list[str] = []
    outside: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on(
            "request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url)
        )
        page.goto(f"{server.url}/console/")
        # (selector waits, not wait_for_function: the page's CSP forbids eval, as it should)
        page.locator('body[data-ready="1"]').wait_for(timeout=15_000)

        # the live request log lists every request, newest first
        rows = page.locator("#requests tbody tr")
        assert rows.count() == 40
        assert rows.first.get_attribute("data-trace-id") == trace_ids[-1]
        # requests whose model call failed show the failure even though the root span handled it
        assert page.locator("#requests td.status-ERROR").count() >= 2
        assert page.locator("#t-calls").inner_text() not in {"–", "0"}
        assert page.locator("#t-cost").inner_text().startswith("$")
        assert (
            page.locator("#t-cache").inner_text() == "25.0%"
        )  # every fourth request hit the cache

        # charts hold drawn marks, not placeholders
        assert page.locator("#cost-chart rect.bar").count() >= 3
        assert page.locator("#cost-legend span").count() == 3
        assert page.locator("#latency-chart circle.point").count() >= 3
        assert page.locator("#latency-models tbody tr").count() == 3
        assert page.locator("#cache-chart circle.point").count() >= 1
        assert page.locator("#guard-chart rect.bar").count() >= 3
        assert page.locator("#alerts tbody tr").count() == 2
        page.screenshot(path=str(ARTIFACTS / "console-overview.png"), full_page=True)

        # open the first request with a model call and a tool call: the waterfall shows its spans
        target = max(trace_ids, key=lambda trace_id: len(store.trace(trace_id)))
        page.locator(f'#requests tbody tr[data-trace-id="{target}"]').click()
        page.locator(f'body[data-trace-open="{target}"]').wait_for()
        expected = [span["name"] for span in store.trace(target)]
        bars = page.locator("#waterfall g.span-row")
        assert bars.count() == len(expected) >= 3
        assert page.locator("#waterfall text.span-label").all_text_contents() == expected
        page.locator("#waterfall g.span-row").nth(1).click()
        detail = page.locator("#span-detail").inner_text()
        assert "gen_ai.operation.name" in detail and "gen_ai.usage.input_tokens" in detail
        page.locator("#trace-panel").screenshot(path=str(ARTIFACTS / "console-trace.png"))

        # switching the cost grouping redraws by model
        page.select_option("#group-by", "model")
        expect(page.locator("#cost-legend")).to_contain_text("gpt-4o-mini")
        browser.close()

    telemetry.shutdown()
    assert problems == []
    assert outside == []  # works offline: nothing but our own server was contacted
