"""Prometheus ``/metrics`` from the OpenTelemetry meter: record once, read by scrape and by OTLP.

:class:`PrometheusBridge` is an OpenTelemetry ``MetricReader`` that is also a
``prometheus_client`` collector: on each scrape it collects the SDK's cumulative metrics and
translates them to Prometheus families, following the OTel-to-Prometheus naming rules (dots to
underscores, unit suffixes such as ``_seconds``, annotation units like ``{token}`` dropped,
``_total`` on counters).

Example:
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> bridge = PrometheusBridge()
    >>> meter = MeterProvider(metric_readers=[bridge]).get_meter("demo")
    >>> meter.create_counter("gf.cache.hits", unit="{hit}").add(2, {"gf.cache.name": "exact"})
    >>> print(bridge.exposition().decode().splitlines()[2])
    gf_cache_hits_total{gf_cache_name="exact"} 2.0
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry.sdk.metrics.export import (
    Gauge,
    Histogram,
    HistogramDataPoint,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["CONTENT_TYPE_LATEST", "PrometheusBridge", "prometheus_name"]

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
_UNIT_SUFFIX = {
    "s": "seconds",
    "ms": "milliseconds",
    "By": "bytes",
    "USD": "usd",
    "%": "percent",
}


def _sanitize(text: str) -> str:
    cleaned = _INVALID.sub("_", text)
    cleaned = re.sub(r"__+", "_", cleaned)
    return f"_{cleaned}" if cleaned[:1].isdigit() else cleaned


def prometheus_name(name: str, unit: str, *, counter: bool = False, gauge: bool = False) -> str:
    """The Prometheus metric name for an OpenTelemetry instrument.

    >>> prometheus_name("gen_ai.client.operation.duration", "s")
    'gen_ai_client_operation_duration_seconds'
    >>> prometheus_name("gen_ai.client.token.usage", "{token}")
    'gen_ai_client_token_usage'
    >>> prometheus_name("gf.spend", "USD", counter=True)
    'gf_spend_usd_total'
    """
    base = _sanitize(name)
    unit = re.sub(r"\{[^}]*\}", "", unit or "").strip()
    suffix = _UNIT_SUFFIX.get(
        unit, "ratio" if unit == "1" and gauge else _sanitize(unit) if unit not in {"", "1"} else ""
    )
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    if counter and not base.endswith("_total"):
        base = f"{base}_total"
    return base


def _labels(attributes: Any) -> dict[str, str]:
    return {_sanitize(str(key)): str(value) for key, value in (attributes or {}).items()}


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class _Collector:
    """The prometheus_client side: MetricReader already owns the name ``collect``."""

    def __init__(self, bridge: PrometheusBridge) -> None:
        self._bridge = bridge

    def describe(self) -> list[Metric]:
        return []  # tells the registry not to collect at registration time

    def collect(self) -> Iterator[Metric]:
        return iter(self._bridge.families())


class PrometheusBridge(MetricReader):
    """A MetricReader that a Prometheus scrape pulls from (cumulative temporality).

    Args:
        registry: the prometheus_client registry to expose (a fresh private one by default, so
            several bridges in one process never collide).
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__()
        self.registry = registry or CollectorRegistry(auto_describe=False)
        self._data: MetricsData | None = None
        self._lock = threading.Lock()
        # Metrics aggregated outside the SDK, merged into each collection (see histograms.py).
        self._producers: list[Callable[[MetricsData | None], MetricsData]] = []
        self.registry.register(_Collector(self))

    def add_producer(self, merge: Callable[[MetricsData | None], MetricsData]) -> None:
        """Merge more metrics into every scrape, e.g. ``HistogramAggregator.merge_into``."""
        self._producers.append(merge)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        self._data = metrics_data

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self._data = None

    def families(self, timeout_millis: float = 10_000) -> list[Metric]:
        """Pull the SDK's current (cumulative) metrics and translate them to Prometheus families."""
        with self._lock:
            self.collect(timeout_millis=timeout_millis)
            data = self._data
            for merge in self._producers:
                data = merge(data)
        return self._families(data)

    def exposition(self) -> bytes:
        """The text exposition format, as served at ``/metrics``."""
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        """A Starlette endpoint for ``/metrics``."""
        return Response(self.exposition(), media_type=CONTENT_TYPE_LATEST)

    def _families(self, data: MetricsData | None) -> list[Metric]:
        families: dict[str, Metric] = {}
        if data is None:
            return []
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points = metric.data
                    if isinstance(points, Sum):
                        counter = points.is_monotonic
                        name = prometheus_name(metric.name, metric.unit or "", counter=counter)
                        kind = "counter" if counter else "gauge"
                        family = families.setdefault(
                            name, Metric(name, metric.description or metric.name, kind)
                        )
                        for point in points.data_points:
                            assert isinstance(point, NumberDataPoint)
                            family.add_sample(name, _labels(point.attributes), float(point.value))
                    elif isinstance(points, Gauge):
                        name = prometheus_name(metric.name, metric.unit or "", gauge=True)
                        family = families.setdefault(
                            name, Metric(name, metric.description or metric.name, "gauge")
                        )
                        for point in points.data_points:
                            family.add_sample(name, _labels(point.attributes), float(point.value))
                    elif isinstance(points, Histogram):
                        name = prometheus_name(metric.name, metric.unit or "")
                        family = families.setdefault(
                            name, Metric(name, metric.description or metric.name, "histogram")
                        )
                        for hist_point in points.data_points:
                            self._add_histogram(family, name, hist_point)
        return list(families.values())

    @staticmethod
    def _add_histogram(family: Metric, name: str, point: HistogramDataPoint) -> None:
        labels = _labels(point.attributes)
        cumulative = 0
        bounds = [*point.explicit_bounds, math.inf]
        for bound, count in zip(bounds, point.bucket_counts, strict=False):
            cumulative += count
            family.add_sample(f"{name}_bucket", {**labels, "le": _le(bound)}, float(cumulative))
        family.add_sample(f"{name}_count", labels, float(point.count))
        family.add_sample(f"{name}_sum", labels, float(point.sum))
