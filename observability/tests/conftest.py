from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan, SynchronousMultiSpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette

from genai_factory.observability.direct import DirectTracer
from genai_factory.observability.pricing import PriceTable
from genai_factory.observability.tracing import GenAITelemetry


@dataclass
class Captured:
    """Spans and metrics recorded by one GenAITelemetry, read back in memory."""

    telemetry: GenAITelemetry
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        found = [s for s in self.spans() if s.name == name]
        assert len(found) == 1, [s.name for s in self.spans()]
        return found[0]

    def metrics(self) -> dict[str, list[Any]]:
        """Metric name -> data points."""
        data: MetricsData | None = self.reader.get_metrics_data()
        points: dict[str, list[Any]] = {}
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points.setdefault(metric.name, []).extend(metric.data.data_points)
        return points


def make_captured(direct: bool = False, **kwargs: Any) -> Captured:
    """A GenAITelemetry whose spans and metrics are kept in memory; ``direct``: its GenAI spans
    come from a DirectTracer on the provider's processors, as ``setup_telemetry`` builds it."""
    exporter = InMemorySpanExporter()
    processor = SynchronousMultiSpanProcessor()
    processor.add_span_processor(SimpleSpanProcessor(exporter))
    tracer_provider = TracerProvider(active_span_processor=processor)
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    kwargs.setdefault("price_table", PriceTable.load())
    if direct:
        kwargs["tracer"] = DirectTracer(processor, resource=tracer_provider.resource)
    telemetry = GenAITelemetry(
        tracer_provider=tracer_provider, meter_provider=meter_provider, **kwargs
    )
    return Captured(telemetry, exporter, reader, tracer_provider, meter_provider)


# Every test of the GenAI spans runs on both tracers: the SDK's and ours (direct.py).
@pytest.fixture(params=["sdk-tracer", "direct-tracer"])
def captured(request: pytest.FixtureRequest) -> Captured:
    return make_captured(direct=request.param == "direct-tracer")


@pytest.fixture(params=["sdk-tracer", "direct-tracer"])
def captured_factory(request: pytest.FixtureRequest) -> Any:
    direct = request.param == "direct-tracer"
    return lambda **kwargs: make_captured(direct=direct, **kwargs)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread
    received: list[Any] = field(default_factory=list)


@pytest.fixture
def serve() -> Iterator[Any]:
    """Start an ASGI app with uvicorn on 127.0.0.1 (a free port) in a thread; stop it after."""
    started: list[LocalServer] = []

    def start(app: Starlette) -> LocalServer:
        port = free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        local = LocalServer(f"http://127.0.0.1:{port}", server, thread)
        started.append(local)
        return local

    yield start
    for local in started:
        local.server.should_exit = True
        local.thread.join(timeout=10)


async def _scripted_chunks(model: str, i: int, prompt: int, completion: int, delay: float) -> Any:
    from genai_factory.shared.errors import ProviderError
    from genai_factory.shared.models import ChatCompletionChunk

    await asyncio.sleep(delay)
    for word in ("The", " answer", " is", " 42."):
        yield ChatCompletionChunk.model_validate(
            {"id": f"c{i}", "model": model, "choices": [{"delta": {"content": word}}]}
        )
        await asyncio.sleep(0.001)
    if i % 13 == 0:
        raise ProviderError("upstream timed out", retryable=True)
    yield ChatCompletionChunk.model_validate(
        {
            "id": f"c{i}",
            "model": model,
            "choices": [{"delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion},
        }
    )


async def produce_traffic(
    telemetry: Any, tracker: Any, requests: int = 40, seed: int = 7
) -> list[str]:
    """Gateway-shaped traffic through our own instrumentation; returns the root trace ids.

    Each request: a root span, attribution, a cache lookup, an input guard verdict, then (on a
    miss) a scripted model call (streamed or not, some failing), sometimes a tool call, an output
    guard verdict and a CostRecord for the tracker (timestamps spread over the last hour).
    """
    import random
    from datetime import UTC, datetime, timedelta

    from genai_factory.shared.errors import ProviderError
    from genai_factory.shared.models import (
        ChatCompletionRequest,
        ChatCompletionResponse,
        CostRecord,
        Principal,
        Verdict,
        parse,
    )

    rng = random.Random(seed)
    genai = telemetry.genai
    tracer = telemetry.tracer_provider.get_tracer("gateway")
    teams = ["search", "ads", "support"]
    models = ["gpt-4o-mini", "smollm2", "claude-3-5-haiku"]
    trace_ids = []
    now = datetime.now(UTC)
    for i in range(requests):
        model, team = models[i % 3], teams[i % 3]
        principal = Principal(subject=f"key-{i % 5}", org_id="acme", team_id=team,
                              user_id=f"user-{i % 7}", key_id=f"key-{i % 5}")  # fmt: skip
        request = parse(
            ChatCompletionRequest,
            {"model": model, "stream": i % 2 == 0, "max_tokens": 64,
             "messages": [{"role": "user", "content": f"question {i}"}]},
        )  # fmt: skip
        prompt, completion = rng.randint(20, 400), rng.randint(5, 200)
        scope = genai.attribute(request_id=f"req-{i}", principal=principal,
                                route="/v1/chat/completions", feature="chat")  # fmt: skip
        with tracer.start_as_current_span("POST /v1/chat/completions") as root, scope:
            trace_ids.append(format(root.get_span_context().trace_id, "032x"))
            hit = i % 4 == 3
            genai.record_cache_lookup(hit=hit, cache="semantic")
            decision = "block" if i % 11 == 5 else "redact" if i % 6 == 1 else "allow"
            genai.record_guard_verdict(Verdict(decision=decision), stage="input", guard="pii")
            if hit or decision == "block":
                continue
            try:
                if request.stream:
                    chunks = _scripted_chunks(
                        model, i, prompt, completion, rng.uniform(0.002, 0.01)
                    )
                    async for _ in genai.trace_stream(request, chunks):
                        pass
                else:
                    with genai.chat(request) as call:
                        await asyncio.sleep(rng.uniform(0.003, 0.02))
                        if i % 13 == 1:
                            raise ProviderError("rate limited upstream", retryable=True)
                        call.record_response(ChatCompletionResponse.model_validate(
                            {"id": f"r{i}", "model": model,
                             "choices": [{"message": {"role": "assistant", "content": "42"},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
                        ))  # fmt: skip
            except ProviderError:
                continue
            if i % 5 == 0:
                with genai.execute_tool("lookup_order", call_id=f"call-{i}"):
                    await asyncio.sleep(0.001)
            genai.record_guard_verdict(Verdict(decision="allow"), stage="output", guard="pii")
        await tracker.record(
            CostRecord(request_id=f"req-{i}", model=model, org_id="acme", team_id=team,
                       user_id=f"user-{i % 7}", key_id=f"key-{i % 5}", route="/v1/chat/completions",
                       tags={"feature": "chat"}, input_tokens=prompt, output_tokens=completion,
                       timestamp=now - timedelta(minutes=rng.randint(0, 55)))
        )  # fmt: skip
    telemetry.flush()
    return trace_ids
