"""Wire traces and metrics from config: exporters, bounded batching, Prometheus, the SQLite store.

``setup_telemetry(TelemetryConfig(...))`` returns a :class:`Telemetry` that owns its tracer and
meter providers (it does not touch the OpenTelemetry globals unless ``install_global`` is set),
the :class:`GenAITelemetry` to instrument with, the store the console reads, and the Prometheus
bridge behind ``/metrics``. ``shutdown()`` flushes everything.

Config lives under ``observability:`` in the settings file or ``GF_OBSERVABILITY__*`` variables
(see :class:`ObservabilitySettings`).

Example:
    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> telemetry = setup_telemetry(TelemetryConfig(sqlite_path=folder / "t.db"))
    >>> with telemetry.genai.chat(model="smollm2", provider="local") as call:
    ...     call.set_usage(5, 7)
    >>> telemetry.flush()
    True
    >>> telemetry.store.count_spans(), "gen_ai_client_token_usage" in telemetry.prometheus.exposition().decode()
    (1, True)
    >>> telemetry.shutdown()
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, ParentBasedTraceIdRatio
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from genai_factory.observability.alerts import AlertNotifier, AlertRule
from genai_factory.observability.cost import CostTracker
from genai_factory.observability.direct import DirectTracer
from genai_factory.observability.exporters import SQLiteSpanExporter
from genai_factory.observability.histograms import (
    HistogramAggregator,
    MergingMetricExporter,
    cumulative,
)
from genai_factory.observability.ids import TimeOrderedIdGenerator
from genai_factory.observability.metrics import Role
from genai_factory.observability.pricing import ModelPrice, PriceTable
from genai_factory.observability.prometheus import PrometheusBridge
from genai_factory.observability.redaction import ContentRedactor
from genai_factory.observability.store import TelemetryStore
from genai_factory.observability.tracing import GenAITelemetry
from genai_factory.shared.settings import GFSettings, settings_config

__all__ = [
    "ObservabilitySettings",
    "PriceConfig",
    "Telemetry",
    "TelemetryConfig",
    "setup_telemetry",
]

_log = logging.getLogger("genai_factory.observability.setup")

_SCOPE = "genai_factory.observability"  # the instrumentation scope GenAIMetrics reports under

SpanExporterName = Literal["sqlite", "otlp", "console"]
MetricExporterName = Literal["prometheus", "otlp", "console"]


class PriceConfig(BaseModel):
    """Which price table to use: the packaged one, another file, and per-model overrides."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = None
    models: dict[str, ModelPrice] = Field(default_factory=dict)
    version: str | None = None

    def load(self) -> PriceTable:
        return PriceTable.load(self.path, overrides=self.models or None, version=self.version)


class TelemetryConfig(BaseModel):
    """Everything :func:`setup_telemetry` needs; the defaults run with no server at all."""

    model_config = ConfigDict(extra="forbid")

    service_name: str = "genai-factory"
    span_exporters: list[SpanExporterName] = Field(default=["sqlite"])
    metric_exporters: list[MetricExporterName] = Field(default=["prometheus"])
    sqlite_path: Path = Path(".gf-data/telemetry.db")
    retention_s: float | None = Field(default=7 * 24 * 3600, gt=0)
    otlp_endpoint: str = "http://127.0.0.1:4318"
    otlp_headers: dict[str, SecretStr] = Field(default_factory=dict)
    metric_interval_s: float = Field(default=15.0, gt=0)
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    # Bounded batching: at most max_queue_size spans wait in memory; beyond that the oldest drop.
    max_queue_size: int = Field(default=8192, ge=16)
    max_export_batch_size: int = Field(default=512, ge=1)
    schedule_delay_ms: int = Field(default=500, ge=1)
    provider_name: str = "openai"
    role: Role = "client"
    capture_content: bool = False
    # Record metrics on a background thread (bounded queue): the request path only appends.
    defer_metrics: bool = True
    # Aggregate the GenAI histograms in-process and merge them into each collection: the SDK's
    # per-measurement work costs more than the span itself (see histograms.py).
    aggregate_histograms: bool = True
    max_content_chars: int = Field(default=16_384, ge=0)
    prices: PriceConfig = Field(default_factory=PriceConfig)
    install_global: bool = False
    # Trace ids that begin with the time (ids.py): the trace store's index grows at one end.
    time_ordered_trace_ids: bool = True
    # GenAI spans through DirectTracer (direct.py): the same sampler, ids, limits, processors
    # and exporters, without the SDK's per-span bookkeeping. False: the SDK's own tracer.
    direct_spans: bool = True


class ObservabilitySettings(GFSettings):
    """Platform settings plus an ``observability`` block (``GF_OBSERVABILITY__CAPTURE_CONTENT``)."""

    model_config = settings_config()

    observability: TelemetryConfig = Field(default_factory=TelemetryConfig)


