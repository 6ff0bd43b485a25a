"""GenAI spans and metrics for model calls, streams, embeddings, retrieval, tools and agents."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind, StatusCode

from genai_factory.observability.cost import CostTracker
from genai_factory.observability.tracing import (
    InstrumentedChatModel,
    InstrumentedEmbedder,
    error_type_of,
)
from genai_factory.shared.contracts import ChatModel, Embedder
from genai_factory.shared.errors import RateLimited
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

from .conftest import Captured

pytestmark = pytest.mark.unit


def request(**extra: Any) -> ChatCompletionRequest:
    body = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Mail bob@example.com the summary"},
        ],
        "max_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        **extra,
    }
    return parse(ChatCompletionRequest, body)


def response(text: str = "Done.", **usage: int) -> ChatCompletionResponse:
    return ChatCompletionResponse.model_validate(
        {
            "id": "chatcmpl-42",
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": usage.get("prompt", 20),
                "completion_tokens": usage.get("completion", 5),
            },
        }
    )


def chunk(
    content: str | None = None, finish: str | None = None, usage: dict[str, int] | None = None
) -> ChatCompletionChunk:
    choices = [] if usage else [{"delta": {"content": content}, "finish_reason": finish}]
    return ChatCompletionChunk.model_validate(
        {"id": "chatcmpl-s1", "model": "gpt-4o-mini-2024-07-18", "choices": choices, "usage": usage}
    )


async def scripted_stream(delay_s: float = 0.01) -> AsyncIterator[ChatCompletionChunk]:
    await asyncio.sleep(delay_s)
    for piece in ("Hel", "lo", " there"):
        yield chunk(piece)
        await asyncio.sleep(delay_s / 2)
    yield chunk(None, "stop")
    yield chunk(usage={"prompt_tokens": 11, "completion_tokens": 3})


def test_a_model_call_span_follows_the_genai_conventions(captured: Captured) -> None:
    telemetry = captured.telemetry
    with telemetry.chat(request()) as call:
        call.record_response(response(prompt=20, completion=5))
    span = captured.span("chat gpt-4o-mini")
    attrs = dict(span.attributes or {})
    assert span.kind is SpanKind.CLIENT
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.request.max_tokens"] == 64
    assert attrs["gen_ai.request.temperature"] == pytest.approx(0.2)
    assert attrs["gen_ai.request.top_p"] == pytest.approx(0.9)
    assert attrs["gen_ai.response.id"] == "chatcmpl-42"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.usage.input_tokens"] == 20
    assert attrs["gen_ai.usage.output_tokens"] == 5
    # priced from the packaged table: 20 * 0.15 + 5 * 0.60 per 1M tokens
    assert attrs["gf.cost.usd"] == pytest.approx((20 * 0.15 + 5 * 0.60) / 1e6, abs=1e-6)
    # no content unless opted in
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs

    metrics = captured.metrics()
    usage = {p.attributes["gen_ai.token.type"]: p for p in metrics["gen_ai.client.token.usage"]}
    assert usage["input"].sum == 20 and usage["output"].sum == 5
    assert usage["input"].attributes["gen_ai.response.model"] == "gpt-4o-mini-2024-07-18"
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert duration.count == 1 and "error.type" not in duration.attributes
    assert "gf.spend" not in metrics  # spend is counted by the CostTracker from CostRecords


def test_request_options_map_to_their_attributes(captured: Captured) -> None:
    req = request(
        seed=7,
        n=2,
        stop=["END"],
        frequency_penalty=0.5,
        presence_penalty=-0.5,
        response_format={"type": "json_object"},
    )
    with captured.telemetry.chat(req):
        pass
    attrs = dict(captured.span("chat gpt-4o-mini").attributes or {})
    assert attrs["gen_ai.request.seed"] == 7
    assert attrs["gen_ai.request.choice.count"] == 2
    assert attrs["gen_ai.request.stop_sequences"] == ("END",)
    assert attrs["gen_ai.request.frequency_penalty"] == 0.5
    assert attrs["gen_ai.request.presence_penalty"] == -0.5
    assert attrs["gen_ai.output.type"] == "json"


async def test_a_stream_records_ttft_chunk_gaps_and_the_final_usage(captured: Captured) -> None:
    seen = [
        c async for c in captured.telemetry.trace_stream(request(stream=True), scripted_stream())
    ]
    assert len(seen) == 5
    span = captured.span("chat gpt-4o-mini")
    attrs = dict(span.attributes or {})
    assert attrs["gen_ai.request.stream"] is True
    assert attrs["gen_ai.usage.input_tokens"] == 11 and attrs["gen_ai.usage.output_tokens"] == 3
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    ttft = attrs["gen_ai.response.time_to_first_chunk"]
    assert isinstance(ttft, float) and ttft >= 0.009
    total_s = ((span.end_time or 0) - (span.start_time or 0)) / 1e9
    assert ttft < total_s
    metrics = captured.metrics()
    (first,) = metrics["gen_ai.client.operation.time_to_first_chunk"]
    assert first.count == 1 and first.sum == pytest.approx(ttft)
    (gaps,) = metrics["gen_ai.client.operation.time_per_output_chunk"]
    assert gaps.count == 4  # every chunk after the first


async def test_a_stream_stopped_early_is_not_an_error_and_closes_the_source(
    captured: Captured,
) -> None:
    closed = asyncio.Event()

    async def source() -> AsyncIterator[ChatCompletionChunk]:
        try:
            for piece in ("a", "b", "c"):
                yield chunk(piece)
        finally:
            closed.set()

    stream = captured.telemetry.trace_stream(request(stream=True), source())
    assert (await anext(stream)).choices[0].delta.content == "a"
    await stream.aclose()  # type: ignore[attr-defined]
    assert closed.is_set()
    span = captured.span("chat gpt-4o-mini")
    assert span.status.status_code is StatusCode.UNSET
    assert (span.attributes or {})["gf.stream.incomplete"] is True


async def test_an_upstream_failure_marks_the_span_and_counts_the_error(captured: Captured) -> None:
    async def failing() -> AsyncIterator[ChatCompletionChunk]:
        yield chunk("x")
        raise RateLimited("slow down, bob@example.com", retry_after=1)

    with pytest.raises(RateLimited):
        async for _ in captured.telemetry.trace_stream(request(stream=True), failing()):
            pass
    span = captured.span("chat gpt-4o-mini")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "rate_limit_exceeded"
    # the exception text is redacted like captured content
    (event,) = [e for e in span.events if e.name == "exception"]
    assert "bob@example.com" not in str(event.attributes) and "[EMAIL]" in str(event.attributes)
    assert "bob@example.com" not in (span.status.description or "")
    metrics = captured.metrics()
    (duration,) = metrics["gen_ai.client.operation.duration"]
    assert duration.attributes["error.type"] == "rate_limit_exceeded"
    (errors,) = metrics["gf.errors"]
    assert errors.value == 1 and errors.attributes["gen_ai.operation.name"] == "chat"


def test_error_type_names_are_low_cardinality() -> None:
    assert error_type_of(ValueError("x")) == "ValueError"
    assert error_type_of(RateLimited("x")) == "rate_limit_exceeded"


def test_content_is_captured_only_when_opted_in_and_always_redacted(captured_factory: Any) -> None:
    captured = captured_factory(capture_content=True)
    with captured.telemetry.chat(request()) as call:
        call.record_response(response("Sent to bob@example.com, key sk-abcdefghijklmnopqrstuvwx"))
    attrs = dict(captured.span("chat gpt-4o-mini").attributes or {})
    inputs = json.loads(str(attrs["gen_ai.input.messages"]))
    assert [m["role"] for m in inputs] == ["system", "user"]
    assert inputs[1]["parts"][0] == {"type": "text", "content": "Mail [EMAIL] the summary"}
    outputs = json.loads(str(attrs["gen_ai.output.messages"]))
    assert outputs[0]["parts"][0]["content"] == "Sent to [EMAIL], key [REDACTED]"
    assert outputs[0]["finish_reason"] == "stop"


def test_a_custom_redactor_sees_every_captured_text(captured_factory: Any) -> None:
    seen: list[str] = []

    def guard(text: str) -> str:
        seen.append(text)
        return "<masked>"

    captured = captured_factory(capture_content=True, redact=guard, max_content_chars=10)
    with captured.telemetry.execute_tool("search", arguments={"q": "long query text"}) as tool:
        tool.record_result("a very long tool result")
    attrs = dict(captured.span("execute_tool search").attributes or {})
    assert attrs["gen_ai.tool.call.arguments"] == "<masked>"
    assert attrs["gen_ai.tool.call.result"] == "<masked>"
    assert all(len(text) <= 10 for text in seen) and len(seen) == 2


def test_embeddings_retrieval_tool_and_agent_spans(captured_factory: Any) -> None:
    captured = captured_factory(capture_content=True)
    telemetry = captured.telemetry
    with telemetry.invoke_agent("planner", agent_id="a1", model="gpt-4o-mini") as agent:
        with telemetry.embeddings("text-embedding-3-small", input_count=2) as emb:
            emb.record_response(
                EmbeddingResponse.model_validate(
                    {
                        "model": "text-embedding-3-small",
                        "usage": {"prompt_tokens": 8},
                        "data": [{"index": 0, "embedding": [0.1, 0.2, 0.3]}],
                    }
                )
            )
        with telemetry.retrieval("kb-docs", query="refund policy", top_k=3) as retrieval:
            doc = Chunk(document_id="d1", text="...")
            retrieval.record_documents([ScoredChunk(chunk=doc, score=0.9)])
        with telemetry.execute_tool("lookup", call_id="call_1", description="find an order"):
            pass
        agent.add_usage(10, 4)
    spans = {s.name: s for s in captured.spans()}
    assert set(spans) == {
        "invoke_agent planner",
        "embeddings text-embedding-3-small",
        "retrieval kb-docs",
        "execute_tool lookup",
    }
    agent_span = spans["invoke_agent planner"]
    for name in ("embeddings text-embedding-3-small", "retrieval kb-docs", "execute_tool lookup"):
        child = spans[name]
        assert child.parent is not None and child.parent.span_id == agent_span.context.span_id
        assert child.context.trace_id == agent_span.context.trace_id
    emb_attrs = dict(spans["embeddings text-embedding-3-small"].attributes or {})
    assert emb_attrs["gen_ai.embeddings.dimension.count"] == 3
    assert emb_attrs["gen_ai.usage.input_tokens"] == 8
    ret = dict(spans["retrieval kb-docs"].attributes or {})
    assert ret["gen_ai.data_source.id"] == "kb-docs" and ret["gen_ai.request.top_k"] == 3.0
    assert ret["gen_ai.retrieval.query.text"] == "refund policy"
    assert json.loads(str(ret["gen_ai.retrieval.documents"]))[0]["score"] == 0.9
    tool = spans["execute_tool lookup"]
    assert tool.kind is SpanKind.INTERNAL
    assert dict(tool.attributes or {})["gen_ai.tool.call.id"] == "call_1"
    agent_attrs = dict(agent_span.attributes or {})
    assert agent_attrs["gen_ai.agent.id"] == "a1" and agent_attrs["gen_ai.usage.output_tokens"] == 4
    durations = {
        p.attributes["gen_ai.operation.name"]
        for p in captured.metrics()["gen_ai.client.operation.duration"]
    }
    assert durations == {"invoke_agent", "embeddings", "retrieval", "execute_tool"}


def test_attribution_stamps_spans_and_builds_cost_records(captured: Captured) -> None:
    principal = Principal(
        subject="key-1", org_id="acme", team_id="search", user_id="u7", key_id="k1"
    )
    telemetry = captured.telemetry
    with telemetry.attribute(
        request_id="req-9", principal=principal, route="/v1/chat", feature="summarise"
    ):
        with telemetry.chat(request()) as call:
            call.record_response(response(prompt=1_000_000, completion=0))
        record = call.cost_record()
    attrs = dict(captured.span("chat gpt-4o-mini").attributes or {})
    assert attrs["gf.team_id"] == "search" and attrs["gf.request_id"] == "req-9"
    assert attrs["gf.feature"] == "summarise" and attrs["gf.route"] == "/v1/chat"
    assert record.team_id == "search" and record.org_id == "acme" and record.key_id == "k1"
    assert record.request_id == "req-9" and record.tags == {"feature": "summarise"}
    assert str(record.cost_usd) == "0.150000"
    tracker = CostTracker(metrics=telemetry.metrics)
    asyncio.run(tracker.record(record))
    (spend,) = captured.metrics()["gf.spend"]
    assert spend.attributes == {"gen_ai.request.model": "gpt-4o-mini", "gf.team_id": "search"}
    assert spend.value == pytest.approx(0.15)
    # outside the block nothing is stamped
    with telemetry.chat(model="gpt-4o-mini") as call:
        pass
    assert "gf.team_id" not in (captured.spans()[-1].attributes or {})
    assert call.cost_record(principal=principal).user_id == "u7"


def test_cached_prompt_tokens_are_read_and_priced(captured: Captured) -> None:
    resp = response(prompt=1_000_000, completion=0)
    assert resp.usage is not None
    usage = resp.usage.model_copy(update={"prompt_tokens_details": {"cached_tokens": 1_000_000}})
    resp = resp.model_copy(update={"usage": usage})
    with captured.telemetry.chat(request()) as call:
        call.record_response(resp)
    attrs = dict(captured.span("chat gpt-4o-mini").attributes or {})
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1_000_000
    assert attrs["gf.cost.usd"] == pytest.approx(0.075)


def test_guard_and_cache_signals_become_span_events_and_counters(captured: Captured) -> None:
    telemetry = captured.telemetry
    verdict = Verdict(
        decision="block", findings=[{"rule_id": "pii.email", "category": "pii", "layer": "regex"}]
    )
    with telemetry.chat(model="gpt-4o-mini"):
        telemetry.record_cache_lookup(hit=False, cache="semantic")
        telemetry.record_guard_verdict(verdict, stage="input", guard="pii")
    telemetry.record_cache_lookup(hit=True)  # no current span: counted, not attached
    span = captured.span("chat gpt-4o-mini")
    names = [e.name for e in span.events]
    assert names == ["gf.cache.lookup", "gf.guard.verdict"]
    guard_event = span.events[1].attributes or {}
    assert guard_event["gf.guard.decision"] == "block" and guard_event["gf.guard.rules"] == (
        "pii.email",
    )
    metrics = captured.metrics()
    assert metrics["gf.cache.misses"][0].value == 1 and metrics["gf.cache.hits"][0].value == 1
    (verdicts,) = metrics["gf.guard.verdicts"]
    assert verdicts.attributes == {
        "gf.guard.decision": "block",
        "gf.guard.stage": "input",
        "gf.guard.name": "pii",
    }


def test_a_server_role_records_the_model_server_metrics(captured_factory: Any) -> None:
    captured = captured_factory(role="server", provider_name="local")

    async def run() -> None:
        async for _ in captured.telemetry.trace_stream(
            request(stream=True), scripted_stream(0.002)
        ):
            pass

    asyncio.run(run())
    span = captured.span("chat gpt-4o-mini")
    assert span.kind is SpanKind.SERVER
    metrics = captured.metrics()
    assert set(metrics) >= {
        "gen_ai.server.request.duration",
        "gen_ai.server.time_to_first_token",
        "gen_ai.server.time_per_output_token",
    }
    assert "gen_ai.client.token.usage" not in metrics


def test_a_model_call_needs_a_model(captured: Captured) -> None:
    with pytest.raises(ValueError, match="needs a model"), captured.telemetry.chat():
        pass


class ScriptedModel:
    """A scripted ChatModel for unit tests (the real model runs in test_real_model.py)."""

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        return response("scripted")

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        return scripted_stream(0.001)


class ScriptedEmbedder:
    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [[float(len(t)), 1.0] for t in texts]

    @property
    def dimensions(self) -> int:
        return 2


async def test_wrappers_keep_the_contracts_and_trace_every_call(captured: Captured) -> None:
    model = InstrumentedChatModel(ScriptedModel(), captured.telemetry, provider_name="local")
    embedder = InstrumentedEmbedder(ScriptedEmbedder(), captured.telemetry, model="lengths")
    assert isinstance(model, ChatModel) and isinstance(embedder, Embedder)
    assert (await model.complete(request())).text() == "scripted"
    assert len([c async for c in model.stream(request(stream=True))]) == 5
    assert await embedder.embed(["ab", "c"]) == [[2.0, 1.0], [1.0, 1.0]]
    assert embedder.dimensions == 2
    names = [s.name for s in captured.spans()]
    assert names == ["chat gpt-4o-mini", "chat gpt-4o-mini", "embeddings lengths"]
    assert all(
        (s.attributes or {}).get("gen_ai.provider.name") in {"local", "openai"}
        for s in captured.spans()
    )
    assert dict(captured.spans()[2].attributes or {})["gen_ai.embeddings.dimension.count"] == 2


def test_the_component_dumps_its_serialisable_params(captured: Captured) -> None:
    from genai_factory.shared.factory import build_component, dump_component

    spec = dump_component(captured.telemetry)
    assert (
        spec["params"]["provider_name"] == "openai" and spec["params"]["capture_content"] is False
    )
    rebuilt = build_component(spec)
    assert rebuilt.role == "client"
