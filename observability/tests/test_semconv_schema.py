"""Every span and metric we emit checked against the OpenTelemetry GenAI semantic conventions.

The expected tables below are written by hand from the convention documents
(open-telemetry/semantic-conventions-genai: docs/gen-ai/gen-ai-spans.md, gen-ai-agent-spans.md,
gen-ai-metrics.md, registry/attributes/gen-ai.md), deliberately *not* imported from our
``conventions`` module, so a typo there fails here. A scenario exercises every helper (client and
server roles, success, stream, error, content capture); then each span's name, kind and
attributes (keys, value types, required keys) and each metric's name, instrument, unit, bucket
boundaries and attribute keys are compared with the tables.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import Histogram, Sum
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from genai_factory.observability.cost import CostTracker
from genai_factory.shared.errors import ProviderError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    Chunk,
    EmbeddingResponse,
    Principal,
    ScoredChunk,
    Verdict,
    parse,
)

from .conftest import Captured, make_captured

pytestmark = pytest.mark.unit

STR, INT, DOUBLE, BOOL, STR_ARRAY, ANY = "string", "int", "double", "boolean", "string[]", "any"

# --- attribute registry (docs/registry/attributes/gen-ai.md, error.md, server.md) ---------------
ATTRIBUTE_TYPES: dict[str, str] = {
    "gen_ai.operation.name": STR,
    "gen_ai.provider.name": STR,
    "gen_ai.request.model": STR,
    "gen_ai.request.max_tokens": INT,
    "gen_ai.request.temperature": DOUBLE,
    "gen_ai.request.top_p": DOUBLE,
    "gen_ai.request.top_k": DOUBLE,
    "gen_ai.request.seed": INT,
    "gen_ai.request.stream": BOOL,
    "gen_ai.request.choice.count": INT,
    "gen_ai.request.stop_sequences": STR_ARRAY,
    "gen_ai.request.frequency_penalty": DOUBLE,
    "gen_ai.request.presence_penalty": DOUBLE,
    "gen_ai.request.encoding_formats": STR_ARRAY,
    "gen_ai.response.id": STR,
    "gen_ai.response.model": STR,
    "gen_ai.response.finish_reasons": STR_ARRAY,
    "gen_ai.response.time_to_first_chunk": DOUBLE,
    "gen_ai.usage.input_tokens": INT,
    "gen_ai.usage.output_tokens": INT,
    "gen_ai.usage.cache_read.input_tokens": INT,
    "gen_ai.usage.cache_creation.input_tokens": INT,
    "gen_ai.output.type": STR,
    "gen_ai.conversation.id": STR,
    "gen_ai.input.messages": ANY,
    "gen_ai.output.messages": ANY,
    "gen_ai.system_instructions": ANY,
    "gen_ai.embeddings.dimension.count": INT,
    "gen_ai.data_source.id": STR,
    "gen_ai.retrieval.query.text": STR,
    "gen_ai.retrieval.documents": ANY,
    "gen_ai.tool.name": STR,
    "gen_ai.tool.call.id": STR,
    "gen_ai.tool.type": STR,
    "gen_ai.tool.description": STR,
    "gen_ai.tool.call.arguments": ANY,
    "gen_ai.tool.call.result": ANY,
    "gen_ai.agent.id": STR,
    "gen_ai.agent.name": STR,
    "gen_ai.agent.description": STR,
    "gen_ai.agent.version": STR,
    "gen_ai.token.type": STR,
    "error.type": STR,
    "server.address": STR,
    "server.port": INT,
}

# Our own namespace (documented in the README); checked as strictly as the convention's.
GF_ATTRIBUTE_TYPES: dict[str, str] = {
    "gf.request_id": STR,
    "gf.org_id": STR,
    "gf.team_id": STR,
    "gf.user_id": STR,
    "gf.key_id": STR,
    "gf.route": STR,
    "gf.feature": STR,
    "gf.cost.usd": DOUBLE,
    "gf.stream.incomplete": BOOL,
    "gf.retrieval.documents.count": INT,
    "gf.embeddings.input_count": INT,
    "gf.cache.name": STR,
    "gf.cache.hit": BOOL,
    "gf.guard.name": STR,
    "gf.guard.stage": STR,
    "gf.guard.decision": STR,
}

_INFERENCE = {
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "error.type",
    "gen_ai.conversation.id",
    "gen_ai.output.type",
    "gen_ai.request.choice.count",
    "gen_ai.request.model",
    "gen_ai.request.seed",
    "gen_ai.request.stream",
    "gen_ai.request.top_k",
    "server.port",
    "gen_ai.request.frequency_penalty",
    "gen_ai.request.max_tokens",
    "gen_ai.request.presence_penalty",
    "gen_ai.request.stop_sequences",
    "gen_ai.request.temperature",
    "gen_ai.request.top_p",
    "gen_ai.response.finish_reasons",
    "gen_ai.response.id",
    "gen_ai.response.model",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "server.address",
    "gen_ai.input.messages",
    "gen_ai.output.messages",
    "gen_ai.system_instructions",
}

# operation -> (span name template, allowed kinds, required keys, allowed keys)
SPAN_TYPES: dict[str, tuple[str, set[SpanKind], set[str], set[str]]] = {
    "chat": (
        "{gen_ai.operation.name} {gen_ai.request.model}",
        {SpanKind.CLIENT, SpanKind.INTERNAL, SpanKind.SERVER},
        {"gen_ai.operation.name", "gen_ai.provider.name"},
        _INFERENCE,
    ),
    "embeddings": (
        "embeddings {gen_ai.request.model}",
        {SpanKind.CLIENT},
        {"gen_ai.operation.name", "gen_ai.provider.name"},
        {
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "error.type",
            "gen_ai.request.model",
            "gen_ai.embeddings.dimension.count",
            "gen_ai.request.encoding_formats",
            "server.port",
            "gen_ai.response.model",
            "gen_ai.usage.input_tokens",
            "server.address",
        },
    ),
    "retrieval": (
        "retrieval {gen_ai.data_source.id}",
        {SpanKind.CLIENT, SpanKind.INTERNAL},
        {"gen_ai.operation.name"},
        {
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "error.type",
            "gen_ai.data_source.id",
            "gen_ai.request.model",
            "gen_ai.request.top_k",
            "server.port",
            "server.address",
            "gen_ai.retrieval.query.text",
            "gen_ai.retrieval.documents",
        },
    ),
    "execute_tool": (
        "execute_tool {gen_ai.tool.name}",
        {SpanKind.INTERNAL},
        {"gen_ai.operation.name"},
        {
            "gen_ai.operation.name",
            "error.type",
            "gen_ai.tool.call.id",
            "gen_ai.tool.description",
            "gen_ai.tool.name",
            "gen_ai.tool.type",
            "gen_ai.tool.call.arguments",
            "gen_ai.tool.call.result",
        },
    ),
    "invoke_agent": (
        "invoke_agent {gen_ai.agent.name}",
        {SpanKind.INTERNAL, SpanKind.CLIENT},
        {"gen_ai.operation.name", "gen_ai.provider.name"},
        _INFERENCE
        | {
            "gen_ai.agent.id",
            "gen_ai.agent.name",
            "gen_ai.agent.description",
            "gen_ai.agent.version",
            "gen_ai.data_source.id",
        },
    ),
}

_DURATION = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92]
_TOKENS = [
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
]
_SERVER_TTFT = [
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
]
_SERVER_TPOT = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5]
_METRIC_COMMON = {
    "gen_ai.operation.name",
    "gen_ai.provider.name",
    "gen_ai.request.model",
    "server.port",
    "gen_ai.response.model",
    "server.address",
}

# metric -> (instrument, unit, bucket boundaries, required keys, allowed keys)
METRICS: dict[str, tuple[str, str, list[float] | None, set[str], set[str]]] = {
    "gen_ai.client.token.usage": (
        "histogram",
        "{token}",
        _TOKENS,
        {"gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.token.type"},
        _METRIC_COMMON | {"gen_ai.token.type"},
    ),
    "gen_ai.client.operation.duration": (
        "histogram",
        "s",
        _DURATION,
        {"gen_ai.operation.name"},
        _METRIC_COMMON | {"error.type"},
    ),
    "gen_ai.client.operation.time_to_first_chunk": (
        "histogram",
        "s",
        _DURATION,
        {"gen_ai.operation.name", "gen_ai.provider.name"},
        _METRIC_COMMON,
    ),
    "gen_ai.client.operation.time_per_output_chunk": (
        "histogram",
        "s",
        _DURATION,
        {"gen_ai.operation.name", "gen_ai.provider.name"},
        _METRIC_COMMON,
    ),
    "gen_ai.server.request.duration": (
        "histogram",
        "s",
        _DURATION,
        {"gen_ai.operation.name", "gen_ai.provider.name"},
        _METRIC_COMMON | {"error.type"},
    ),
    "gen_ai.server.time_to_first_token": (
        "histogram",
        "s",
        _SERVER_TTFT,
        {"gen_ai.operation.name", "gen_ai.provider.name"},
        _METRIC_COMMON | {"error.type"},
    ),
    "gen_ai.server.time_per_output_token": (
        "histogram",
        "s",
        _SERVER_TPOT,
        {"gen_ai.operation.name", "gen_ai.provider.name"},
        _METRIC_COMMON | {"error.type"},
    ),
    # ours
    "gf.cache.hits": ("counter", "{hit}", None, {"gf.cache.name"}, {"gf.cache.name"}),
    "gf.cache.misses": ("counter", "{miss}", None, {"gf.cache.name"}, {"gf.cache.name"}),
    "gf.guard.verdicts": (
        "counter",
        "{verdict}",
        None,
        {"gf.guard.decision", "gf.guard.stage", "gf.guard.name"},
        {"gf.guard.decision", "gf.guard.stage", "gf.guard.name"},
    ),
    "gf.errors": (
        "counter",
        "{error}",
        None,
        {"error.type", "gen_ai.operation.name"},
        {"error.type", "gen_ai.operation.name"},
    ),
    "gf.spend": (
        "counter",
        "USD",
        None,
        {"gen_ai.request.model"},
        {"gen_ai.request.model", "gf.team_id"},
    ),
    # Only with the in-process histogram aggregation (setup_telemetry's default).
    "gf.metrics.aggregated": ("counter", "{measurement}", None, set(), set()),
}


def value_type(value: Any) -> str:
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return DOUBLE
    if isinstance(value, str):
        return STR
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return STR_ARRAY
    return type(value).__name__


def type_ok(expected: str, value: Any) -> bool:
    # "any" attributes (structured content) are recorded as JSON strings on spans.
    return value_type(value) == (STR if expected == ANY else expected)


def render(template: str, attributes: dict[str, Any]) -> str:
    return re.sub(r"\{([^}]+)\}", lambda m: str(attributes[m.group(1)]), template)


def check_span(span: ReadableSpan) -> None:
    attrs = dict(span.attributes or {})
    operation = attrs["gen_ai.operation.name"]
    template, kinds, required, allowed = SPAN_TYPES[str(operation)]
    assert span.name == render(template, attrs), span.name
    assert span.kind in kinds, (span.name, span.kind)
    assert required <= set(attrs), (span.name, required - set(attrs))
    for key, value in attrs.items():
        if key.startswith("gf."):
            assert key in GF_ATTRIBUTE_TYPES, f"{span.name}: undocumented {key}"
            assert type_ok(GF_ATTRIBUTE_TYPES[key], value), (span.name, key, value)
            continue
        assert key in allowed, f"{span.name}: {key} is not a {operation} span attribute"
        assert type_ok(ATTRIBUTE_TYPES[key], value), (span.name, key, value)
    if span.status.status_code.name == "ERROR":
        assert "error.type" in attrs
    for event in span.events:
        assert event.name in {"exception", "gf.cache.lookup", "gf.guard.verdict"}
        if event.name == "exception":
            assert {"exception.type", "exception.message"} <= set(event.attributes or {})


def check_metrics(captured: Captured) -> set[str]:
    data = captured.reader.get_metrics_data()
    assert data is not None
    seen = set()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                assert metric.name in METRICS, f"undocumented metric {metric.name}"
                instrument, unit, bounds, required, allowed = METRICS[metric.name]
                seen.add(metric.name)
                assert metric.unit == unit, (metric.name, metric.unit)
                if instrument == "histogram":
                    assert isinstance(metric.data, Histogram), metric.name
                else:
                    assert isinstance(metric.data, Sum) and metric.data.is_monotonic, metric.name
                for point in metric.data.data_points:
                    keys = set(point.attributes or {})
                    assert required <= keys, (metric.name, required - keys)
                    assert keys <= allowed, (metric.name, keys - allowed)
                    for key, value in (point.attributes or {}).items():
                        types = ATTRIBUTE_TYPES | GF_ATTRIBUTE_TYPES
                        assert type_ok(types[key], value), (metric.name, key, value)
                    if bounds is not None:
                        assert list(point.explicit_bounds) == bounds, metric.name
    return seen


def _request(stream: bool = False) -> ChatCompletionRequest:
    return parse(
        ChatCompletionRequest,
        {
            "model": "gpt-4o-mini",
            "stream": stream,
            "max_tokens": 32,
            "temperature": 0.0,
            "top_p": 1.0,
            "seed": 3,
            "stop": "END",
            "n": 2,
            "response_format": {"type": "text"},
            "messages": [{"role": "user", "content": "hi"}],
        },
    )


async def _chunks(texts: Sequence[str]) -> AsyncIterator[ChatCompletionChunk]:
    for text in texts:
        await asyncio.sleep(0.001)
        yield ChatCompletionChunk.model_validate(
            {"id": "c1", "model": "gpt-4o-mini", "choices": [{"delta": {"content": text}}]}
        )
    yield ChatCompletionChunk.model_validate(
        {
            "id": "c1",
            "model": "gpt-4o-mini",
            "choices": [{"delta": {}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": len(texts)},
        }
    )


async def _failing() -> AsyncIterator[ChatCompletionChunk]:
    raise ProviderError("upstream 502", retryable=True)
    yield  # pragma: no cover


async def run_every_helper(captured: Captured) -> None:
    telemetry = captured.telemetry
    principal = Principal(subject="s", org_id="o", team_id="t", user_id="u", key_id="k")
    scope = telemetry.attribute(request_id="r1", principal=principal, route="/v1/chat", feature="f")
    with scope:  # noqa: SIM117 - the agent block is long; two levels read better
        with telemetry.invoke_agent(
            "helper",
            agent_id="a",
            description="d",
            version="1",
            model="gpt-4o-mini",
            conversation_id="c",
        ):
            with telemetry.chat(_request()) as call:
                telemetry.record_cache_lookup(hit=False, cache="semantic")
                telemetry.record_guard_verdict(
                    Verdict(decision="allow"), stage="input", guard="pii"
                )
                call.record_response(
                    ChatCompletionResponse.model_validate(
                        {
                            "model": "gpt-4o-mini",
                            "usage": {"prompt_tokens": 5, "completion_tokens": 2},
                            "choices": [
                                {
                                    "message": {"role": "assistant", "content": "ok"},
                                    "finish_reason": "stop",
                                }
                            ],
                        }
                    )
                )
            await CostTracker(metrics=telemetry.metrics).record(call.cost_record())
            async for _ in telemetry.trace_stream(_request(stream=True), _chunks(["a", "b", "c"])):
                pass
            with pytest.raises(ProviderError):
                async for _ in telemetry.trace_stream(_request(stream=True), _failing()):
                    pass
            with telemetry.embeddings("text-embedding-3-small", input_count=1) as emb:
                emb.record_response(
                    EmbeddingResponse.model_validate(
                        {
                            "model": "text-embedding-3-small",
                            "usage": {"prompt_tokens": 2},
                            "data": [{"index": 0, "embedding": [0.0, 1.0]}],
                        }
                    )
                )
            with telemetry.retrieval("kb", query="q", top_k=2) as ret:
                ret.record_documents(
                    [ScoredChunk(chunk=Chunk(document_id="d", text="t"), score=1.0)]
                )
            with telemetry.execute_tool(
                "calc", call_id="1", description="adds", arguments="{}"
            ) as tool:
                tool.record_result("2")
            with pytest.raises(ZeroDivisionError), telemetry.execute_tool("div"):
                _ = 1 / 0


@pytest.mark.parametrize("direct", [False, True], ids=["sdk-tracer", "direct-tracer"])
@pytest.mark.parametrize("role", ["client", "server"])
async def test_every_span_and_metric_matches_the_convention(role: str, direct: bool) -> None:
    captured = make_captured(
        direct=direct,
        role=role,
        capture_content=True,
        server_address="api.example.com",
        server_port=443,
    )
    await run_every_helper(captured)
    spans = captured.spans()
    assert len(spans) == 8
    for span in spans:
        check_span(span)
    seen = check_metrics(captured)
    if role == "client":
        assert {
            "gen_ai.client.token.usage",
            "gen_ai.client.operation.duration",
            "gen_ai.client.operation.time_to_first_chunk",
            "gen_ai.client.operation.time_per_output_chunk",
        } <= seen
    else:
        assert {
            "gen_ai.server.request.duration",
            "gen_ai.server.time_to_first_token",
            "gen_ai.server.time_per_output_token",
        } <= seen
    assert {"gf.cache.misses", "gf.guard.verdicts", "gf.errors", "gf.spend"} <= seen


def test_the_checker_rejects_what_the_convention_forbids() -> None:
    captured = make_captured()
    with captured.telemetry.chat(model="m", attributes={"gen_ai.request.max_tokens": "64"}):
        pass
    with captured.telemetry.embeddings("e"):
        captured.telemetry.metrics.token_usage.record(1, {"gen_ai.operation.name": "chat"})
    chat, embeddings = captured.spans()
    with pytest.raises(AssertionError):
        check_span(chat)  # max_tokens must be an int
    check_span(embeddings)
    with pytest.raises(AssertionError):
        check_metrics(captured)  # token usage without provider and token type
