"""Prometheus metrics of one server: its own registry, so two apps in a process never mix.

Counters and histograms are updated as requests go by; the gauges (queue depth, running
requests, loaded models, memory) and the engines' own figures (``stats()``: batch size,
KV blocks used, prefix-cache hit rate...) are read from the model manager at scrape time.

Example:
    >>> from genai_factory.serving.server.metrics import ServingMetrics
    >>> metrics = ServingMetrics()
    >>> metrics.count_request("smollm2", "chat", 200)
    >>> b'gf_serving_requests_total{endpoint="chat",model="smollm2",status="200"} 1.0' in metrics.render()
    True
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from genai_factory.serving.server.manager import ModelManager

__all__ = ["ENGINE_GAUGES", "ServingMetrics"]

# stats() keys an engine may report, exported under their own names; others go to engine_stat
ENGINE_GAUGES: dict[str, str] = {
    "batch_size": "sequences the engine is generating in its current step",
    "kv_blocks_used": "KV-cache blocks in use",
    "kv_blocks_total": "KV-cache blocks the engine has",
    "prefix_cache_hit_rate": "share of prompt tokens served from the prefix cache (0-1)",
}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5)


class _ManagerCollector(Collector):
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        states = self.manager.states()
        queue = GaugeMetricFamily(
            "gf_serving_queue_depth", "requests waiting for a model", labels=["model"]
        )
        running = GaugeMetricFamily(
            "gf_serving_running_requests", "requests a model is serving now", labels=["model"]
        )
        loaded = GaugeMetricFamily(
            "gf_serving_model_loaded", "1 if the model's engine is loaded", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "gf_serving_model_memory_bytes", "the budget a loaded model takes", labels=["model"]
        )
        evictions = CounterMetricFamily(
            "gf_serving_evictions", "engines closed to make room", labels=["model"]
        )
        rejected = CounterMetricFamily(
            "gf_serving_rejected",
            "requests refused by admission (queue_full, queue_timeout, draining, not_ready)",
            labels=["model", "reason"],
        )
        engine_gauges = {
            key: GaugeMetricFamily(f"gf_serving_{key}", help_text, labels=["model"])
            for key, help_text in ENGINE_GAUGES.items()
        }
        other = GaugeMetricFamily(
            "gf_serving_engine_stat", "other figures an engine reports", labels=["model", "stat"]
        )
        for state in states:
            queue.add_metric([state.name], state.waiting)
            running.add_metric([state.name], state.running)
            loaded.add_metric([state.name], 1.0 if state.loaded else 0.0)
            memory.add_metric([state.name], state.memory_bytes)
            evictions.add_metric([state.name], state.evictions)
            for reason, count in sorted(state.rejected.items()):
                rejected.add_metric([state.name, reason], count)
            for key, value in sorted(state.engine_stats.items()):
                if key in engine_gauges:
                    engine_gauges[key].add_metric([state.name], value)
                else:
                    other.add_metric([state.name, key], value)
        budget = GaugeMetricFamily("gf_serving_memory_budget_bytes", "the memory budget")
        budget.add_metric([], self.manager.budget_bytes)
        used = GaugeMetricFamily("gf_serving_memory_used_bytes", "what loaded models take")
        used.add_metric([], self.manager.used_bytes)
        ready = GaugeMetricFamily("gf_serving_ready", "1 when the server takes requests")
        ready.add_metric([], 1.0 if self.manager.ready else 0.0)
        yield from (queue, running, loaded, memory, evictions, rejected, budget, used, ready)
        yield from engine_gauges.values()
        yield other

    def describe(self) -> Iterable[Metric]:
        return []


class ServingMetrics:
    """The counters and histograms of request traffic, plus the manager's gauges.

    Args:
        manager: the model manager whose state the gauges show (None: traffic metrics only).
    """

    def __init__(self, manager: ModelManager | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "gf_serving_requests",
            "requests by model, endpoint and HTTP status",
            ["model", "endpoint", "status"],
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "gf_serving_prompt_tokens", "prompt tokens read", ["model"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "gf_serving_completion_tokens",
            "tokens generated",
            ["model"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gf_serving_request_duration_seconds",
            "time from admission to the last byte",
            ["model", "endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gf_serving_time_to_first_token_seconds",
            "time from arrival to the first generated token (streams)",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tpot = Histogram(
            "gf_serving_time_per_output_token_seconds",
            "mean time between generated tokens after the first (streams)",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=self.registry,
        )
        if manager is not None:
            self.registry.register(_ManagerCollector(manager))

    def count_request(self, model: str, endpoint: str, status: int) -> None:
        self.requests.labels(model=model, endpoint=endpoint, status=str(status)).inc()

    def count_tokens(self, model: str, prompt: int, completion: int) -> None:
        if prompt > 0:
            self.prompt_tokens.labels(model=model).inc(prompt)
        if completion > 0:
            self.completion_tokens.labels(model=model).inc(completion)

    def observe_duration(self, model: str, endpoint: str, seconds: float) -> None:
        self.duration.labels(model=model, endpoint=endpoint).observe(seconds)

    def observe_stream(self, model: str, ttft_s: float, tokens: int, decode_s: float) -> None:
        """A finished stream: time to first token and the time per token after it."""
        self.ttft.labels(model=model).observe(ttft_s)
        if tokens > 1:
            self.tpot.labels(model=model).observe(decode_s / (tokens - 1))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
