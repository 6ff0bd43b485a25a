"""The in-process histogram aggregation produces what the SDK's own aggregation produces."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.metrics.export import Histogram as HistogramData
from opentelemetry.sdk.resources import Resource

from genai_factory.observability import conventions as sc
from genai_factory.observability.histograms import (
    HistogramAggregator,
    MergingMetricExporter,
    cumulative,
)
from genai_factory.observability.metrics import GenAIMetrics
from genai_factory.observability.pricing import PriceTable
from genai_factory.observability.prometheus import PrometheusBridge
from genai_factory.observability.setup import TelemetryConfig, setup_telemetry
from genai_factory.observability.tracing import GenAITelemetry
from genai_factory.shared.models import ChatCompletionResponse

from .conftest import make_captured
from .test_semconv_schema import METRICS


def _points(data: MetricsData | None) -> dict[str, list[HistogramDataPoint]]:
    found: dict[str, list[HistogramDataPoint]] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if isinstance(metric.data, HistogramData):
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


def _comparable(points: dict[str, list[HistogramDataPoint]]) -> dict[str, Any]:
    """Every field but the timestamps, keyed by metric and attribute set."""
    return {
        name: sorted(
            (
                sorted((point.attributes or {}).items()),
                point.count,
                round(point.sum, 9),
                list(point.bucket_counts),
                list(point.explicit_bounds),
                point.min,
                point.max,
            )
            for point in series
        )
        for name, series in points.items()
    }


def _pair() -> tuple[GenAIMetrics, InMemoryMetricReader, GenAIMetrics, HistogramAggregator]:
    sdk_reader = InMemoryMetricReader()
    sdk = GenAIMetrics(MeterProvider(metric_readers=[sdk_reader]))
    aggregator = HistogramAggregator("genai_factory.observability")
    ours = GenAIMetrics(
        MeterProvider(metric_readers=[InMemoryMetricReader()]), aggregator=aggregator
    )
    return sdk, sdk_reader, ours, aggregator


values = st.one_of(
    st.floats(min_value=-10, max_value=1e8),
    st.sampled_from([math.nan, math.inf, -math.inf]),
    st.integers(min_value=-5, max_value=10**8),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["token_usage", "operation_duration", "time_to_first"]),
            values,
            st.sampled_from(["gpt-4o", "smollm2"]),
            st.sampled_from(["input", "output"]),
        ),
        max_size=40,
    )
)
def test_aggregated_points_equal_the_sdk_points(records: list[tuple[str, float, str, str]]) -> None:
    sdk, sdk_reader, ours, aggregator = _pair()
    for instrument, value, model, token_type in records:
        attributes = {sc.OPERATION_NAME: "chat", sc.REQUEST_MODEL: model}
        if instrument == "token_usage":
            attributes[sc.TOKEN_TYPE] = token_type
        sdk.record(getattr(sdk, instrument), value, attributes)
        ours.record(getattr(ours, instrument), value, dict(reversed(attributes.items())))
    expected = _comparable(_points(sdk_reader.get_metrics_data()))
    assert _comparable(_points(aggregator.merge_into(None))) == expected
    kept = [v for _, v, _, _ in records if math.isfinite(v) and v >= 0]
    assert aggregator.measurements == len(kept)


def test_record_many_equals_one_by_one_and_points_are_cumulative() -> None:
    sdk, sdk_reader, ours, aggregator = _pair()
    attributes = {sc.OPERATION_NAME: "chat", sc.REQUEST_MODEL: "gpt-4o"}
    batch = [(0.25, attributes), (3.0, attributes), (0.5, {**attributes, sc.ERROR_TYPE: "timeout"})]
    for _ in range(2):  # two collections: the second point includes the first one's values
        sdk.record_many((sdk.operation_duration, value, attrs) for value, attrs in batch)
        ours.record_many((ours.operation_duration, value, attrs) for value, attrs in batch)
        expected = _comparable(_points(sdk_reader.get_metrics_data()))
        assert _comparable(_points(aggregator.merge_into(None))) == expected
    [plain] = [p for p in _points(aggregator.merge_into(None))[sc.M_OPERATION_DURATION]
               if sc.ERROR_TYPE not in p.attributes]  # fmt: skip
    assert plain.count == 4 and plain.sum == 6.5 and plain.min == 0.25 and plain.max == 3.0


def test_attribute_sets_beyond_the_limit_go_to_the_overflow_series() -> None:
    aggregator = HistogramAggregator("demo", cardinality_limit=2)
    histogram = aggregator.histogram("h", boundaries=(1.0,))
    for user in ["a", "b", "c", "d"]:
        histogram.record(2.0, {"user": user})
    points = _points(aggregator.merge_into(None))["h"]
    by_attributes = {tuple(sorted(p.attributes.items())): p.count for p in points}
    assert by_attributes == {
        (("user", "a"),): 1,
        (("user", "b"),): 1,
        (("otel.metric.overflow", True),): 2,
    }


def test_merge_keeps_the_sdk_metrics_and_replaces_a_same_named_one() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"k": "v"}))
    meter = provider.get_meter("genai_factory.observability")
    meter.create_counter("gf.cache.hits").add(1)
    meter.create_histogram("h").record(100.0)  # the SDK's own, superseded by ours
    meter_other = provider.get_meter("other")
    meter_other.create_counter("other.count").add(3)
    aggregator = HistogramAggregator("genai_factory.observability")
    aggregator.histogram("h", boundaries=(1.0,)).record(0.5, {})
    merged = aggregator.merge_into(reader.get_metrics_data())
    [resource_metrics] = merged.resource_metrics
    assert resource_metrics.resource.attributes["k"] == "v"
    scopes = {sm.scope.name: [m.name for m in sm.metrics] for sm in resource_metrics.scope_metrics}
    assert sorted(scopes["genai_factory.observability"]) == ["gf.cache.hits", "h"]
    assert scopes["other"] == ["other.count"]
    assert [p.sum for p in _points(merged)["h"]] == [0.5]
    # Nothing recorded leaves the data as it was; a collection without our scope gains it.
    empty = HistogramAggregator("demo")
    assert empty.merge_into(merged).resource_metrics == list(merged.resource_metrics)
    fresh = HistogramAggregator("fresh")
    fresh.histogram("x", boundaries=()).record(1.0, {})
    merged_again = fresh.merge_into(merged)
    names = [sm.scope.name for sm in merged_again.resource_metrics[0].scope_metrics]
    assert names[-1] == "fresh"


class _Recording(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exported: list[MetricsData] = []
        self.flushed = self.closed = False

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
               **kwargs: Any) -> MetricExportResult:  # fmt: skip
        self.exported.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        self.flushed = True
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.closed = True


def test_the_merging_exporter_adds_our_histograms_and_delegates() -> None:
    aggregator = HistogramAggregator("genai_factory.observability")
    aggregator.histogram("h", boundaries=(1.0,)).record(2.0, {"a": "b"})
    inner = _Recording()
    exporter = MergingMetricExporter(inner, aggregator)
    assert exporter.export(MetricsData(resource_metrics=[])) is MetricExportResult.SUCCESS
    assert [p.count for p in _points(inner.exported[0])["h"]] == [1]
    assert exporter.force_flush() and inner.flushed
    exporter.shutdown()
    assert inner.closed
    assert cumulative(ConsoleMetricExporter()) and cumulative(inner)


def test_setup_aggregates_by_default_and_scrapes_and_schema_hold(tmp_path: Any) -> None:
    telemetry = setup_telemetry(TelemetryConfig(sqlite_path=tmp_path / "t.db"))
    assert telemetry.genai.metrics.aggregator is not None
    response = ChatCompletionResponse.model_validate(
        {"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 9, "completion_tokens": 3},
         "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}
    )  # fmt: skip
    for _ in range(3):
        with telemetry.genai.chat(model="gpt-4o-mini") as call:
            call.record_response(response)
    assert telemetry.prometheus is not None
    text = telemetry.prometheus.exposition().decode()
    assert 'gen_ai_client_token_usage_count{gen_ai_operation_name="chat"' in text
    assert "gen_ai_client_operation_duration_seconds_bucket" in text
    assert "gf_metrics_aggregated_total 9.0" in text  # per call: a duration and two token counts
    telemetry.shutdown()
    # With a reader we cannot merge into, the SDK aggregates as before.
    other = setup_telemetry(
        TelemetryConfig(sqlite_path=tmp_path / "u.db"),
        extra_metric_readers=[InMemoryMetricReader()],
    )
    assert other.genai.metrics.aggregator is None
    other.shutdown()


def test_aggregated_model_calls_match_the_sdk_and_the_convention() -> None:
    captured = make_captured()  # SDK aggregation, checked against the convention elsewhere
    aggregator = HistogramAggregator("genai_factory.observability")
    reader = InMemoryMetricReader()
    telemetry = GenAITelemetry(
        meter_provider=MeterProvider(metric_readers=[reader]),
        tracer_provider=captured.tracer_provider,
        price_table=PriceTable.load(),
        histogram_aggregator=aggregator,
    )
    response = ChatCompletionResponse.model_validate(
        {"model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 9, "completion_tokens": 3},
         "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}
    )  # fmt: skip
    for genai in (captured.telemetry, telemetry):
        for model in ("gpt-4o-mini", "gpt-4o"):
            with genai.chat(model=model) as call:
                call.record_response(response)
        try:
            with genai.chat(model="gpt-4o"):
                raise TimeoutError("upstream")
        except TimeoutError:
            pass
    sdk = _points(captured.reader.get_metrics_data())
    merged = aggregator.merge_into(reader.get_metrics_data())
    ours = _points(merged)
    assert set(ours) == set(sdk) == {sc.M_TOKEN_USAGE, sc.M_OPERATION_DURATION}
    assert _comparable({sc.M_TOKEN_USAGE: ours[sc.M_TOKEN_USAGE]}) == _comparable(
        {sc.M_TOKEN_USAGE: sdk[sc.M_TOKEN_USAGE]}
    )
    shape = {
        name: sorted(
            (sorted(p.attributes.items()), p.count, list(p.explicit_bounds)) for p in points
        )
        for name, points in ours.items()
    }
    assert shape == {
        name: sorted(
            (sorted(p.attributes.items()), p.count, list(p.explicit_bounds)) for p in points
        )
        for name, points in sdk.items()
    }
    for rm in merged.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                _kind, unit, bounds, required, allowed = METRICS[metric.name]
                assert metric.unit == unit
                for point in metric.data.data_points:
                    assert required <= set(point.attributes or {}) <= allowed
                    if bounds is not None:
                        assert list(point.explicit_bounds) == bounds


def test_prometheus_bridge_merges_producers() -> None:
    bridge = PrometheusBridge()
    MeterProvider(metric_readers=[bridge])
    aggregator = HistogramAggregator("genai_factory.observability")
    aggregator.histogram("gen_ai.client.operation.duration", unit="s", boundaries=(1.0,)).record(
        0.5, {"gen_ai.operation.name": "chat"}
    )
    assert "gen_ai_client_operation_duration_seconds_count" not in bridge.exposition().decode()
    bridge.add_producer(aggregator.merge_into)
    text = bridge.exposition().decode()
    assert (
        'gen_ai_client_operation_duration_seconds_count{gen_ai_operation_name="chat"} 1.0' in text
    )
