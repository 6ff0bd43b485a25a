"""The GenAI metric instruments: convention histograms (with their bucket boundaries) and ours.

One :class:`GenAIMetrics` per meter provider. The convention's histograms carry the explicit
bucket boundaries the GenAI semantic conventions ask for (as the instrument's advisory, which
the SDK's default aggregation honours); the ``gf.*`` counters cover what the conventions do not:
cache hits and misses, guard verdicts, errors by type and spend.

Examples:
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    >>> reader = InMemoryMetricReader()
    >>> metrics = GenAIMetrics(MeterProvider(metric_readers=[reader]))
    >>> metrics.record_cache_lookup(hit=True, cache="semantic")
    >>> [m.name for rm in reader.get_metrics_data().resource_metrics
    ...  for sm in rm.scope_metrics for m in sm.metrics]
    ['gf.cache.hits']
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from opentelemetry import metrics as otel_metrics
from opentelemetry.metrics import Counter, Histogram, MeterProvider, Observation
from opentelemetry.util.types import AttributeValue

from genai_factory.observability import conventions as sc
from genai_factory.observability.histograms import AggregatedHistogram, HistogramAggregator

__all__ = ["DeferredRecorder", "GenAIMetrics", "MetricAttributes", "Role"]

Role = Literal["client", "server"]
MetricAttributes = dict[str, AttributeValue]

_SCOPE = "genai_factory.observability"

_Measurement = tuple[Callable[[float, MetricAttributes], None], float, MetricAttributes]


class DeferredRecorder:
    """Records measurements on a background thread, so a request pays for an append only.

    The queue is bounded with back-pressure: once ``max_pending`` measurements wait, the caller
    records its own inline (counted in ``inline``) until the worker catches up. Nothing is ever
    dropped and memory stays flat; under sustained CPU-bound load it degrades to inline
    recording. ``flush()`` drains the queue synchronously.
    """

    def __init__(self, max_pending: int = 4096, interval_s: float = 0.05) -> None:
        self.max_pending = max_pending
        self.interval_s = interval_s
        self.inline = 0
        self._queue: deque[_Measurement] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gf-metrics", daemon=True)
        self._thread.start()

    def submit(self, method: Callable[[float, MetricAttributes], None], value: float,
               attributes: MetricAttributes) -> None:  # fmt: skip
        if len(self._queue) >= self.max_pending:
            self.inline += 1
            method(value, attributes)
        else:
            self._queue.append((method, value, attributes))

    def flush(self) -> None:
        with self._lock:  # one drainer at a time keeps per-series order
            while self._drain_slice():
                time.sleep(0)  # let the request threads have the GIL between slices

    def _drain_slice(self, size: int = 64) -> bool:
        """Record up to ``size`` measurements; False once the queue is empty."""
        for _ in range(size):
            try:
                method, value, attributes = self._queue.popleft()
            except IndexError:
                return False
            method(value, attributes)
        return True

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()


class GenAIMetrics:
    """Creates the instruments once; the ``record_*`` helpers keep attribute sets low-cardinality.

    Args:
        meter_provider: where the instruments live; the global provider when None.
        defer: record through a :class:`DeferredRecorder` (off the request path).
        aggregator: when set, the GenAI histograms are aggregated there (one lock per call,
            no per-measurement SDK work) instead of in the SDK; the readers must then merge its
            output (:meth:`HistogramAggregator.merge_into`), as ``setup_telemetry`` arranges.
        role: ``client`` records the client-side GenAI histograms (operation duration, time to
            first chunk, time per output chunk, token usage); ``server`` records the model-server
            ones (request duration, time to first token, time per output token).
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        role: Role = "client",
        defer: bool = False,
        aggregator: HistogramAggregator | None = None,
    ) -> None:
        self.role = role
        self.defer = defer
        self.aggregator = aggregator
        self._recorder = DeferredRecorder() if defer else None
        meter = (meter_provider or otel_metrics.get_meter_provider()).get_meter(_SCOPE)
        # id(SDK instrument) -> its aggregated twin, for record() to dispatch on.
        self._aggregated: dict[int, AggregatedHistogram] = {}

        def histogram(name: str, unit: str, description: str, bounds: Sequence[float]) -> Histogram:
            instrument = meter.create_histogram(
                name,
                unit=unit,
                description=description,
                explicit_bucket_boundaries_advisory=bounds,
            )
            if aggregator is not None:
                self._aggregated[id(instrument)] = aggregator.histogram(
                    name, unit=unit, description=description, boundaries=bounds
                )
            return instrument

        self.token_usage = histogram(
            sc.M_TOKEN_USAGE,
            "{token}",
            "Number of input and output tokens used.",
            sc.TOKEN_BUCKETS,
        )
        if role == "client":
            self.operation_duration = histogram(
                sc.M_OPERATION_DURATION, "s", "GenAI operation duration.", sc.DURATION_BUCKETS_S
            )
            self.time_to_first = histogram(
                sc.M_TIME_TO_FIRST_CHUNK,
                "s",
                "Time to receive the first chunk of a streamed response.",
                sc.DURATION_BUCKETS_S,
            )
            self.time_per_output = histogram(
                sc.M_TIME_PER_OUTPUT_CHUNK,
                "s",
                "Time between consecutive chunks after the first one.",
                sc.DURATION_BUCKETS_S,
            )
        else:
            self.operation_duration = histogram(
                sc.M_SERVER_REQUEST_DURATION,
                "s",
                "Generative AI server request duration.",
                sc.DURATION_BUCKETS_S,
            )
            self.time_to_first = histogram(
                sc.M_SERVER_TTFT,
                "s",
                "Time to generate first token for successful responses.",
                sc.SERVER_TTFT_BUCKETS_S,
            )
            self.time_per_output = histogram(
                sc.M_SERVER_TPOT,
                "s",
                "Time per output token generated after the first token.",
                sc.SERVER_TPOT_BUCKETS_S,
            )
        if aggregator is not None:
            # Also keeps every collection non-empty: the SDK skips exporting an empty one, which
            # would skip the aggregated histograms merged into it.
            meter.create_observable_counter(
                sc.M_AGGREGATED,
                callbacks=[lambda _: [Observation(aggregator.measurements)]],
                unit="{measurement}",
                description="Measurements recorded by the in-process histogram aggregation.",
            )
        self.cache_hits = meter.create_counter(
            sc.M_CACHE_HITS, unit="{hit}", description="Response cache hits."
        )
        self.cache_misses = meter.create_counter(
            sc.M_CACHE_MISSES, unit="{miss}", description="Response cache misses."
        )
        self.guard_verdicts = meter.create_counter(
            sc.M_GUARD_VERDICTS, unit="{verdict}", description="Guard verdicts by decision."
        )
        self.errors = meter.create_counter(
            sc.M_ERRORS, unit="{error}", description="Failed operations by error type."
        )
        self.spend = meter.create_counter(
            sc.M_SPEND, unit="USD", description="Spend attributed to model calls, in US dollars."
        )

    def to_params(self) -> dict[str, object]:
        return {"role": self.role, "defer": self.defer, "aggregate": self.aggregator is not None}

    @property
    def recorded_inline(self) -> int:
        """Measurements the caller recorded itself because the deferred queue was full."""
        return self._recorder.inline if self._recorder else 0

    def record(self, histogram: Histogram, value: float, attributes: MetricAttributes) -> None:
        aggregated = self._aggregated.get(id(histogram))
        if aggregated is not None:
            aggregated.record(value, attributes)
        elif self._recorder is None:
            histogram.record(value, attributes)
        else:
            self._recorder.submit(histogram.record, value, attributes)

    def record_many(self, records: Iterable[tuple[Histogram, float, MetricAttributes]]) -> None:
        """Record several histogram values (one lock acquisition when aggregating)."""
        if self.aggregator is None:
            for histogram, value, attributes in records:
                self.record(histogram, value, attributes)
            return
        self.aggregator.record_many(
            (self._aggregated[id(histogram)], value, attributes)
            for histogram, value, attributes in records
        )

    def add(self, counter: Counter, value: float, attributes: MetricAttributes) -> None:
        if self._recorder is None:
            counter.add(value, attributes)
        else:
            self._recorder.submit(counter.add, value, attributes)

    def flush(self) -> None:
        """Record every deferred measurement now (before reading or exporting metrics)."""
        if self._recorder is not None:
            self._recorder.flush()

    def close(self) -> None:
        if self._recorder is not None:
            self._recorder.close()

    def record_cache_lookup(self, *, hit: bool, cache: str = "response") -> None:
        self.add(self.cache_hits if hit else self.cache_misses, 1, {sc.GF_CACHE_NAME: cache})

    def record_guard_verdict(self, *, decision: str, stage: str, guard: str) -> None:
        self.add(
            self.guard_verdicts,
            1,
            {sc.GF_GUARD_DECISION: decision, sc.GF_GUARD_STAGE: stage, sc.GF_GUARD_NAME: guard},
        )

    def record_error(self, *, error_type: str, operation: str) -> None:
        self.add(self.errors, 1, {sc.ERROR_TYPE: error_type, sc.OPERATION_NAME: operation})

    def record_spend(self, amount_usd: float, *, model: str, team: str | None) -> None:
        attributes: MetricAttributes = {sc.REQUEST_MODEL: model}
        if team:
            attributes[sc.GF_TEAM_ID] = team
        self.add(self.spend, amount_usd, attributes)
