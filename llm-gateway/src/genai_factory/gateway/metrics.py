"""Prometheus metrics for ``/metrics``, in a registry of the gateway's own (no global state).

Counters and histograms follow the request summaries; deployment health (breaker state, requests
in flight) is read at scrape time from the live router.

Example:
    >>> from genai_factory.gateway.observe import RequestSummary
    >>> metrics = GatewayMetrics(lambda: [])
    >>> metrics.observe(RequestSummary(request_id="r", operation="chat", model="m", status=200))
    >>> b'gf_gateway_requests_total{' in metrics.render()
    True
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from genai_factory.gateway.deployment import Deployment
from genai_factory.gateway.observe import RequestSummary

__all__ = ["CONTENT_TYPE", "GatewayMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_BREAKER_VALUE = {"closed": 0, "half_open": 1, "open": 2}
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _DeploymentCollector(Collector):
    def __init__(self, deployments: Callable[[], Iterable[Deployment]]) -> None:
        self._deployments = deployments

    def collect(self) -> Iterator[GaugeMetricFamily]:
        breaker = GaugeMetricFamily(
            "gf_gateway_breaker_state",
            "circuit breaker per deployment (0 closed, 1 half-open, 2 open)",
            labels=["deployment", "model"],
        )
        in_flight = GaugeMetricFamily(
            "gf_gateway_in_flight", "requests in flight per deployment", labels=["deployment"]
        )
        for deployment in self._deployments():
            breaker.add_metric(
                [deployment.name, deployment.model], _BREAKER_VALUE[deployment.breaker.state]
            )
            in_flight.add_metric([deployment.name], deployment.in_flight)
        yield breaker
        yield in_flight


class GatewayMetrics:
    """The gateway's metrics; ``observe`` one request summary, ``render`` for a scrape."""

    def __init__(
        self,
        deployments: Callable[[], Iterable[Deployment]],
        models: Callable[[], Container[str]] | None = None,
    ) -> None:
        self._models = models
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "gf_gateway_requests",
            "requests by operation, model and HTTP status",
            ["operation", "model", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "end-to-end request duration",
            ["operation", "model"],
            buckets=_SLOW,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gf_gateway_time_to_first_token_seconds",
            "time to first streamed token per deployment",
            ["deployment"],
            buckets=_SLOW,
            registry=self.registry,
        )
        self.overhead = Histogram(
            "gf_gateway_overhead_seconds",
            "time spent in the gateway (duration minus upstream time)",
            buckets=_FAST,
            registry=self.registry,
        )
        self.tokens = Counter(
            "gen_ai_client_token_usage",
            "tokens by deployment and type (input/output)",
            ["deployment", "type"],
            registry=self.registry,
        )
        self.served = Counter(
            "gf_gateway_deployment_requests",
            "attempts per deployment and outcome",
            ["deployment", "outcome"],
            registry=self.registry,
        )
        self.cache_hits = Counter(
            "gf_gateway_cache_hits",
            "answers served from the response cache",
            registry=self.registry,
        )
        self.registry.register(_DeploymentCollector(deployments))
        # labelled series by (metric, labels): `labels()` takes a lock and validates its values on
        # every call; the label values are bounded (configured models and deployments), so are these
        self._series: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._series.get(key)
        if child is None:
            child = self._series[key] = metric.labels(*labels)
        return child

    def observe(self, summary: RequestSummary) -> None:
        # clients choose model names: only configured ones become label values (bounded series)
        model = summary.model
        if self._models is not None and model not in self._models():
            model = "other"
        self._child(self.requests, summary.operation, model, str(summary.status)).inc()
        self._child(self.duration, summary.operation, model).observe(summary.duration_s)
        self.overhead.observe(max(0.0, summary.duration_s - summary.upstream_s))
        if summary.cache_hit:
            self.cache_hits.inc()
        for attempt in summary.attempts:
            outcome = "ok" if attempt["ok"] else "error"
            self._child(self.served, attempt["deployment"], outcome).inc()
        if summary.deployment:
            if summary.ttft_s is not None:
                self._child(self.ttft, summary.deployment).observe(summary.ttft_s)
            if summary.prompt_tokens:
                self._child(self.tokens, summary.deployment, "input").inc(summary.prompt_tokens)
            if summary.completion_tokens:
                self._child(self.tokens, summary.deployment, "output").inc(
                    summary.completion_tokens
                )

    def render(self) -> bytes:
        return generate_latest(self.registry)
