"""Anomalies on latency, error rate, tokens and cost: an EWMA level with a MAD scale.

:class:`RobustBaseline` keeps an exponentially weighted level and the median absolute deviation
of recent residuals. A point scores ``(value - level) / (1.4826 * MAD)``: robust standard
deviations, so one spike does not inflate the scale the way a standard deviation would, and the
level update is clipped so a spike barely moves it. With ``seasonal=True`` the
:class:`AnomalyDetector` also keeps one baseline per hour of day and uses it once it has seen
enough points for that hour (daily traffic cycles stop looking anomalous).

Example:
    >>> baseline = RobustBaseline(warmup=10)
    >>> scores = [baseline.update(v) for v in [100, 102, 98, 101, 99, 100, 103, 97, 100, 101]]
    >>> baseline.update(100.5) < 1, baseline.update(180) > 10
    (True, True)
"""

from __future__ import annotations

import statistics
from collections import OrderedDict, deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from genai_factory.observability.events import AnomalyEvent, EventBus
from genai_factory.observability.store import TelemetryStore

__all__ = ["AnomalyDetector", "RobustBaseline", "observe_store_minute"]

_MAD_TO_SIGMA = 1.4826


class RobustBaseline:
    """EWMA level + rolling MAD scale for one series.

    Args:
        alpha: EWMA weight of a new point (0..1).
        window: how many recent residuals the MAD is taken over.
        warmup: points needed before scores are produced (the level starts at their median).
        clip: residuals are clipped to ``clip`` scales when updating the level.
        min_relative_scale: the scale never falls below this fraction of the level, so a flat
            series (MAD 0) does not turn a 1% wobble into an anomaly.
    """

    def __init__(
        self,
        alpha: float = 0.1,
        window: int = 120,
        warmup: int = 30,
        clip: float = 3.0,
        min_relative_scale: float = 0.01,
    ) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if warmup < 3 or window < warmup:
            raise ValueError("need warmup >= 3 and window >= warmup")
        self.alpha = alpha
        self.window = window
        self.warmup = warmup
        self.clip = clip
        self.min_relative_scale = min_relative_scale
        self.level: float | None = None
        self.count = 0
        self._warm: list[float] = []
        self._residuals: deque[float] = deque(maxlen=window)

    @property
    def ready(self) -> bool:
        return self.level is not None

    @property
    def scale(self) -> float:
        if self.level is None or not self._residuals:
            return float("nan")
        mad = statistics.median(abs(r) for r in self._residuals)
        floor = max(abs(self.level) * self.min_relative_scale, 1e-12)
        return max(_MAD_TO_SIGMA * mad, floor)

    def score(self, value: float) -> float | None:
        """Robust z-score of ``value`` against the baseline (None while warming up)."""
        if self.level is None:
            return None
        return (value - self.level) / self.scale

    def update(self, value: float) -> float | None:
        """Score ``value``, then fold it into the baseline; returns the score."""
        self.count += 1
        if self.level is None:
            self._warm.append(value)
            if len(self._warm) >= self.warmup:
                self.level = statistics.median(self._warm)
                self._residuals.extend(v - self.level for v in self._warm)
                self._warm.clear()
            return None
        scale = self.scale
        residual = value - self.level
        score = residual / scale
        bounded = max(-self.clip * scale, min(self.clip * scale, residual))
        self.level += self.alpha * bounded
        self._residuals.append(residual)
        return score


