"""Time-ordered trace ids: the time in front, random bits behind, and sampling still fair."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased

from genai_factory.observability.ids import TimeOrderedIdGenerator
from genai_factory.observability.setup import TelemetryConfig, setup_telemetry

pytestmark = pytest.mark.unit


def test_a_trace_id_starts_with_the_seconds_and_ends_with_random_bits() -> None:
    generator = TimeOrderedIdGenerator(clock=lambda: 1_800_000_000.9)
    ids = [generator.generate_trace_id() for _ in range(200)]
    assert {trace_id >> 96 for trace_id in ids} == {1_800_000_000}
    assert len({trace_id & (2**96 - 1) for trace_id in ids}) == 200
    assert all(0 < trace_id < 2**128 for trace_id in ids)
    span_ids = {generator.generate_span_id() for _ in range(200)}
    assert len(span_ids) == 200 and all(0 < span_id < 2**64 for span_id in span_ids)


def test_ids_sort_by_the_second_they_were_made() -> None:
    now = [1_700_000_000.0]
    generator = TimeOrderedIdGenerator(clock=lambda: now[0])
    ids = []
    for _ in range(50):
        ids.append(generator.generate_trace_id())
        now[0] += 1
    assert ids == sorted(ids)


def test_an_all_zero_id_is_never_returned(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: Iterator[int] = iter([0, 0, 5, 0, 9])
    monkeypatch.setattr(random, "getrandbits", lambda bits: next(draws))
    generator = TimeOrderedIdGenerator(clock=lambda: 0.0)
    assert generator.generate_trace_id() == 5  # the zero id is invalid in W3C Trace Context
    assert generator.generate_span_id() == 9


def test_ratio_sampling_still_keeps_its_share() -> None:
    # TraceIdRatioBased decides on the low 64 bits, which stay random
    sampler = TraceIdRatioBased(0.25)
    generator = TimeOrderedIdGenerator(clock=lambda: 1_750_000_000.0)
    kept = sum(
        sampler.should_sample(None, generator.generate_trace_id(), "s").decision
        == Decision.RECORD_AND_SAMPLE
        for _ in range(4000)
    )
    assert 850 < kept < 1150  # 1000 expected; beyond 5 standard deviations either way fails


def test_setup_uses_time_ordered_ids_unless_told_not_to(tmp_path: Path) -> None:
    telemetry = setup_telemetry(TelemetryConfig(sqlite_path=tmp_path / "a.db"))
    provider = telemetry.tracer_provider
    assert isinstance(provider, TracerProvider)
    before = int(time.time())
    with provider.get_tracer("t").start_as_current_span("s") as span:
        seconds = span.get_span_context().trace_id >> 96
    assert before - 1 <= seconds <= int(time.time()) + 1
    telemetry.shutdown()

    plain = setup_telemetry(
        TelemetryConfig(sqlite_path=tmp_path / "b.db", time_ordered_trace_ids=False)
    )
    assert isinstance(plain.tracer_provider.id_generator, RandomIdGenerator)
    plain.shutdown()
