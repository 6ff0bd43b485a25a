"""/metrics: the OTel meter read by a Prometheus scrape, with OTel-to-Prometheus naming."""

from __future__ import annotations

import re

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from starlette.applications import Starlette
from starlette.routing import Route

from genai_factory.observability.metrics import GenAIMetrics
from genai_factory.observability.prometheus import PrometheusBridge, prometheus_name

pytestmark = pytest.mark.unit


async def test_metrics_endpoint_serves_the_genai_histograms_and_our_counters() -> None:
    bridge = PrometheusBridge()
    meter_provider = MeterProvider(metric_readers=[bridge])
    metrics = GenAIMetrics(meter_provider)
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "m",
    }
    metrics.operation_duration.record(0.03, attrs)
    metrics.token_usage.record(300, {**attrs, "gen_ai.token.type": "input"})
    metrics.record_cache_lookup(hit=True)
    metrics.record_spend(0.25, model="m", team=None)
    up_down = meter_provider.get_meter("x").create_up_down_counter(
        "gf.queue.depth", unit="{request}"
    )
    up_down.add(3)
    meter_provider.get_meter("x").create_observable_gauge(
        "gf.load", callbacks=[lambda _: [Observation(0.5)]], unit="1"
    )
    app = Starlette(routes=[Route("/metrics", bridge.endpoint)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t"
    ) as client:
        response = await client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert (
        'gen_ai_client_operation_duration_seconds_bucket{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="m",le="0.04"} 1.0'
        in text
    )
    assert re.search(
        r'gen_ai_client_token_usage_bucket\{.*gen_ai_token_type="input",le="256.0"\} 0.0', text
    )
    assert re.search(r'gen_ai_client_token_usage_bucket\{.*le="1024.0"\} 1.0', text)
    assert 'gf_cache_hits_total{gf_cache_name="response"} 1.0' in text
    assert 'gf_spend_usd_total{gen_ai_request_model="m"} 0.25' in text
    assert "gf_queue_depth 3.0" in text and "gf_load_ratio 0.5" in text
    meter_provider.shutdown()
    assert PrometheusBridge().families() == []  # not attached to a meter provider yet


@given(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["s", "ms", "{token}", "1", "By", "USD", "", "m/s"]),
    st.booleans(),
)
def test_prometheus_names_are_always_valid(name: str, unit: str, counter: bool) -> None:
    result = prometheus_name(name, unit, counter=counter)
    assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", result)
    assert result.endswith("_total") == counter or result.endswith("_total")


def test_deferred_metrics_are_recorded_on_flush_and_the_queue_pushes_back() -> None:
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from genai_factory.observability.metrics import DeferredRecorder

    reader = InMemoryMetricReader()
    metrics = GenAIMetrics(MeterProvider(metric_readers=[reader]), defer=True)
    metrics.record_cache_lookup(hit=True)
    metrics.flush()
    data = reader.get_metrics_data()
    assert data is not None
    names = [m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    assert names == ["gf.cache.hits"] and metrics.recorded_inline == 0
    metrics.close()

    recorded: list[float] = []
    recorder = DeferredRecorder(max_pending=10, interval_s=60)
    for i in range(25):
        recorder.submit(lambda value, attributes: recorded.append(value), float(i), {})
    # back-pressure: past ten waiting, callers record inline; nothing is lost
    assert recorder.inline == 15 and recorded == [float(i) for i in range(10, 25)]
    recorder.close()
    assert sorted(recorded) == [float(i) for i in range(25)]