class Telemetry:
    """The running telemetry: providers, the instrumentation, the store and ``/metrics``."""

    def __init__(
        self,
        config: TelemetryConfig,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        genai: GenAITelemetry,
        store: TelemetryStore | None,
        prometheus: PrometheusBridge | None,
        sqlite_exporter: SQLiteSpanExporter | None,
    ) -> None:
        self.config = config
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.genai = genai
        self.store = store
        self.prometheus = prometheus
        self.sqlite_exporter = sqlite_exporter

    def to_params(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(mode="json")}

    def cost_tracker(
        self,
        rules: Sequence[AlertRule] = (),
        notifiers: Sequence[AlertNotifier] = (),
    ) -> CostTracker:
        """A CostTracker on this telemetry's store, price table and ``gf.spend`` counter."""
        return CostTracker(
            store=self.store,
            price_table=self.genai.price_table,
            rules=rules,
            notifiers=notifiers,
            metrics=self.genai.metrics,
        )

    def flush(self, timeout_millis: int = 10_000) -> bool:
        """Export every queued span and record every deferred measurement now."""
        self.genai.metrics.flush()
        return bool(self.tracer_provider.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self.genai.metrics.close()
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        if self.store is not None:
            self.store.close()


def _otlp_headers(config: TelemetryConfig) -> dict[str, str]:
    return {name: value.get_secret_value() for name, value in config.otlp_headers.items()}


def _span_exporter(
    name: SpanExporterName, config: TelemetryConfig, store: TelemetryStore | None
) -> SpanExporter:
    if name == "sqlite":
        assert store is not None
        return SQLiteSpanExporter(store)
    if name == "otlp":
        return OTLPSpanExporter(
            endpoint=config.otlp_endpoint.rstrip("/") + "/v1/traces", headers=_otlp_headers(config)
        )
    return ConsoleSpanExporter(out=sys.stdout)  # the stdout of now, not of import time


def setup_telemetry(
    config: TelemetryConfig | None = None,
    *,
    extra_span_exporters: list[SpanExporter] | None = None,
    extra_metric_readers: list[MetricReader] | None = None,
) -> Telemetry:
    """Build providers, exporters and the GenAI instrumentation from ``config``."""
    config = config or TelemetryConfig()
    resource = Resource.create({"service.name": config.service_name})
    # At ratio 1 the ratio sampler keeps everything anyway; ALWAYS_ON decides that cheaper.
    sampler = (
        ParentBased(ALWAYS_ON)
        if config.sample_ratio >= 1.0
        else ParentBasedTraceIdRatio(config.sample_ratio)
    )
    id_generator = TimeOrderedIdGenerator() if config.time_ordered_trace_ids else None
    # One processor chain, shared by the SDK's tracer (everyone else's spans) and ours.
    span_processor = SynchronousMultiSpanProcessor()  # type: ignore[no-untyped-call]
    tracer_provider = TracerProvider(
        resource=resource,
        sampler=sampler,
        id_generator=id_generator,
        active_span_processor=span_processor,
    )
    store = (
        TelemetryStore(config.sqlite_path, retention_s=config.retention_s)
        if "sqlite" in config.span_exporters
        else None
    )
    sqlite_exporter: SQLiteSpanExporter | None = None
    exporters: list[SpanExporter] = []
    for name in dict.fromkeys(config.span_exporters):
        exporter = _span_exporter(name, config, store)
        if isinstance(exporter, SQLiteSpanExporter):
            sqlite_exporter = exporter
        exporters.append(exporter)
    for exporter in [*exporters, *(extra_span_exporters or [])]:
        span_processor.add_span_processor(
            BatchSpanProcessor(
                exporter,
                max_queue_size=config.max_queue_size,
                max_export_batch_size=min(config.max_export_batch_size, config.max_queue_size),
                schedule_delay_millis=config.schedule_delay_ms,
            )
        )

    readers: list[MetricReader] = list(extra_metric_readers or [])
    prometheus: PrometheusBridge | None = None
    interval_ms = config.metric_interval_s * 1000
    metric_exporters: list[MetricExporter] = []
    for metric_name in dict.fromkeys(config.metric_exporters):
        if metric_name == "prometheus":
            prometheus = PrometheusBridge()
        elif metric_name == "otlp":
            metric_exporters.append(
                OTLPMetricExporter(
                    endpoint=config.otlp_endpoint.rstrip("/") + "/v1/metrics",
                    headers=_otlp_headers(config),
                )
            )
        else:
            metric_exporters.append(ConsoleMetricExporter(out=sys.stdout))
    # Only readers we build can merge the aggregated histograms, and only cumulative ones:
    # otherwise the SDK aggregates them as usual.
    aggregator = (
        HistogramAggregator(_SCOPE, resource)
        if config.aggregate_histograms
        and not extra_metric_readers
        and all(cumulative(each) for each in metric_exporters)
        else None
    )
    if prometheus is not None:
        if aggregator is not None:
            prometheus.add_producer(aggregator.merge_into)
        readers.append(prometheus)
    for metric_exporter in metric_exporters:
        readers.append(
            PeriodicExportingMetricReader(
                MergingMetricExporter(metric_exporter, aggregator)
                if aggregator
                else metric_exporter,
                export_interval_millis=interval_ms,
            )
        )
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    prices = config.prices.load()
    genai = GenAITelemetry(
        tracer_provider=tracer_provider,
        tracer=DirectTracer(
            span_processor,
            resource=resource,
            sampler=sampler,
            id_generator=tracer_provider.id_generator,
            scope_name=_SCOPE,
        )
        if config.direct_spans
        else None,
        meter_provider=meter_provider,
        provider_name=config.provider_name,
        capture_content=config.capture_content,
        redact=ContentRedactor(
            secrets=[v.get_secret_value() for v in config.otlp_headers.values()]
        ),
        max_content_chars=config.max_content_chars,
        role=config.role,
        price_table=prices,
        defer_metrics=config.defer_metrics,
        histogram_aggregator=aggregator,
    )
    if config.install_global:
        trace.set_tracer_provider(tracer_provider)
        otel_metrics.set_meter_provider(meter_provider)
    _log.info(
        "telemetry ready",
        extra={
            "span_exporters": config.span_exporters,
            "metric_exporters": config.metric_exporters,
            "price_table": prices.version,
        },
    )
    return Telemetry(
        config, tracer_provider, meter_provider, genai, store, prometheus, sqlite_exporter
    )