class AnomalyDetector:
    """Watches named series and publishes an :class:`AnomalyEvent` when a point's score passes.

    Args:
        bus: where events go (None: only returned).
        threshold: robust z-score beyond which a point is anomalous.
        direction: ``high`` for series where only rises hurt (latency, errors, cost), or ``both``.
        seasonal: also keep a baseline per hour of day (UTC) and prefer it once warmed up.
        max_series: bound on tracked series (least recently used dropped).
        baseline: keyword arguments for each :class:`RobustBaseline`.
    """

    def __init__(
        self,
        bus: EventBus | None = None,
        threshold: float = 4.0,
        direction: Literal["high", "both"] = "high",
        seasonal: bool = False,
        max_series: int = 1000,
        baseline: dict[str, Any] | None = None,
    ) -> None:
        self.bus = bus
        self.threshold = threshold
        self.direction = direction
        self.seasonal = seasonal
        self.max_series = max_series
        self.baseline = dict(baseline or {})
        self._series: OrderedDict[str, RobustBaseline] = OrderedDict()
        self._hourly: dict[tuple[str, int], RobustBaseline] = {}

    def to_params(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "direction": self.direction,
            "seasonal": self.seasonal,
            "max_series": self.max_series,
            "baseline": self.baseline,
        }

    def _baseline(self, series: str) -> RobustBaseline:
        found = self._series.get(series)
        if found is None:
            found = self._series[series] = RobustBaseline(**self.baseline)
            if len(self._series) > self.max_series:
                dropped, _ = self._series.popitem(last=False)
                for hour in range(24):
                    self._hourly.pop((dropped, hour), None)
        else:
            self._series.move_to_end(series)
        return found

    async def observe(
        self, series: str, value: float, at: datetime | None = None
    ) -> AnomalyEvent | None:
        """Add one point; returns (and publishes) an event when it is anomalous."""
        at = at or datetime.now(UTC)
        overall = self._baseline(series)
        chosen, hour = overall, None
        if self.seasonal:
            hour = at.astimezone(UTC).hour
            hourly = self._hourly.get((series, hour))
            if hourly is None:
                hourly = self._hourly[(series, hour)] = RobustBaseline(**self.baseline)
            if hourly.ready:
                chosen = hourly
            level, scale = chosen.level, chosen.scale
            score = chosen.score(value)
            overall.update(value)
            hourly.update(value)
        else:
            level, scale = overall.level, overall.scale
            score = overall.update(value)
        if score is None or level is None:
            return None
        if not (score > self.threshold or (self.direction == "both" and score < -self.threshold)):
            return None
        event = AnomalyEvent(
            series=series,
            value=value,
            baseline=level,
            scale=scale,
            score=score,
            direction="high" if score > 0 else "low",
            at=at,
            seasonal_hour=hour if chosen is not overall else None,
        )
        if self.bus is not None:
            await self.bus.publish(event)
        return event

    async def observe_many(
        self, points: Sequence[tuple[str, float]], at: datetime | None = None
    ) -> list[AnomalyEvent]:
        events = []
        for series, value in points:
            event = await self.observe(series, value, at)
            if event is not None:
                events.append(event)
        return events


async def observe_store_minute(
    detector: AnomalyDetector, store: TelemetryStore, minute_start: datetime
) -> list[AnomalyEvent]:
    """Feed one finished minute of the store's rollups: p95 latency, error rate, tokens, cost."""
    start_s = int(minute_start.timestamp()) // 60 * 60
    since_ns, until_ns = start_s * 10**9, (start_s + 60) * 10**9
    summary = store.summary(since_ns=since_ns, until_ns=until_ns)
    if not summary["model_calls"]:
        return []
    latency = store.latency(since_ns=since_ns, step_s=60)
    row = next((r for r in latency["series"] if r["t"] == start_s), None)
    cost = store.cost(since_ns=since_ns, until_ns=until_ns, step_s=60)
    spend = sum(cost["totals"][g]["cost_usd"] for g in cost["groups"]) if cost["groups"] else 0.0
    points = [
        ("latency_p95_ms", float(row["p95"] or 0.0) if row else 0.0),
        ("error_rate", summary["error_rate"]),
        ("tokens", float(summary["input_tokens"] + summary["output_tokens"])),
        ("cost_usd", float(spend or summary["span_cost_usd"])),
    ]
    return await detector.observe_many(points, minute_start)
