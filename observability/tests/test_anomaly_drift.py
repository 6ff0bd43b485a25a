"""Anomalies (EWMA + MAD, optional hour-of-day seasonality) and output drift (PSI, cosine)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genai_factory.observability.anomaly import (
    AnomalyDetector,
    RobustBaseline,
    observe_store_minute,
)
from genai_factory.observability.drift import OutputDriftMonitor, cosine_shift, psi
from genai_factory.observability.events import AnomalyEvent, DriftEvent, EventBus
from genai_factory.observability.store import CostRow, SpanRow, TelemetryStore

pytestmark = pytest.mark.unit


async def test_a_latency_spike_is_flagged_and_noise_is_not() -> None:
    bus = EventBus()
    received: list[AnomalyEvent] = []

    async def handler(event: AnomalyEvent) -> None:
        received.append(event)

    bus.subscribe(handler, AnomalyEvent)
    detector = AnomalyDetector(bus=bus, threshold=5.0)
    rng = random.Random(1)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    for minute in range(300):
        await detector.observe(
            "latency_p95_ms", rng.gauss(200, 10), start + timedelta(minutes=minute)
        )
    assert received == []  # 300 noisy but normal points: no false alarm
    event = await detector.observe("latency_p95_ms", 400.0, start + timedelta(minutes=301))
    assert event is not None and received == [event]
    assert event.direction == "high" and event.score > 5 and 190 < event.baseline < 210
    # one spike barely moves the baseline: the next normal point is normal again
    assert await detector.observe("latency_p95_ms", 205.0) is None
    # a drop is ignored for "high" series but caught when both directions matter
    assert await detector.observe("latency_p95_ms", 10.0) is None
    both = AnomalyDetector(direction="both", baseline={"warmup": 10})
    for value in [100.0, 101, 99, 100, 102, 98, 100, 101, 99, 100, 100]:
        await both.observe("tokens", value)
    low = await both.observe("tokens", 10.0)
    assert low is not None and low.direction == "low"


async def test_hour_of_day_seasonality_catches_what_a_daily_cycle_hides() -> None:
    rng = np.random.default_rng(3)
    plain = AnomalyDetector(threshold=5.0, baseline={"alpha": 0.05, "window": 200, "warmup": 30})
    seasonal = AnomalyDetector(
        threshold=5.0, seasonal=True, baseline={"alpha": 0.2, "window": 30, "warmup": 5}
    )
    start = datetime(2025, 1, 1, tzinfo=UTC)
    seasonal_alerts = 0
    for hour in range(24 * 14):  # two weeks of hourly points, 200 at midnight to 1800 at noon
        at = start + timedelta(hours=hour)
        value = float(1000 + 800 * math.sin(2 * math.pi * (at.hour - 6) / 24) + rng.normal(0, 20))
        await plain.observe("requests", value, at)
        event = await seasonal.observe("requests", value, at)
        if hour >= 24 * 7:  # after a week every hour's baseline is warm
            seasonal_alerts += event is not None
    assert seasonal_alerts == 0  # the daily cycle itself is not anomalous
    midnight = start + timedelta(days=14)
    # noon-level traffic at midnight: normal for the day as a whole, abnormal for the hour
    assert await plain.observe("requests", 1500.0, midnight) is None
    event = await seasonal.observe("requests", 1500.0, midnight)
    assert event is not None and event.seasonal_hour == 0 and 150 < event.baseline < 250


def test_baseline_rejects_bad_parameters_and_flat_series_are_stable() -> None:
    with pytest.raises(ValueError, match="alpha"):
        RobustBaseline(alpha=0)
    with pytest.raises(ValueError, match="warmup"):
        RobustBaseline(warmup=2)
    flat = RobustBaseline(warmup=5)
    for _ in range(10):
        flat.update(50.0)
    assert flat.scale == pytest.approx(0.5)  # 1% of the level, not zero
    assert flat.score(50.4) == pytest.approx(0.8)
    assert RobustBaseline().score(1.0) is None and math.isnan(RobustBaseline().scale)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=80))
def test_scores_are_finite_for_any_series(values: list[float]) -> None:
    baseline = RobustBaseline(warmup=3, window=10)
    for value in values:
        score = baseline.update(value)
        assert score is None or math.isfinite(score)


async def test_store_minutes_feed_the_detector(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    detector = AnomalyDetector(threshold=4.0, baseline={"warmup": 10})
    start = datetime(2025, 1, 1, tzinfo=UTC)
    events: list[AnomalyEvent] = []
    for minute in range(25):
        at = start + timedelta(minutes=minute)
        base_ns = int(at.timestamp() * 1e9)
        errors = 8 if minute == 24 else minute % 2
        rows = [
            SpanRow(
                trace_id=f"{minute:016x}{i:016x}",
                span_id=f"{i + 1:016x}",
                parent_span_id=None,
                is_root=True,
                name="chat m",
                kind="CLIENT",
                service=None,
                start_ns=base_ns + i * 10**8,
                end_ns=base_ns + i * 10**8 + 50 * 10**6,
                status="ERROR" if i < errors else "UNSET",
                operation="chat",
                model="m",
                input_tokens=10,
                output_tokens=10,
            )
            for i in range(40)
        ]
        store.write_spans(rows)
        store.write_costs(
            [
                CostRow(
                    request_id="r",
                    ts_ns=base_ns,
                    model="m",
                    provider=None,
                    org_id=None,
                    team_id="t",
                    user_id=None,
                    key_id=None,
                    route=None,
                    tags="{}",
                    input_tokens=10,
                    output_tokens=10,
                    cached_input_tokens=0,
                    cost_usd="0.01",
                    cache_hit=False,
                )
            ]
        )
        events += await observe_store_minute(detector, store, at)
    assert [e.series for e in events] == ["error_rate"]
    assert await observe_store_minute(detector, store, start - timedelta(hours=1)) == []
    store.close()


def test_psi_and_cosine_shift() -> None:
    rng = np.random.default_rng(0)
    same = psi(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000))
    shifted = psi(rng.normal(0, 1, 2000), rng.normal(1, 1, 2000))
    assert same < 0.05 < 0.2 < shifted
    assert psi([], [1.0]) == 0.0
    assert cosine_shift([[0.0, 0.0]], [[1.0, 0.0]]) == 0.0
    assert cosine_shift([[1.0, 0.0]], [[0.0, 1.0]]) == pytest.approx(1.0)


async def test_embedding_drift_is_detected_from_vectors_alone() -> None:
    rng = np.random.default_rng(5)
    bus = EventBus()
    got: list[DriftEvent] = []

    async def on_drift(event: DriftEvent) -> None:
        got.append(event)

    async def broken(event: DriftEvent) -> None:
        raise RuntimeError("handler bug")

    bus.subscribe(on_drift, DriftEvent)
    bus.subscribe(broken)
    monitor = OutputDriftMonitor(
        name="answers", bus=bus, baseline_size=100, window_size=100, check_every=25
    )
    topic_a = rng.normal(0, 1, 32)
    topic_b = rng.normal(0, 1, 32)
    texts = [f"An answer of ordinary length number {i}." for i in range(400)]
    monitor.set_baseline(texts[:100], [topic_a + rng.normal(0, 0.3, 32) for _ in range(100)])
    assert monitor.baseline_ready
    for text in texts[100:200]:  # same topic: quiet
        assert await monitor.observe(text, topic_a + rng.normal(0, 0.3, 32)) == []
    for text in texts[200:300]:  # answers drift to another topic
        await monitor.observe(text, topic_b + rng.normal(0, 0.3, 32))
    assert [(e.monitor, e.signal, e.statistic) for e in got] == [
        ("answers", "embedding", "cosine_shift")
    ]
    assert got[0].value > 0.05 and got[0].window_size == 100
    for text in texts[300:400]:  # still drifted: no repeated event until it recovers
        await monitor.observe(text, topic_b + rng.normal(0, 0.3, 32))
    assert len(got) == 1
    for text in texts[:100]:  # back to normal, then drifting again fires again
        await monitor.observe(text, topic_a + rng.normal(0, 0.3, 32))
    for text in texts[:100]:
        await monitor.observe(text, topic_b + rng.normal(0, 0.3, 32))
    assert len(got) == 2


def test_refusals_are_recognised() -> None:
    monitor = OutputDriftMonitor(baseline_size=10, window_size=10)
    assert monitor.is_refusal("I'm sorry, but I cannot help with that.")
    assert monitor.is_refusal("As an AI language model, I do not have opinions.")
    assert not monitor.is_refusal("Sorry for the delay, here is the summary you asked for.")
    assert monitor.to_params()["window_size"] == 10
    with pytest.raises(ValueError, match="baseline_size"):
        OutputDriftMonitor(baseline_size=5)
    with pytest.raises(ValueError, match="one embedding per output"):
        monitor.set_baseline(["a"], [])
