"""OTLP/HTTP and console exporters, configured from TelemetryConfig, to a real local receiver."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from genai_factory.observability.setup import (
    ObservabilitySettings,
    TelemetryConfig,
    setup_telemetry,
)
from genai_factory.shared.settings import load_settings

pytestmark = pytest.mark.unit


def receiver(received: dict[str, list[Any]]) -> Starlette:
    async def traces(request: Request) -> Response:
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        received["traces"].append((message, dict(request.headers)))
        return Response(status_code=200)

    async def metrics(request: Request) -> Response:
        message = ExportMetricsServiceRequest()
        message.ParseFromString(await request.body())
        received["metrics"].append(message)
        return Response(status_code=200)

    return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"]),
                             Route("/v1/metrics", metrics, methods=["POST"])])  # fmt: skip


def test_spans_and_metrics_reach_an_otlp_http_receiver(
    serve: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    received: dict[str, list[Any]] = {"traces": [], "metrics": []}
    server = serve(receiver(received))
    config = TelemetryConfig(
        service_name="gateway-test", span_exporters=["otlp", "console"], metric_exporters=["otlp", "console"],
        otlp_endpoint=server.url, otlp_headers={"authorization": SecretStr("Bearer collector-key-1")},
        schedule_delay_ms=20, metric_interval_s=60,
    )  # fmt: skip
    telemetry = setup_telemetry(config)
    assert telemetry.store is None and telemetry.prometheus is None
    with telemetry.genai.chat(model="gpt-4o-mini") as call:
        call.set_usage(10, 2)
    telemetry.flush()
    telemetry.meter_provider.force_flush()
    deadline = time.monotonic() + 10
    while not (received["traces"] and received["metrics"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    telemetry.shutdown()
    message, headers = received["traces"][0]
    assert headers["authorization"] == "Bearer collector-key-1"
    span = message.resource_spans[0].scope_spans[0].spans[0]
    assert span.name == "chat gpt-4o-mini"
    attributes = {kv.key: kv.value for kv in span.attributes}
    assert attributes["gen_ai.usage.input_tokens"].int_value == 10
    service = {
        kv.key: kv.value.string_value for kv in message.resource_spans[0].resource.attributes
    }
    assert service["service.name"] == "gateway-test"
    names = {
        m.name
        for rm in received["metrics"]
        for sm in rm.resource_metrics
        for s in sm.scope_metrics
        for m in s.metrics
    }
    assert {"gen_ai.client.operation.duration", "gen_ai.client.token.usage"} <= names
    out = capfd.readouterr().out
    assert '"name": "chat gpt-4o-mini"' in out  # the console exporter printed the span


def test_settings_load_the_observability_block_from_yaml_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "gf.yaml"
    path.write_text("observability:\n  service_name: from-yaml\n  capture_content: false\n"
                    "  prices:\n    models:\n      house-model: {input: 1, output: 2}\n")  # fmt: skip
    monkeypatch.setenv("GF_OBSERVABILITY__CAPTURE_CONTENT", "true")
    settings = load_settings(ObservabilitySettings, path)
    assert settings.observability.service_name == "from-yaml"
    assert settings.observability.capture_content is True
    assert settings.observability.prices.load().knows("house-model")
    telemetry = setup_telemetry(settings.observability.model_copy(
        update={"sqlite_path": tmp_path / "t.db", "install_global": False}))  # fmt: skip
    assert telemetry.genai.capture_content is True
    assert telemetry.to_params()["config"]["service_name"] == "from-yaml"
    telemetry.shutdown()
