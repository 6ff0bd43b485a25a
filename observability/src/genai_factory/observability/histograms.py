"""In-process aggregation of the GenAI histograms, merged into the SDK's metrics at collection.

Why: each ``Histogram.record`` of the OpenTelemetry Python SDK builds a ``Measurement``,
validates and hashes its attributes and takes several locks; a model call records three
histograms, which costs more than its span. :class:`HistogramAggregator` keeps the same
cumulative explicit-bucket aggregation (bucket counts, count, sum, min, max; per attribute set;
the SDK's cardinality limit and overflow series) behind one lock per call, and
:meth:`HistogramAggregator.merge_into` adds its histograms to the ``MetricsData`` a reader
collects, so Prometheus and OTLP receive the same points the SDK would have produced.

It serves cumulative readers only (Prometheus, and OTLP with its default temporality);
:func:`~genai_factory.observability.setup.setup_telemetry` falls back to the SDK's own
histograms for anything else.

Example:
    >>> aggregator = HistogramAggregator("demo")
    >>> latency = aggregator.histogram("op.duration", unit="s", boundaries=(0.1, 1.0))
    >>> latency.record(0.5, {"op": "chat"})
    >>> latency.record(2.0, {"op": "chat"})
    >>> point = aggregator.metrics()[0].data.data_points[0]
    >>> point.count, point.sum, list(point.bucket_counts), point.min, point.max
    (2, 2.5, [0, 1, 1], 0.5, 2.0)
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics import Histogram as SDKHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.util.types import AttributeValue

__all__ = ["AggregatedHistogram", "HistogramAggregator", "MergingMetricExporter", "cumulative"]

# The SDK's defaults, so a series beyond the limit lands where the SDK would put it.
_CARDINALITY_LIMIT = 2000
_OVERFLOW: dict[str, AttributeValue] = {"otel.metric.overflow": True}
_OVERFLOW_KEY = frozenset(_OVERFLOW.items())

Attributes = Mapping[str, AttributeValue]


class _Series:
    """One attribute set's cumulative state."""

    __slots__ = ("attributes", "counts", "max", "min", "start_ns", "sum")

    def __init__(self, attributes: Attributes, buckets: int) -> None:
        self.attributes = dict(attributes)
        self.counts = [0] * buckets
        self.sum: float = 0
        self.min = math.inf
        self.max = -math.inf
        self.start_ns = time.time_ns()


class AggregatedHistogram:
    """One histogram instrument; :meth:`record` is thread-safe."""

    __slots__ = ("_aggregator", "_bound", "_series", "bounds", "description", "name", "unit")

    def __init__(
        self,
        aggregator: HistogramAggregator,
        name: str,
        unit: str,
        description: str,
        bounds: Sequence[float],
    ) -> None:
        self._aggregator = aggregator
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = tuple(float(bound) for bound in bounds)
        self._series: dict[frozenset[tuple[str, Any]], _Series] = {}
        # Pre-bound attribute sets: the attributes' items in insertion order -> their series.
        # A tuple is cheaper to build and hash than the order-free frozenset key; several
        # orders of one set map to the same series.
        self._bound: dict[tuple[tuple[str, Any], ...], _Series] = {}

    def record(self, value: float, attributes: Attributes) -> None:
        """Add one value (negative and non-finite values are ignored, as the SDK does)."""
        with self._aggregator.lock:
            self._add(tuple(attributes.items()), attributes, value)

    def _add(
        self, bound: tuple[tuple[str, Any], ...], attributes: Attributes, value: float
    ) -> None:
        # Caller holds the aggregator's lock.
        if value < 0 or not math.isfinite(value):
            return
        self._aggregator.measurements += 1
        series = self._bound.get(bound)
        if series is None:
            series = self._series_for(frozenset(bound), attributes)
            if len(self._bound) >= 4 * self._aggregator.cardinality_limit:
                self._bound.clear()  # bounded: only a cache of the lookups above
            self._bound[bound] = series
        series.counts[bisect_left(self.bounds, value)] += 1
        series.sum += value
        if value < series.min:
            series.min = value
        if value > series.max:
            series.max = value

    def _series_for(self, key: frozenset[tuple[str, Any]], attributes: Attributes) -> _Series:
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self._aggregator.cardinality_limit:
                key, attributes = _OVERFLOW_KEY, _OVERFLOW
                series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(attributes, len(self.bounds) + 1)
        return series

    def metric(self, now_ns: int) -> Metric | None:
        with self._aggregator.lock:
            points = [
                HistogramDataPoint(
                    attributes=dict(series.attributes),
                    start_time_unix_nano=series.start_ns,
                    time_unix_nano=now_ns,
                    count=sum(series.counts),
                    sum=series.sum,
                    bucket_counts=list(series.counts),
                    explicit_bounds=list(self.bounds),
                    min=series.min,
                    max=series.max,
                )
                for series in self._series.values()
            ]
        if not points:
            return None  # the SDK leaves out instruments with nothing recorded
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(
                data_points=points, aggregation_temporality=AggregationTemporality.CUMULATIVE
            ),
        )


