"""GenAI spans and metrics for model calls, streams, embeddings, retrieval, tools and agents.

:class:`GenAITelemetry` opens spans named and attributed as the OpenTelemetry GenAI semantic
conventions describe (``chat gpt-4o``, ``gen_ai.request.*``, ``gen_ai.response.*``,
``gen_ai.usage.*``) and records the matching metrics when a span ends. Message content is left
out unless ``capture_content`` is on, and then every text passes through ``redact`` first.

Each helper is a context manager that yields a small handle to record the response on; a
stream is wrapped as an async iterator that records time to first chunk and reads the usage
from the final chunk. An exception leaving a block marks the span as an error with
``error.type`` and counts it in ``gf.errors``.

Example:
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> from opentelemetry.sdk.metrics import MeterProvider
    >>> from genai_factory.shared.models import ChatCompletionResponse
    >>> spans = InMemorySpanExporter()
    >>> tracer_provider = TracerProvider()
    >>> tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    >>> telemetry = GenAITelemetry(tracer_provider=tracer_provider, meter_provider=MeterProvider())
    >>> with telemetry.chat(model="gpt-4o-mini", max_tokens=64) as call:
    ...     call.record_response(ChatCompletionResponse.model_validate({
    ...         "model": "gpt-4o-mini-2024-07-18", "usage": {"prompt_tokens": 9, "completion_tokens": 3},
    ...         "choices": [{"message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]}))
    >>> span = spans.get_finished_spans()[0]
    >>> span.name, span.attributes["gen_ai.usage.output_tokens"], span.attributes["gen_ai.response.finish_reasons"]
    ('chat gpt-4o-mini', 3, ('stop',))
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
import traceback
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType
from typing import Any, Self

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import Histogram, MeterProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from genai_factory.observability import conventions as sc
from genai_factory.observability.histograms import HistogramAggregator
from genai_factory.observability.metrics import GenAIMetrics, MetricAttributes, Role
from genai_factory.observability.pricing import PriceTable
from genai_factory.observability.redaction import ContentRedactor, Redactor
from genai_factory.shared.contracts import ChatModel, Embedder
from genai_factory.shared.errors import GFError
from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatMessage,
    CostRecord,
    EmbeddingResponse,
    Principal,
    ScoredChunk,
    Verdict,
    new_id,
)

__all__ = [
    "AgentSpan",
    "Attribution",
    "EmbeddingsCall",
    "GenAITelemetry",
    "InstrumentedChatModel",
    "InstrumentedEmbedder",
    "ModelCall",
    "RetrievalSpan",
    "ToolSpan",
    "error_type_of",
]

_SCOPE = "genai_factory.observability"

_Record = tuple[Histogram, float, MetricAttributes]


@dataclass(frozen=True, slots=True)
class Attribution:
    """Who a request is for, stamped on every GenAI span inside :meth:`GenAITelemetry.attribute`."""

    request_id: str | None = None
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    key_id: str | None = None
    route: str | None = None
    feature: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)

    def span_attributes(self) -> dict[str, AttributeValue]:
        pairs = (
            (sc.GF_REQUEST_ID, self.request_id),
            (sc.GF_ORG_ID, self.org_id),
            (sc.GF_TEAM_ID, self.team_id),
            (sc.GF_USER_ID, self.user_id),
            (sc.GF_KEY_ID, self.key_id),
            (sc.GF_ROUTE, self.route),
            (sc.GF_FEATURE, self.feature),
        )
        return {key: value for key, value in pairs if value}


# Per-task state (like the shared logging ids): each asyncio task sees its own attribution.
_attribution: contextvars.ContextVar[Attribution | None] = contextvars.ContextVar(
    "gf_attribution", default=None
)


def error_type_of(exc: BaseException) -> str:
    """A low-cardinality ``error.type``: our error's type name, else the exception's class name."""
    if isinstance(exc, GFError):
        return exc.code or exc.error_type
    return type(exc).__qualname__


def _usage_numbers(usage: Any) -> tuple[int, int, int]:
    if usage is None:
        return 0, 0, 0
    # Provider extras live in model_extra; a plain getattr on a pydantic model is slow here.
    extra = getattr(usage, "model_extra", None) or {}
    details = extra.get("prompt_tokens_details")
    cached = 0
    if isinstance(details, Mapping):
        cached = int(details.get("cached_tokens") or 0)
    return int(usage.prompt_tokens), int(usage.completion_tokens), cached


class _Handle:
    """Shared parts of every span handle: the span, its start, attributes and how it ends."""

    __slots__ = ("_metric_attributes", "_start", "_telemetry", "_token", "operation", "span")

    def __init__(
        self,
        telemetry: GenAITelemetry,
        span: Span,
        operation: str,
        metric_attributes: MetricAttributes,
    ) -> None:
        self._telemetry = telemetry
        self.span = span
        self.operation = operation
        self._metric_attributes = metric_attributes
        self._token: object | None = None
        self._start = time.perf_counter()

    # A class-based context manager: cheaper than a generator-based one on every model call.
    def __enter__(self) -> Self:
        self._token = otel_context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None
        self.finish(exc)

    @property
    def trace_id(self) -> str:
        return format(self.span.get_span_context().trace_id, "032x")

    @property
    def span_id(self) -> str:
        return format(self.span.get_span_context().span_id, "016x")

    @property
    def context(self) -> Context:
        """A context whose current span is this one: the parent for work started elsewhere."""
        return trace.set_span_in_context(self.span)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self.span.set_attribute(key, value)

    def _finish_span(
        self, error: BaseException | None, records: list[_Record] | None = None
    ) -> float:
        """End the span (marking errors) and return the elapsed seconds.

        The duration goes to ``records`` when given (recorded with the call's other values in
        one step), else it is recorded here.
        """
        elapsed = time.perf_counter() - self._start
        attributes = self._metric_attributes
        if error is not None:
            kind = error_type_of(error)
            # error.type belongs on the duration metric only, not on token usage or TTFT.
            attributes = {**attributes, sc.ERROR_TYPE: kind}
            self.span.set_attribute(sc.ERROR_TYPE, kind)
            # Exception messages can quote user input: they go through the redactor too.
            message = self._telemetry.redact(str(error)[:1024])
            self.span.set_status(Status(StatusCode.ERROR, message[:256]))
            self.span.add_event(
                "exception",
                {
                    "exception.type": type(error).__qualname__,
                    "exception.message": message,
                    "exception.stacktrace": self._telemetry.redact(
                        "".join(traceback.format_exception(error))[-8192:]
                    ),
                },
            )
            self._telemetry.metrics.record_error(error_type=kind, operation=self.operation)
        self.span.end()
        # A model server's request-duration metric needs a provider; local tool steps have none.
        if self._telemetry.role == "client" or sc.PROVIDER_NAME in attributes:
            metrics = self._telemetry.metrics
            if records is None:
                metrics.record(metrics.operation_duration, elapsed, attributes)
            else:
                records.append((metrics.operation_duration, elapsed, attributes))
        return elapsed

    def finish(self, error: BaseException | None = None) -> None:
        self._finish_span(error)


class ModelCall(_Handle):
    """A chat or text completion in flight: record the response (or chunks) on it."""

    __slots__ = (
        "_content",
        "_first_at",
        "_last_at",
        "_output_parts",
        "cached_input_tokens",
        "finish_reasons",
        "input_tokens",
        "model",
        "output_tokens",
        "response_id",
        "response_model",
        "stream",
    )

    def __init__(
        self,
        telemetry: GenAITelemetry,
        span: Span,
        operation: str,
        metric_attributes: MetricAttributes,
        model: str,
        stream: bool,
    ) -> None:
        super().__init__(telemetry, span, operation, metric_attributes)
        self.model = model
        self.stream = stream
        self.response_id: str | None = None
        self.response_model: str | None = None
        self.finish_reasons: list[str] = []
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.cached_input_tokens = 0
        self._first_at: float | None = None
        self._last_at: float | None = None
        self._output_parts: list[str] | None = [] if telemetry.capture_content else None

    @property
    def time_to_first_chunk(self) -> float | None:
        """Seconds from the call's start to its first chunk (streams only)."""
        return None if self._first_at is None else self._first_at - self._start

    def set_usage(
        self, input_tokens: int, output_tokens: int, cached_input_tokens: int = 0
    ) -> None:
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cached_input_tokens = cached_input_tokens

    def record_response(self, response: ChatCompletionResponse) -> None:
        """Take id, model, finish reasons, usage and (if captured) the output from a response."""
        self.response_id = response.id
        self.response_model = response.model
        self.finish_reasons = [choice.finish_reason or "" for choice in response.choices]
        if response.usage is not None:
            self.set_usage(*_usage_numbers(response.usage))
        if self._output_parts is not None:
            self._output_parts.extend(choice.message.text() for choice in response.choices)

    def record_chunk(self, chunk: ChatCompletionChunk) -> None:
        """Note one streamed chunk: the first sets TTFT; the last one's usage is the call's."""
        now = time.perf_counter()
        metrics = self._telemetry.metrics
        if self._first_at is None:
            self._first_at = now
            self.response_id = chunk.id
            self.response_model = chunk.model
        elif self._telemetry.role == "client" and self._last_at is not None:
            metrics.record(metrics.time_per_output, now - self._last_at, self._metric_attributes)
        self._last_at = now
        for choice in chunk.choices:
            if choice.finish_reason is not None:
                self.finish_reasons.append(choice.finish_reason)
            if self._output_parts is not None and choice.delta.content:
                self._output_parts.append(choice.delta.content)
        if chunk.usage is not None:
            self.set_usage(*_usage_numbers(chunk.usage))

    def cost_usd(self) -> Decimal | None:
        """The call's cost from the price table, or None when usage or the price is unknown."""
        prices = self._telemetry.price_table
        if prices is None or self.input_tokens is None or not prices.knows(self.model):
            return None
        return prices.cost(
            self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens or 0,
            cached_input_tokens=self.cached_input_tokens,
        )

    def cost_record(
        self,
        *,
        request_id: str | None = None,
        principal: Principal | None = None,
        route: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> CostRecord:
        """A CostRecord for this call, attributed from ``principal`` or the current attribution."""
        scope = _attribution.get() or Attribution()
        merged_tags = dict(scope.tags)
        if scope.feature:
            merged_tags.setdefault("feature", scope.feature)
        merged_tags.update(tags or {})
        return CostRecord(
            request_id=request_id or scope.request_id or new_id("req"),
            model=self.model,
            provider=str(self._metric_attributes.get(sc.PROVIDER_NAME) or "") or None,
            subject=principal.subject if principal else None,
            org_id=principal.org_id if principal else scope.org_id,
            team_id=principal.team_id if principal else scope.team_id,
            user_id=principal.user_id if principal else scope.user_id,
            key_id=principal.key_id if principal else scope.key_id,
            route=route or scope.route,
            tags=merged_tags,
            input_tokens=self.input_tokens or 0,
            output_tokens=self.output_tokens or 0,
            cached_input_tokens=self.cached_input_tokens,
            cost_usd=self.cost_usd() or Decimal(0),
        )

    def finish(self, error: BaseException | None = None) -> None:
        telemetry = self._telemetry
        metrics = telemetry.metrics
        attributes = self._metric_attributes
        if metrics.aggregator is None:
            # A copy: chunk gaps already queued by the deferred recorder share the dict.
            attributes = dict(attributes)
            self._metric_attributes = attributes
        done: dict[str, AttributeValue] = {}
        if self.response_model:
            attributes[sc.RESPONSE_MODEL] = done[sc.RESPONSE_MODEL] = self.response_model
        if self.response_id:
            done[sc.RESPONSE_ID] = self.response_id
        if self.finish_reasons:
            done[sc.RESPONSE_FINISH_REASONS] = self.finish_reasons
        if self.input_tokens is not None:
            done[sc.USAGE_INPUT_TOKENS] = self.input_tokens
            done[sc.USAGE_OUTPUT_TOKENS] = self.output_tokens or 0
            if self.cached_input_tokens:
                done[sc.USAGE_CACHE_READ_INPUT_TOKENS] = self.cached_input_tokens
        ttft = self.time_to_first_chunk
        if ttft is not None:
            done[sc.RESPONSE_TIME_TO_FIRST_CHUNK] = ttft
        if self._output_parts:
            done[sc.OUTPUT_MESSAGES] = telemetry._output_messages(
                "".join(self._output_parts), self.finish_reasons
            )
        cost = self._cost_float()
        if cost is not None:
            done[sc.GF_COST_USD] = cost
        self.span.set_attributes(done)  # one lock round-trip instead of one per attribute
        records: list[_Record] = []
        elapsed = self._finish_span(error, records)
        if self.input_tokens is not None and telemetry.role == "client":
            records.append(
                (metrics.token_usage, self.input_tokens, {**attributes, sc.TOKEN_TYPE: "input"})
            )
            records.append(
                (
                    metrics.token_usage,
                    self.output_tokens or 0,
                    {**attributes, sc.TOKEN_TYPE: "output"},
                )
            )
        if ttft is not None:
            if telemetry.role == "client":
                records.append((metrics.time_to_first, ttft, attributes))
            elif error is None:
                records.append((metrics.time_to_first, ttft, attributes))
                if self.output_tokens and self.output_tokens > 1:
                    per_token = (elapsed - ttft) / (self.output_tokens - 1)
                    records.append((metrics.time_per_output, per_token, attributes))
        metrics.record_many(records)  # the call's histograms in one step

    def _cost_float(self) -> float | None:
        # The hot path prices in floats; CostRecords (the ledger) use exact Decimals.
        prices = self._telemetry.price_table
        if prices is None or self.input_tokens is None:
            return None
        return prices.cost_float(
            self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens or 0,
            cached_input_tokens=self.cached_input_tokens,
        )


class EmbeddingsCall(_Handle):
    """An embeddings request in flight."""

    __slots__ = ("input_tokens", "response_model")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.input_tokens: int | None = None
        self.response_model: str | None = None

    def record_response(self, response: EmbeddingResponse) -> None:
        self.response_model = response.model
        self.input_tokens = response.usage.prompt_tokens
        if response.data and isinstance(response.data[0].embedding, list):
            self.span.set_attribute(sc.EMBEDDINGS_DIMENSION_COUNT, len(response.data[0].embedding))

    def record_vectors(self, vectors: Sequence[Sequence[float]]) -> None:
        if vectors:
            self.span.set_attribute(sc.EMBEDDINGS_DIMENSION_COUNT, len(vectors[0]))

    def finish(self, error: BaseException | None = None) -> None:
        if self.response_model:
            self._metric_attributes[sc.RESPONSE_MODEL] = self.response_model
            self.span.set_attribute(sc.RESPONSE_MODEL, self.response_model)
        if self.input_tokens is not None:
            self.span.set_attribute(sc.USAGE_INPUT_TOKENS, self.input_tokens)
        self._finish_span(error)
        if self.input_tokens is not None and self._telemetry.role == "client":
            metrics = self._telemetry.metrics
            metrics.record(
                metrics.token_usage,
                self.input_tokens,
                {**self._metric_attributes, sc.TOKEN_TYPE: "input"},
            )


class RetrievalSpan(_Handle):
    """A retrieval in flight: record the documents found (ids and scores only if captured)."""

    __slots__ = ()

    def record_documents(self, documents: Sequence[ScoredChunk]) -> None:
        self.span.set_attribute("gf.retrieval.documents.count", len(documents))
        if self._telemetry.capture_content:
            payload = [{"id": doc.chunk.id, "score": doc.score} for doc in documents]
            self.span.set_attribute(sc.RETRIEVAL_DOCUMENTS, json.dumps(payload))


class ToolSpan(_Handle):
    """A tool execution in flight."""

    __slots__ = ()

    def record_result(self, result: str) -> None:
        if self._telemetry.capture_content:
            self.span.set_attribute(sc.TOOL_CALL_RESULT, self._telemetry._clip(result))


class AgentSpan(_Handle):
    """An agent invocation in flight; usage may be summed over its steps."""

    __slots__ = ("input_tokens", "output_tokens")

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.input_tokens = 0
        self.output_tokens = 0

    def add_usage(self, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens

    def finish(self, error: BaseException | None = None) -> None:
        if self.input_tokens or self.output_tokens:
            self.span.set_attribute(sc.USAGE_INPUT_TOKENS, self.input_tokens)
            self.span.set_attribute(sc.USAGE_OUTPUT_TOKENS, self.output_tokens)
        self._finish_span(error)


class GenAITelemetry:
    """Opens GenAI spans and records GenAI metrics; the one object the platform instruments with.

    Args:
        tracer_provider: where spans go (the global provider if None).
        meter_provider: where metrics go (the global provider if None).
        provider_name: the default ``gen_ai.provider.name`` (e.g. ``openai``, ``anthropic``).
        capture_content: record prompts, outputs, tool arguments and retrieval queries (opt-in).
        redact: applied to every captured text; default :class:`ContentRedactor`.
        max_content_chars: captured text longer than this is cut.
        role: ``client`` (gateway, applications) or ``server`` (model serving) metrics.
        price_table: when set, model-call spans carry ``gf.cost.usd`` (the ``gf.spend`` metric
            comes from the CostTracker, which sees the authoritative CostRecords).
        server_address: the upstream's host, added to spans and metrics.
        server_port: the upstream's port, added to spans and metrics.
        defer_metrics: record metrics on a background thread (bounded queue) instead of in the
            request path; ``metrics.flush()`` drains it.
        histogram_aggregator: aggregate the GenAI histograms in-process (see
            :mod:`~genai_factory.observability.histograms`); the metric readers must merge it.
        tracer: the tracer GenAI spans come from, instead of ``tracer_provider``'s (e.g. the
            :class:`~genai_factory.observability.direct.DirectTracer` that ``setup_telemetry``
            builds).
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        provider_name: str = "openai",
        capture_content: bool = False,
        redact: Redactor | None = None,
        max_content_chars: int = 16_384,
        role: Role = "client",
        price_table: PriceTable | None = None,
        server_address: str | None = None,
        server_port: int | None = None,
        defer_metrics: bool = False,
        histogram_aggregator: HistogramAggregator | None = None,
        tracer: trace.Tracer | None = None,
    ) -> None:
        self.provider_name = provider_name
        self.capture_content = capture_content
        self.redact: Redactor = redact or ContentRedactor()
        self.max_content_chars = max_content_chars
        self.role = role
        self.price_table = price_table
        self.server_address = server_address
        self.server_port = server_port
        self._tracer = tracer or (tracer_provider or trace.get_tracer_provider()).get_tracer(_SCOPE)
        self.defer_metrics = defer_metrics
        self.metrics = GenAIMetrics(
            meter_provider, role, defer=defer_metrics, aggregator=histogram_aggregator
        )
        self._chat_kind = SpanKind.CLIENT if role == "client" else SpanKind.SERVER

    def to_params(self) -> dict[str, Any]:
        return {
            "provider_name": self.provider_name,
            "capture_content": self.capture_content,
            "max_content_chars": self.max_content_chars,
            "role": self.role,
            "server_address": self.server_address,
            "server_port": self.server_port,
            "defer_metrics": self.defer_metrics,
        }

    # -- attribution --------------------------------------------------------------------------

    @contextlib.contextmanager
    def attribute(
        self,
        *,
        request_id: str | None = None,
        principal: Principal | None = None,
        route: str | None = None,
        feature: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> Iterator[Attribution]:
        """Stamp org/team/user/key/route/feature on every GenAI span opened inside the block."""
        scope = Attribution(
            request_id=request_id,
            org_id=principal.org_id if principal else None,
            team_id=principal.team_id if principal else None,
            user_id=principal.user_id if principal else None,
            key_id=principal.key_id if principal else None,
            route=route,
            feature=feature,
            tags=dict(tags or {}),
        )
        token = _attribution.set(scope)
        try:
            yield scope
        finally:
            _attribution.reset(token)

    # -- span plumbing ------------------------------------------------------------------------

    def _clip(self, text: str) -> str:
        return self.redact(text[: self.max_content_chars])

    def _base_attributes(
        self, operation: str, provider: str | None, model: str | None
    ) -> tuple[dict[str, AttributeValue], MetricAttributes]:
        metric: MetricAttributes = {sc.OPERATION_NAME: operation}
        if provider:
            metric[sc.PROVIDER_NAME] = provider
        if model:
            metric[sc.REQUEST_MODEL] = model
        if provider and self.server_address:  # the upstream's address; tools have none
            metric[sc.SERVER_ADDRESS] = self.server_address
            if self.server_port:
                metric[sc.SERVER_PORT] = self.server_port
        span_attributes: dict[str, AttributeValue] = dict(metric)
        scope = _attribution.get()
        if scope is not None:
            span_attributes.update(scope.span_attributes())
        return span_attributes, metric

    def _input_messages(self, messages: Sequence[ChatMessage]) -> str:
        payload: list[dict[str, Any]] = []
        for message in messages:
            parts: list[dict[str, Any]] = []
            text = message.text()
            if text:
                parts.append({"type": "text", "content": self._clip(text)})
            for call in message.tool_calls or ():
                parts.append(
                    {
                        "type": "tool_call",
                        "id": call.id,
                        "name": call.function.name,
                        "arguments": self._clip(call.function.arguments),
                    }
                )
            payload.append({"role": message.role, "parts": parts})
        return json.dumps(payload, ensure_ascii=False)

    def _output_messages(self, text: str, finish_reasons: Sequence[str]) -> str:
        message: dict[str, Any] = {
            "role": "assistant",
            "parts": [{"type": "text", "content": self._clip(text)}],
        }
        if finish_reasons:
            message["finish_reason"] = finish_reasons[0]
        return json.dumps([message], ensure_ascii=False)

    def _start_model_call(
        self,
        request: ChatCompletionRequest | None,
        *,
        model: str | None,
        operation: str,
        provider: str | None,
        stream: bool | None,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        parent: Context | None,
        attributes: Mapping[str, AttributeValue] | None,
    ) -> ModelCall:
        if request is not None:
            model = model or request.model
            max_tokens = max_tokens if max_tokens is not None else request.output_limit
            temperature = temperature if temperature is not None else request.temperature
            top_p = top_p if top_p is not None else request.top_p
            stream = request.stream if stream is None else stream
        if not model:
            raise ValueError("a model call needs a model (or a request naming one)")
        span_attributes, metric = self._base_attributes(
            operation, provider or self.provider_name, model
        )
        if max_tokens is not None:
            span_attributes[sc.REQUEST_MAX_TOKENS] = max_tokens
        if temperature is not None:
            span_attributes[sc.REQUEST_TEMPERATURE] = float(temperature)
        if top_p is not None:
            span_attributes[sc.REQUEST_TOP_P] = float(top_p)
        if stream:
            span_attributes[sc.REQUEST_STREAM] = True
        if request is not None:
            if request.seed is not None:
                span_attributes[sc.REQUEST_SEED] = request.seed
            if request.n != 1:
                span_attributes[sc.REQUEST_CHOICE_COUNT] = request.n
            if request.stop:
                stops = [request.stop] if isinstance(request.stop, str) else request.stop
                span_attributes[sc.REQUEST_STOP_SEQUENCES] = stops
            if request.frequency_penalty is not None:
                span_attributes[sc.REQUEST_FREQUENCY_PENALTY] = request.frequency_penalty
            if request.presence_penalty is not None:
                span_attributes[sc.REQUEST_PRESENCE_PENALTY] = request.presence_penalty
            if request.response_format is not None:
                kind = request.response_format.type
                span_attributes[sc.OUTPUT_TYPE] = "text" if kind == "text" else "json"
            if self.capture_content:
                span_attributes[sc.INPUT_MESSAGES] = self._input_messages(request.messages)
        if attributes:
            span_attributes.update(attributes)
        span = self._tracer.start_span(
            sc.span_name(operation, model),
            context=parent,
            kind=self._chat_kind,
            attributes=span_attributes,
        )
        return ModelCall(self, span, operation, metric, model, bool(stream))

    # -- public helpers -----------------------------------------------------------------------

    def chat(
        self,
        request: ChatCompletionRequest | None = None,
        *,
        model: str | None = None,
        operation: str = sc.OP_CHAT,
        provider: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> ModelCall:
        """A span around one (non-streamed) model call; record the response on the handle.

        Use it in a ``with`` block: the span starts here and ends when the block exits.
        """
        call = self._start_model_call(
            request,
            model=model,
            operation=operation,
            provider=provider,
            stream=None,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            parent=None,
            attributes=attributes,
        )
        return call

    async def trace_stream(
        self,
        request: ChatCompletionRequest,
        chunks: AsyncIterator[ChatCompletionChunk],
        *,
        provider: str | None = None,
        attributes: Mapping[str, AttributeValue] | None = None,
    ) -> AsyncIterator[ChatCompletionChunk]:
        """Pass ``chunks`` through, recording TTFT, chunk gaps and the final usage on one span.

        The span is not made current across ``yield`` (a context attached in an async generator
        cannot be detached safely from another task); children use ``call.context``.
        """
        call = self._start_model_call(
            request,
            model=None,
            operation=sc.OP_CHAT,
            provider=provider,
            stream=True,
            max_tokens=None,
            temperature=None,
            top_p=None,
            parent=None,
            attributes=attributes,
        )
        error: BaseException | None = None
        try:
            async for chunk in chunks:
                call.record_chunk(chunk)
                yield chunk
        except GeneratorExit:
            # The consumer stopped early (e.g. a client disconnected): not a model failure.
            call.span.set_attribute("gf.stream.incomplete", True)
            raise
        except BaseException as exc:
            error = exc
            raise
        finally:
            try:
                close = getattr(chunks, "aclose", None)
                if close is not None:
                    await close()
            finally:
                call.finish(error)  # the span ends even if closing the source fails

    def embeddings(
        self,
        model: str,
        *,
        provider: str | None = None,
        input_count: int | None = None,
    ) -> EmbeddingsCall:
        """A span around an embeddings request (``embeddings {model}``)."""
        span_attributes, metric = self._base_attributes(
            sc.OP_EMBEDDINGS, provider or self.provider_name, model
        )
        if input_count is not None:
            span_attributes["gf.embeddings.input_count"] = input_count
        span = self._tracer.start_span(
            sc.span_name(sc.OP_EMBEDDINGS, model), kind=SpanKind.CLIENT, attributes=span_attributes
        )
        handle = EmbeddingsCall(self, span, sc.OP_EMBEDDINGS, metric)
        return handle

    def retrieval(
        self,
        data_source_id: str,
        *,
        query: str | None = None,
        top_k: int | None = None,
        provider: str | None = None,
    ) -> RetrievalSpan:
        """A span around a retrieval (``retrieval {data_source_id}``)."""
        span_attributes, metric = self._base_attributes(sc.OP_RETRIEVAL, provider, None)
        span_attributes[sc.DATA_SOURCE_ID] = data_source_id
        if top_k is not None:
            span_attributes[sc.REQUEST_TOP_K] = float(top_k)
        if query is not None and self.capture_content:
            span_attributes[sc.RETRIEVAL_QUERY_TEXT] = self._clip(query)
        span = self._tracer.start_span(
            sc.span_name(sc.OP_RETRIEVAL, data_source_id),
            kind=SpanKind.CLIENT,
            attributes=span_attributes,
        )
        handle = RetrievalSpan(self, span, sc.OP_RETRIEVAL, metric)
        return handle

    def execute_tool(
        self,
        name: str,
        *,
        call_id: str | None = None,
        description: str | None = None,
        tool_type: str = "function",
        arguments: str | Mapping[str, Any] | None = None,
    ) -> ToolSpan:
        """A span around one tool execution (``execute_tool {name}``, kind INTERNAL)."""
        span_attributes, metric = self._base_attributes(sc.OP_EXECUTE_TOOL, None, None)
        span_attributes[sc.TOOL_NAME] = name
        span_attributes[sc.TOOL_TYPE] = tool_type
        if call_id:
            span_attributes[sc.TOOL_CALL_ID] = call_id
        if description:
            span_attributes[sc.TOOL_DESCRIPTION] = description
        if arguments is not None and self.capture_content:
            text = arguments if isinstance(arguments, str) else json.dumps(dict(arguments))
            span_attributes[sc.TOOL_CALL_ARGUMENTS] = self._clip(text)
        span = self._tracer.start_span(
            sc.span_name(sc.OP_EXECUTE_TOOL, name),
            kind=SpanKind.INTERNAL,
            attributes=span_attributes,
        )
        handle = ToolSpan(self, span, sc.OP_EXECUTE_TOOL, metric)
        return handle

    def invoke_agent(
        self,
        name: str,
        *,
        agent_id: str | None = None,
        description: str | None = None,
        version: str | None = None,
        model: str | None = None,
        conversation_id: str | None = None,
        provider: str | None = None,
    ) -> AgentSpan:
        """A span around one agent step or run (``invoke_agent {name}``, kind INTERNAL)."""
        # The conventions require the provider on agent spans: the one serving the agent's model.
        span_attributes, metric = self._base_attributes(
            sc.OP_INVOKE_AGENT, provider or self.provider_name, model
        )
        span_attributes[sc.AGENT_NAME] = name
        for key, value in (
            (sc.AGENT_ID, agent_id),
            (sc.AGENT_DESCRIPTION, description),
            (sc.AGENT_VERSION, version),
            (sc.CONVERSATION_ID, conversation_id),
        ):
            if value:
                span_attributes[key] = value
        span = self._tracer.start_span(
            sc.span_name(sc.OP_INVOKE_AGENT, name),
            kind=SpanKind.INTERNAL,
            attributes=span_attributes,
        )
        handle = AgentSpan(self, span, sc.OP_INVOKE_AGENT, metric)
        return handle

    # -- gateway stage signals ----------------------------------------------------------------

    def record_cache_lookup(self, *, hit: bool, cache: str = "response") -> None:
        """Count a cache lookup and note it on the current span (the console reads the event)."""
        self.metrics.record_cache_lookup(hit=hit, cache=cache)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event("gf.cache.lookup", {sc.GF_CACHE_NAME: cache, sc.GF_CACHE_HIT: hit})

    def record_guard_verdict(self, verdict: Verdict, *, stage: str, guard: str) -> None:
        """Count a guard verdict and note it (decision and rule ids, never the text) on the span."""
        self.metrics.record_guard_verdict(decision=verdict.decision, stage=stage, guard=guard)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "gf.guard.verdict",
                {
                    sc.GF_GUARD_NAME: guard,
                    sc.GF_GUARD_STAGE: stage,
                    sc.GF_GUARD_DECISION: verdict.decision,
                    "gf.guard.rules": [finding.rule_id for finding in verdict.findings],
                },
            )


class InstrumentedChatModel:
    """Wraps any :class:`~genai_factory.shared.contracts.ChatModel` so every call is traced.

    Example:
        ``InstrumentedChatModel(LlamaCppChatModel("smollm2"), telemetry, provider_name="local")``
    """

    def __init__(
        self, model: ChatModel, telemetry: GenAITelemetry, provider_name: str | None = None
    ) -> None:
        self.model = model
        self.telemetry = telemetry
        self.provider_name = provider_name

    async def complete(self, request: ChatCompletionRequest) -> ChatCompletionResponse:
        with self.telemetry.chat(request, provider=self.provider_name) as call:
            response = await self.model.complete(request)
            call.record_response(response)
        return response

    def stream(self, request: ChatCompletionRequest) -> AsyncIterator[ChatCompletionChunk]:
        return self.telemetry.trace_stream(
            request, self.model.stream(request), provider=self.provider_name
        )


class InstrumentedEmbedder:
    """Wraps any :class:`~genai_factory.shared.contracts.Embedder` with ``embeddings`` spans."""

    def __init__(
        self,
        embedder: Embedder,
        telemetry: GenAITelemetry,
        model: str,
        provider_name: str | None = None,
    ) -> None:
        self.embedder = embedder
        self.telemetry = telemetry
        self.model = model
        self.provider_name = provider_name

    @property
    def dimensions(self) -> int:
        return self.embedder.dimensions

    async def embed(self, texts: list[str]) -> list[list[float]]:
        with self.telemetry.embeddings(
            self.model, provider=self.provider_name, input_count=len(texts)
        ) as call:
            vectors = await self.embedder.embed(texts)
            call.record_vectors(vectors)
        return vectors
