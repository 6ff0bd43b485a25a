"""Per-call cost of instrumenting a model call, in one run, interleaved:

* ``none``: the call itself (a scripted model returning a prepared response; no I/O);
* ``otel-bare``: the bare OpenTelemetry SDK, one CLIENT span with the same GenAI attributes set
  by hand, batched to a discarding exporter (no metrics);
* ``ours (spans discarded)``: our instrumentation with spans going to the same discarding
  exporter as ``otel-bare`` (isolates the instrumentation from the store's write cost);
* ``ours``: ``GenAITelemetry.chat`` as configured by default (spans to the SQLite store through a
  bounded batch processor, the convention's metrics, pricing, Prometheus reader);
* ``ours, SDK spans``: the same, but GenAI spans come from the SDK's own tracer instead of the
  :class:`DirectTracer` (same sampler, ids, processors and exporter): what the direct spans save;
* ``ours, SDK-aggregated histograms``: the same, but the three histogram values of a call go
  through the SDK's ``Histogram.record`` (on the deferred-metrics thread) instead of our
  in-process aggregation: what the aggregation saves;
* ``ours+content``: the same as ``ours`` with message content captured and redacted;
* ``langfuse``: Langfuse's Python SDK (a ``generation`` observation with input, output and
  usage) exporting to a local HTTP sink on 127.0.0.1, i.e. its client-side cost only.

Then a sustained run of ``ours`` that samples RSS to check memory stays flat.

Then the same at a paced rate (sleeps standing in for the model's I/O wait), to show what the
store keeps when the caller leaves the exporter thread some room.

Usage: python benchmarks/bench_overhead.py [--calls N] [--rounds R] [--sustained N]
       [--paced N] [--paced-rate R]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import LocalSink, machine, median, rss_mib, write_result
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind

from genai_factory.observability.setup import TelemetryConfig, setup_telemetry
from genai_factory.shared.models import ChatCompletionRequest, ChatCompletionResponse, parse

REQUEST = parse(
    ChatCompletionRequest,
    {
        "model": "gpt-4o-mini",
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
        "messages": [
            {"role": "system", "content": "You are a concise assistant."},
            {"role": "user", "content": "Summarise the refund policy for order 1234 in two lines."},
        ],
    },
)
RESPONSE = ChatCompletionResponse.model_validate(
    {
        "id": "chatcmpl-bench",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": "Refunds within 30 days. Keep the receipt.",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 12},
    }
)


def model_call() -> ChatCompletionResponse:
    return RESPONSE


class Discard(SpanExporter):
    def __init__(self) -> None:
        self.count = 0

    def export(self, spans: Any) -> SpanExportResult:
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def variant_none() -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    def call() -> None:
        model_call()

    return call, lambda: None, lambda: None


def variant_otel_bare() -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard()))
    tracer = provider.get_tracer("bench")

    def call() -> None:
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": REQUEST.model,
                "gen_ai.request.max_tokens": 256,
                "gen_ai.request.temperature": 0.2,
                "gen_ai.request.top_p": 0.9,
            },
        ) as span:
            response = model_call()
            assert response.usage is not None
            span.set_attribute("gen_ai.response.id", response.id)
            span.set_attribute("gen_ai.response.model", response.model)
            span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
            span.set_attribute("gen_ai.usage.input_tokens", response.usage.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", response.usage.completion_tokens)

    return call, lambda: provider.force_flush(), provider.shutdown


def variant_ours(
    folder: Path, capture: bool, store: bool = True, aggregate: bool = True, direct: bool = True
) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    config = TelemetryConfig(
        sqlite_path=folder / f"ours-{capture}-{store}-{aggregate}-{direct}.db",
        capture_content=capture,
        aggregate_histograms=aggregate,
        direct_spans=direct,
    )
    if store:
        telemetry = setup_telemetry(config)
    else:  # the same instrumentation, spans to a discarding exporter like otel-bare's
        telemetry = setup_telemetry(
            config.model_copy(update={"span_exporters": []}), extra_span_exporters=[Discard()]
        )
    genai = telemetry.genai

    def call() -> None:
        with genai.chat(REQUEST) as handle:
            handle.record_response(model_call())

    return call, lambda: telemetry.flush(), telemetry.shutdown


def variant_langfuse(
    sink: LocalSink,
) -> tuple[Callable[[], None], Callable[[], None], Callable[[], None]]:
    from langfuse import Langfuse

    client = Langfuse(
        public_key="pk-lf-local-bench",
        secret_key="sk-lf-local-bench",  # noqa: S106 - a dummy key for the local sink
        base_url=sink.url,
        tracer_provider=TracerProvider(),
        flush_interval=0.5,
    )
    messages = [m.model_dump(exclude_none=True) for m in REQUEST.messages]

    def call() -> None:
        with client.start_as_current_observation(
            name="chat",
            as_type="generation",
            model=REQUEST.model,
            input=messages,
            model_parameters={"max_tokens": 256, "temperature": 0.2, "top_p": 0.9},
        ) as generation:
            response = model_call()
            assert response.usage is not None
            generation.update(
                output=response.choices[0].message.text(),
                usage_details={
                    "input": response.usage.prompt_tokens,
                    "output": response.usage.completion_tokens,
                },
            )

    return call, client.flush, client.shutdown


def timed(call: Callable[[], None], flush: Callable[[], Any], n: int) -> tuple[float, float]:
    """Seconds per call over ``n`` calls: on the calling thread, and with the background work.

    The second figure includes draining what the call left for background threads (batched
    span export, deferred metrics), so it is the total CPU price, not just the request's wait.
    """
    start = time.perf_counter()
    for _ in range(n):
        call()
    loop = time.perf_counter() - start
    flush()
    return loop / n, (time.perf_counter() - start) / n


def sustained(
    folder: Path, total: int, sample_every: int, rate: float | None = None
) -> dict[str, Any]:
    """``total`` calls back to back (``rate`` None: CPU-bound, the worst case for the exporter
    thread, which gets the GIL only between the caller's switch intervals), or paced at
    ``rate`` calls/s with sleeps standing in for the model's I/O wait."""
    name = "sustained" if rate is None else f"paced-{rate:g}"
    telemetry = setup_telemetry(TelemetryConfig(sqlite_path=folder / f"{name}.db"))
    genai = telemetry.genai
    samples = []
    start = time.perf_counter()
    for i in range(1, total + 1):
        with genai.chat(REQUEST) as handle:
            handle.record_response(RESPONSE)
        if rate is not None and i % 50 == 0:
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        if i % sample_every == 0:
            samples.append(
                {
                    "spans": i,
                    "rss_mib": round(rss_mib(), 1),
                    "elapsed_s": round(time.perf_counter() - start, 2),
                }
            )
    telemetry.flush()
    exported = telemetry.sqlite_exporter.exported if telemetry.sqlite_exporter else 0
    stored = telemetry.store.count_spans() if telemetry.store else 0
    telemetry.shutdown()
    warm = samples[len(samples) // 5 :]  # after the first fifth (imports, caches, SQLite pages)
    return {
        "rate_per_s": rate,
        "spans": total,
        "exported": exported,
        "stored": stored,
        "samples": samples,
        "rss_growth_after_warmup_mib": round(
            max(s["rss_mib"] for s in warm) - warm[0]["rss_mib"], 1
        ),
        "spans_per_s": round(total / (time.perf_counter() - start)),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sustained", type=int, default=200_000)
    parser.add_argument("--paced", type=int, default=50_000, help="spans in the paced run")
    parser.add_argument("--paced-rate", type=float, default=5_000, help="calls/s, paced run")
    args = parser.parse_args()

    started = machine()  # the load average before this benchmark adds its own
    folder = Path(tempfile.mkdtemp(prefix="gf-obs-bench-"))
    sink = LocalSink()
    variants = {
        "none": variant_none(),
        "otel-bare": variant_otel_bare(),
        "ours (spans discarded)": variant_ours(folder, capture=False, store=False),
        "ours": variant_ours(folder, capture=False),
        "ours, SDK spans": variant_ours(folder, capture=False, direct=False),
        "ours, SDK-aggregated histograms": variant_ours(folder, capture=False, aggregate=False),
        "ours+content": variant_ours(folder, capture=True),
        "langfuse": variant_langfuse(sink),
    }
    per_call: dict[str, list[float]] = {name: [] for name in variants}
    with_background: dict[str, list[float]] = {name: [] for name in variants}
    for call, flush, _ in variants.values():  # warm-up
        timed(call, flush, 500)
    for _ in range(args.rounds):
        for name, (call, flush, _) in variants.items():
            gc.collect()
            request_path, total = timed(call, flush, args.calls)
            per_call[name].append(request_path)
            with_background[name].append(total)
    for _, (_, _, shutdown) in variants.items():
        shutdown()
    sink.close()

    base = median(per_call["none"])
    base_total = median(with_background["none"])
    rows = {
        name: {
            "median_us_per_call": round(median(values) * 1e6, 2),
            "added_us_per_call": round((median(values) - base) * 1e6, 2),
            "added_us_incl_background": round(
                (median(with_background[name]) - base_total) * 1e6, 2
            ),
            "rounds_us": [round(v * 1e6, 2) for v in values],
        }
        for name, values in per_call.items()
    }
    memory = sustained(folder, args.sustained, max(1, args.sustained // 20))
    paced = sustained(folder, args.paced, max(1, args.paced // 10), rate=args.paced_rate)
    info = started
    info["load_average_at_end"] = os.getloadavg()
    payload = {
        "benchmark": "overhead",
        "machine": info,
        "parameters": {
            "calls_per_round": args.calls,
            "rounds": args.rounds,
            "sustained_spans": args.sustained,
            "paced_spans": args.paced,
            "paced_rate_per_s": args.paced_rate,
        },
        "per_call": rows,
        "langfuse_sink_bytes": sink.received_bytes,
        "sustained_memory": memory,
        "paced_memory": paced,
        "goal_added_us": 50,
    }
    path = write_result("overhead", payload)

    print(
        f"Instrumentation cost per model call (median of {args.rounds} rounds x {args.calls} calls)\n"
    )
    print(
        "| variant | µs per call | added on the request path (µs) | added incl. background export (µs) |"
    )
    print("|---|---:|---:|---:|")
    for name, row in rows.items():
        print(
            f"| {name} | {row['median_us_per_call']:.1f} | {row['added_us_per_call']:.1f} "
            f"| {row['added_us_incl_background']:.1f} |"
        )
    print(
        f"\nSustained: {memory['spans']:,} spans at {memory['spans_per_s']:,}/s, {memory['stored']:,} stored; "
        f"RSS growth after warm-up {memory['rss_growth_after_warmup_mib']} MiB "
        f"({memory['samples'][0]['rss_mib']} -> {memory['samples'][-1]['rss_mib']} MiB)"
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