class HistogramAggregator:
    """Cumulative histograms for one instrumentation scope, collected into reader output.

    Args:
        scope: the instrumentation scope name the metrics are reported under.
        resource: used only when a collection holds no resource yet.
        cardinality_limit: attribute sets per histogram; later ones go to the overflow series.
    """

    def __init__(
        self,
        scope: str,
        resource: Resource | None = None,
        cardinality_limit: int = _CARDINALITY_LIMIT,
    ) -> None:
        self.scope = scope
        self.resource = resource or Resource.create({})
        self.cardinality_limit = cardinality_limit
        # One lock for every histogram: a model call records its values under one acquire.
        self.lock = threading.Lock()
        self.measurements = 0  # values aggregated so far (under the lock)
        self._histograms: dict[str, AggregatedHistogram] = {}

    def histogram(
        self, name: str, *, unit: str = "", description: str = "", boundaries: Sequence[float]
    ) -> AggregatedHistogram:
        """The histogram named ``name`` (created on first use)."""
        found = self._histograms.get(name)
        if found is None:
            found = AggregatedHistogram(self, name, unit, description, boundaries)
            self._histograms[name] = found
        return found

    def record_many(self, records: Iterable[tuple[AggregatedHistogram, float, Attributes]]) -> None:
        """Record several values under one lock acquisition."""
        keyed = [
            (histogram, tuple(attributes.items()), attributes, value)
            for histogram, value, attributes in records
        ]
        with self.lock:
            for histogram, bound, attributes, value in keyed:
                histogram._add(bound, attributes, value)

    def metrics(self, now_ns: int | None = None) -> list[Metric]:
        """The current cumulative point of every histogram that has one."""
        now = now_ns if now_ns is not None else time.time_ns()
        found = (histogram.metric(now) for histogram in list(self._histograms.values()))
        return [metric for metric in found if metric is not None]

    def merge_into(self, data: MetricsData | None) -> MetricsData:
        """``data`` (a reader's collection) with these histograms added under our scope."""
        ours = self.metrics()
        resource_metrics = list(data.resource_metrics) if data is not None else []
        if not ours:
            return MetricsData(resource_metrics=resource_metrics)
        if not resource_metrics:
            resource_metrics = [ResourceMetrics(self.resource, [], self.resource.schema_url)]
        first = resource_metrics[0]
        names = {metric.name for metric in ours}
        scopes = list(first.scope_metrics)
        for index, scope_metrics in enumerate(scopes):
            if scope_metrics.scope.name == self.scope:
                kept = [m for m in scope_metrics.metrics if m.name not in names]
                scopes[index] = ScopeMetrics(
                    scope_metrics.scope, [*kept, *ours], scope_metrics.schema_url
                )
                break
        else:
            scopes.append(ScopeMetrics(InstrumentationScope(self.scope), ours, ""))
        resource_metrics[0] = ResourceMetrics(first.resource, scopes, first.schema_url)
        return MetricsData(resource_metrics=resource_metrics)


def cumulative(exporter: MetricExporter) -> bool:
    """Whether ``exporter`` takes histograms as cumulative points (what the aggregator makes)."""
    preferred = getattr(exporter, "_preferred_temporality", None) or {}
    wanted = preferred.get(SDKHistogram, AggregationTemporality.CUMULATIVE)
    return bool(wanted == AggregationTemporality.CUMULATIVE)


class MergingMetricExporter(MetricExporter):
    """Wraps a (cumulative) exporter so every export also carries the aggregated histograms."""

    def __init__(self, inner: MetricExporter, aggregator: HistogramAggregator) -> None:
        super().__init__(
            preferred_temporality=getattr(inner, "_preferred_temporality", None),
            preferred_aggregation=getattr(inner, "_preferred_aggregation", None),
        )
        self.inner = inner
        self.aggregator = aggregator

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        merged = self.aggregator.merge_into(metrics_data)
        return self.inner.export(merged, timeout_millis=timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis=timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)
