"""The SQLite trace store: batched WAL writes behind a bounded queue, rollups, console queries."""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from genai_factory.observability.exporters import SQLiteSpanExporter, span_to_row
from genai_factory.observability.setup import TelemetryConfig, setup_telemetry
from genai_factory.observability.store import (
    COLUMN_ATTRIBUTES,
    CostRow,
    SpanRow,
    TelemetryStore,
    percentile_from_histogram,
)
from genai_factory.shared.models import Verdict

pytestmark = pytest.mark.unit

MINUTE_NS = 60 * 10**9


def row(
    trace: int,
    span: int,
    *,
    start_ms: float,
    duration_ms: float,
    parent: int | None = None,
    model: str = "m",
    status: str = "UNSET",
    **extra: object,
) -> SpanRow:
    start = int(start_ms * 1e6)
    return SpanRow(
        trace_id=f"{trace:032x}",
        span_id=f"{span:016x}",
        parent_span_id=None if parent is None else f"{parent:016x}",
        is_root=parent is None,
        name=f"chat {model}",
        kind="CLIENT",
        service="test",
        start_ns=start,
        end_ns=start + int(duration_ms * 1e6),
        status=status,
        operation="chat",
        model=model,
        **extra,  # type: ignore[arg-type]
    )


def test_spans_from_the_sdk_land_in_sqlite_with_a_waterfall(tmp_path: Path) -> None:
    telemetry = setup_telemetry(
        TelemetryConfig(sqlite_path=tmp_path / "t.db", schedule_delay_ms=50)
    )
    genai = telemetry.genai
    tracer = telemetry.tracer_provider.get_tracer("gateway")
    with tracer.start_as_current_span("POST /v1/chat/completions") as root:
        with genai.chat(model="gpt-4o-mini") as call:
            genai.record_cache_lookup(hit=True, cache="exact")
            genai.record_guard_verdict(Verdict(decision="redact"), stage="output", guard="pii")
            call.set_usage(12, 3)
        with genai.execute_tool("lookup"):
            pass
    telemetry.flush()
    store = telemetry.store
    assert store is not None and store.count_spans() == 3
    trace_id = format(root.get_span_context().trace_id, "032x")
    (request,) = store.recent_requests()
    assert request["trace_id"] == trace_id and request["name"] == "POST /v1/chat/completions"
    # the root span has no model of its own: the request log shows its trace's totals
    assert (
        request["model"] == "gpt-4o-mini"
        and request["input_tokens"] == 12
        and request["spans"] == 3
    )
    spans = store.trace(trace_id)
    assert [s["name"] for s in spans] == [
        "POST /v1/chat/completions",
        "chat gpt-4o-mini",
        "execute_tool lookup",
    ]
    assert spans[1]["parent_span_id"] == spans[0]["span_id"] == spans[2]["parent_span_id"]
    assert spans[1]["attributes"]["gen_ai.usage.output_tokens"] == 3
    assert [e["name"] for e in spans[1]["events"]] == ["gf.cache.lookup", "gf.guard.verdict"]
    since = time.time_ns() - 10 * MINUTE_NS
    assert {
        (s["name"], s["outcome"], s["count"]) for s in store.signals(kind="cache", since_ns=since)
    } == {("exact", "hit", 1)}
    assert {(s["name"], s["outcome"]) for s in store.signals(kind="guard", since_ns=since)} == {
        ("pii:output", "redact")
    }
    assert telemetry.sqlite_exporter is not None and telemetry.sqlite_exporter.exported == 3
    telemetry.shutdown()


class BlockingExporter(SpanExporter):
    """Holds the first export until released, as a slow backend would."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.received = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        self.received += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_a_slow_exporter_drops_spans_instead_of_accumulating_them(tmp_path: Path) -> None:
    slow = BlockingExporter()
    telemetry = setup_telemetry(
        TelemetryConfig(
            sqlite_path=tmp_path / "t.db",
            max_queue_size=64,
            max_export_batch_size=16,
            schedule_delay_ms=10,
        ),
        extra_span_exporters=[slow],
    )
    tracer = telemetry.tracer_provider.get_tracer("load")
    for _ in range(2000):
        with tracer.start_as_current_span("s"):
            pass
    slow.release.set()
    telemetry.flush()
    # at most one batch in flight plus a full queue survived; the rest were dropped, not queued
    assert slow.received <= 64 + 16
    assert telemetry.store is not None and telemetry.store.count_spans() >= 64
    telemetry.shutdown()


def test_latency_percentiles_from_rollups_track_the_exact_ones(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    rng = random.Random(7)
    durations = [rng.lognormvariate(5, 0.8) for _ in range(3000)]  # ~150 ms median
    base_ms = 1_000 * 60_000.0  # minute 1000
    rows = [
        row(
            i + 1,
            i + 1,
            start_ms=base_ms + i * 10,
            duration_ms=d,
            model="gpt-4o" if i % 2 else "smollm2",
            status="ERROR" if i % 50 == 0 else "UNSET",
            input_tokens=10,
            output_tokens=5,
        )
        for i, d in enumerate(durations)
    ]
    for start in range(0, len(rows), 500):
        store.write_spans(rows[start : start + 500])
    stats = store.latency(since_ns=int(base_ms * 1e6), step_s=60)
    exact = np.percentile([d for i, d in enumerate(durations) if i % 2 == 0], [50, 99])
    smollm2 = stats["by_model"]["smollm2"]
    assert smollm2["count"] == 1500
    assert smollm2["p50"] == pytest.approx(exact[0], rel=0.13)
    assert smollm2["p99"] == pytest.approx(exact[1], rel=0.13)
    assert sum(point["calls"] for point in stats["series"]) == 3000
    assert sum(point["errors"] for point in stats["series"]) == 60
    summary = store.summary(since_ns=int(base_ms * 1e6))
    assert summary["model_calls"] == 3000 and summary["output_tokens"] == 15000
    assert summary["error_rate"] == pytest.approx(0.02)
    assert set(store.models_seen(since_ns=int(base_ms * 1e6))) == {"gpt-4o", "smollm2"}
    store.close()


def test_percentile_of_an_empty_histogram_is_none() -> None:
    assert percentile_from_histogram({}, 0.5) is None
    assert percentile_from_histogram({3: 1}, 1.0) == pytest.approx(1.25**3)


def test_cost_rollups_group_by_team_and_model(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")

    def cost(ts_min: int, team: str, model: str, usd: str) -> CostRow:
        return CostRow(
            request_id="r",
            ts_ns=ts_min * MINUTE_NS,
            model=model,
            provider=None,
            org_id="acme",
            team_id=team,
            user_id=None,
            key_id=None,
            route=None,
            tags='{"feature": "chat"}',
            input_tokens=10,
            output_tokens=5,
            cached_input_tokens=0,
            cost_usd=usd,
            cache_hit=False,
        )

    store.write_costs(
        [
            cost(100, "search", "gpt-4o", "0.50"),
            cost(100, "search", "gpt-4o", "0.25"),
            cost(101, "ads", "smollm2", "0.10"),
            cost(105, "ads", "gpt-4o", "1.00"),
        ]
    )
    by_team = store.cost(since_ns=100 * MINUTE_NS, step_s=300, group_by="team")
    assert by_team["groups"] == ["ads", "search"]
    assert by_team["series"] == [
        {"t": 6000, "values": {"search": 0.75, "ads": 0.1}},
        {"t": 6300, "values": {"ads": 1.0}},
    ]
    by_model = store.cost(since_ns=100 * MINUTE_NS, group_by="model", until_ns=102 * MINUTE_NS)
    assert (
        by_model["totals"]["gpt-4o"]["cost_usd"] == 0.75
        and by_model["totals"]["gpt-4o"]["requests"] == 2
    )
    assert str(store.cost_total("team", "ads", since_ns=0)) == "1.10"
    assert str(store.cost_total("feature", "chat", since_ns=101 * MINUTE_NS)) == "1.10"
    assert str(store.cost_total("all", None, since_ns=0)) == "1.85"
    with pytest.raises(ValueError, match="group_by"):
        store.cost(since_ns=0, group_by="user")
    store.close()


def test_prune_and_retention_bound_the_file(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db", retention_s=None)
    store.write_spans(
        [row(1, 1, start_ms=1_000, duration_ms=5), row(2, 2, start_ms=10 * 60_000, duration_ms=5)]
    )
    assert store.prune(5 * MINUTE_NS) == 1
    assert [r["trace_id"] for r in store.recent_requests()] == [f"{2:032x}"]
    assert store.latency(since_ns=0)["by_model"]["m"]["count"] == 1
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.count_spans()


def test_readers_in_other_threads_see_writes_while_they_happen(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            store.write_spans(
                [
                    row(n + i + 1, n + i + 1, start_ms=60_000.0 + n + i, duration_ms=3)
                    for i in range(50)
                ]
            )
            n += 50

    def reader() -> None:
        try:
            for _ in range(50):
                store.recent_requests(limit=20)
                store.latency(since_ns=0)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=writer),
        threading.Thread(target=reader),
        threading.Thread(target=reader),
    ]
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join()
    stop.set()
    threads[0].join()
    assert not errors
    assert store.count_spans() >= 50
    store.close()


def test_a_failing_store_never_raises_into_the_sdk(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    exporter = SQLiteSpanExporter(store)
    store.close()
    telemetry = setup_telemetry(
        TelemetryConfig(span_exporters=[], metric_exporters=[]), extra_span_exporters=[exporter]
    )
    with telemetry.genai.chat(model="m"):
        pass
    telemetry.flush()
    assert exporter.failed == 1 and exporter.exported == 0
    assert "span export" in caplog.text
    with pytest.raises(sqlite3.ProgrammingError):
        store.write_spans([row(1, 1, start_ms=0, duration_ms=1)])
    telemetry.shutdown()


def test_long_windows_read_the_hourly_rollups_with_the_same_totals(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db", retention_s=None)
    now_ms = time.time_ns() / 1e6
    rows = [row(i + 1, i + 1, start_ms=now_ms - (i % 20) * 3_600_000 - 1000, duration_ms=10 + i % 300,
                model=f"m{i % 3}", status="ERROR" if i % 10 == 0 else "UNSET", input_tokens=5, output_tokens=2)
            for i in range(2000)]  # fmt: skip
    for i, r in enumerate(rows):
        r.signals = [("cache", "semantic", "hit" if i % 4 == 0 else "miss")]
    store.write_spans(rows)
    store.write_costs([CostRow(request_id="r", ts_ns=r.start_ns, model=r.model or "", provider=None, org_id=None,
                               team_id="t", user_id=None, key_id=None, route=None, tags="{}", input_tokens=5,
                               output_tokens=2, cached_input_tokens=0, cost_usd="0.5", cache_hit=False)
                       for r in rows[:100]])  # fmt: skip
    day_ago = time.time_ns() - 24 * 3600 * 10**9
    by_minute = store.latency(since_ns=day_ago, step_s=60)
    by_hour = store.latency(since_ns=day_ago, step_s=3600)
    assert by_hour["by_model"] == by_minute["by_model"]
    assert all(p["t"] % 3600 == 0 for p in by_hour["series"])
    assert any(p["t"] % 3600 != 0 for p in by_minute["series"])
    assert (
        sum(p["calls"] for p in by_hour["series"])
        == 2000
        == sum(p["calls"] for p in by_minute["series"])
    )
    assert store.summary(since_ns=day_ago)["errors"] == 200
    hourly_cost = store.cost(since_ns=day_ago, step_s=3600)
    minute_cost = store.cost(since_ns=day_ago, step_s=60)
    assert hourly_cost["totals"]["t"]["cost_usd"] == minute_cost["totals"]["t"]["cost_usd"] == 50.0
    hits = sum(
        s["count"] for s in store.signals(kind="cache", since_ns=day_ago) if s["outcome"] == "hit"
    )
    assert hits == 500
    # pruning drops an hour row only once the whole hour is older than the cut
    store.prune(time.time_ns() - 10 * 3600 * 10**9)
    assert store.summary(since_ns=day_ago)["model_calls"] in range(900, 1200)
    store.close()


_ATTRIBUTE_VALUES = st.one_of(
    st.text(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # past 64 bits: the fallback encoder
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.text(max_size=5), max_size=3),
    st.lists(st.integers(min_value=-(2**70), max_value=2**70), max_size=3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.text(min_size=1, max_size=12), _ATTRIBUTE_VALUES, max_size=6))
def test_exported_attributes_are_json_that_reads_back_the_same(
    attributes: dict[str, Any],
) -> None:
    # whatever the SDK accepts as attributes is stored as JSON the console reads back unchanged
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    with provider.get_tracer("t").start_as_current_span("s", attributes=attributes) as span:
        span.add_event("e", attributes=attributes)
    provider.shutdown()
    (finished,) = memory.get_finished_spans()
    row = span_to_row(finished)
    expected = {k: list(v) if isinstance(v, tuple) else v for k, v in finished.attributes.items()}
    assert json.loads(row.attributes) == expected
    assert row.events is not None
    assert json.loads(row.events)[0]["attributes"] == expected


def test_traces_that_share_their_index_key_stay_apart(tmp_path: Path) -> None:
    # the index holds the first 15 hex digits only: ids equal up to there must not mix
    store = TelemetryStore(tmp_path / "t.db")
    first, second = "abc" + "0" * 12 + "1" * 17, "abc" + "0" * 12 + "2" * 17
    base = row(1, 1, start_ms=0, duration_ms=1)
    store.write_spans(
        [dataclasses.replace(base, trace_id=trace_id) for trace_id in (first, second)]
    )
    assert [span["trace_id"] for span in store.trace(first)] == [first]
    assert [span["trace_id"] for span in store.trace(second)] == [second]
    assert {r["trace_id"] for r in store.recent_requests(limit=10)} == {first, second}
    assert all(r["spans"] == 1 for r in store.recent_requests(limit=10))
    store.close()


@given(trace_id=st.text(min_size=0, max_size=40))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_any_trace_id_text_is_stored_and_found_again(tmp_path: Path, trace_id: str) -> None:
    # rows written by hand (or by another tool) may carry ids that are not hex at all
    store = TelemetryStore(tmp_path / f"{uuid.uuid4().hex}.db")
    span = dataclasses.replace(row(1, 1, start_ms=0, duration_ms=1), trace_id=trace_id)
    assert store.write_spans([span]) == 1
    assert [s["trace_id"] for s in store.trace(trace_id)] == [trace_id]
    store.close()


def test_a_store_written_by_schema_3_is_migrated_and_keeps_its_traces(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = TelemetryStore(path)
    store.write_spans(
        [row(7, 1, start_ms=0, duration_ms=2), row(7, 2, start_ms=1, duration_ms=1, parent=1)]
    )
    store.close()
    # turn it back into what version 3 wrote: no trace_key column, an index on the id text
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX spans_trace_key")
    conn.execute("ALTER TABLE spans DROP COLUMN trace_key")
    conn.execute("CREATE INDEX spans_trace ON spans(trace_id)")
    conn.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()

    store = TelemetryStore(path)
    assert [s["span_id"] for s in store.trace(f"{7:032x}")] == [f"{1:016x}", f"{2:016x}"]
    store.close()
    conn = sqlite3.connect(path)
    indexes = {
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")
    }
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    plan = " ".join(
        str(r[-1])
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM spans WHERE trace_key = 1 AND trace_id = 'x'"
        )
    )
    conn.close()
    assert "spans_trace_key" in indexes and "spans_trace" not in indexes
    assert version == "4"
    assert "spans_trace_key" in plan  # the lookup uses the index, not a scan


def test_span_to_row_reads_attributes_from_any_readable_span() -> None:
    # a ReadableSpan built by hand (another SDK's spans, a test) has no SDK-internal dict
    from opentelemetry.sdk.trace import ReadableSpan as Readable
    from opentelemetry.trace import SpanContext, TraceFlags

    context = SpanContext(trace_id=5, span_id=6, is_remote=False, trace_flags=TraceFlags(1))
    span = Readable(
        name="chat m",
        context=context,
        attributes={"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 4},
        start_time=1,
        end_time=3,
    )
    converted = span_to_row(span)
    assert converted.operation == "chat" and converted.input_tokens == 4
    # the column holds the token count; the JSON does not repeat it, the merged view has it
    assert "gen_ai.usage.input_tokens" not in json.loads(converted.attributes)
    assert converted.all_attributes() == {
        "gen_ai.operation.name": "chat",
        "gen_ai.usage.input_tokens": 4,
    }
    assert converted.trace_id == f"{5:032x}" and converted.kind == "INTERNAL"


_COLUMN_VALUES = (
    st.none()
    | st.text(max_size=8)
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)  # JSON has no infinity
    | st.booleans()
    | st.lists(st.text(max_size=4), max_size=2)
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    values=st.fixed_dictionaries(
        {key: _COLUMN_VALUES for _, key, _ in COLUMN_ATTRIBUTES},
    ),
    ttft=st.none() | st.floats(min_value=0, max_value=1e6) | st.booleans() | st.text(max_size=3),
)
def test_attributes_held_by_columns_read_back_exactly(values: dict[str, Any], ttft: Any) -> None:
    # the JSON leaves out what a column holds exactly; the stored trace gives back every
    # attribute with its value and type, whatever type the caller used
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    attributes = {key: value for key, value in values.items() if value is not None}
    if ttft is not None:
        attributes["gen_ai.response.time_to_first_chunk"] = ttft
    attributes["gen_ai.request.max_tokens"] = 7
    with tempfile.TemporaryDirectory() as folder:
        store = TelemetryStore(Path(folder) / "t.db")
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(store)))
        with provider.get_tracer("t").start_as_current_span("s", attributes=attributes) as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
        provider.shutdown()
        (stored,) = store.trace(trace_id)
        store.close()
    expected = {k: list(v) if isinstance(v, tuple | list) else v for k, v in attributes.items()}
    assert stored["attributes"] == expected
    assert {k: type(v) for k, v in stored["attributes"].items()} == {
        k: type(v) for k, v in expected.items()
    }
    tokens = attributes.get("gen_ai.usage.input_tokens")
    assert stored["input_tokens"] == (tokens if type(tokens) is int else None)
    model = attributes.get("gen_ai.request.model")
    # the SDK keeps a list attribute as a tuple; a text column holds its str()
    model = tuple(model) if isinstance(model, list) else model
    assert stored["model"] == (None if model is None else str(model))


def test_a_hand_written_row_shows_its_columns_as_attributes(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    store.write_spans([row(3, 1, start_ms=0, duration_ms=2, input_tokens=5, team_id="t1")])
    (span,) = store.trace(f"{3:032x}")
    store.close()
    assert span["attributes"] == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "m",
        "gen_ai.usage.input_tokens": 5,
        "gf.team_id": "t1",
    }
