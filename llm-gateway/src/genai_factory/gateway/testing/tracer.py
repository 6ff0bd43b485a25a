"""A tracer that keeps its spans in memory: the :class:`GenAITracer` interface, for tests.

It mirrors how the observability module's ``GenAITelemetry`` behaves where the pipeline can
tell: spans carry the attribution current when they open, entering a span makes it current
(cache lookups and guard verdicts become events on the current span; with none current, only the
counters move), and a span ends exactly once. ``fail_on`` names methods that raise, to prove a
broken tracer never breaks a request.

Example:
    >>> tracer = RecordingTracer()
    >>> with tracer.attribute(request_id="r1"):
    ...     span = tracer.chat(model="m")
    >>> with span:
    ...     tracer.record_cache_lookup(hit=True)
    >>> span.name, span.attributes["gf.request_id"], span.events[0][0], span.ended
    ('chat m', 'r1', 'gf.cache.lookup', True)
"""

from __future__ import annotations

import contextlib
import contextvars
import secrets
from collections.abc import Iterator, Mapping
from types import TracebackType
from typing import Any

from genai_factory.shared.models import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    Principal,
    Verdict,
)

__all__ = ["RecordedSpan", "RecordingTracer"]


class RecordedSpan:
    """One span: name, attributes, events, usage, chunks, the error it ended with."""

    def __init__(self, tracer: RecordingTracer, name: str, attributes: dict[str, Any]) -> None:
        self._tracer = tracer
        self.name = name
        self.attributes = attributes
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.trace_id = secrets.token_hex(16)
        self.chunks = 0
        self.usage: tuple[int, int] | None = None
        self.response: Any = None
        self.error: BaseException | None = None
        self.ended = False
        self._token: contextvars.Token[RecordedSpan | None] | None = None

    def __enter__(self) -> RecordedSpan:
        self._tracer._check("enter")
        self._token = self._tracer._current.set(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._token is not None:
            self._tracer._current.reset(self._token)
            self._token = None
        self.finish(exc)

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def record_response(self, response: Any) -> None:
        self._tracer._check("record_response")
        self.response = response
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.usage = (usage.prompt_tokens, getattr(usage, "completion_tokens", 0))

    def record_chunk(self, chunk: ChatCompletionChunk) -> None:
        self._tracer._check("record_chunk")
        self.chunks += 1

    def set_usage(self, input_tokens: int, output_tokens: int) -> None:
        self.usage = (input_tokens, output_tokens)

    def finish(self, error: BaseException | None = None) -> None:
        self._tracer._check("finish")
        if self.ended:
            raise RuntimeError(f"span '{self.name}' ended twice")
        self.error, self.ended = error, True


class RecordingTracer:
    """Records spans, cache lookups and guard verdicts. ``fail_on``: method names that raise."""

    def __init__(self, fail_on: list[str] | None = None) -> None:
        self.fail_on = list(fail_on or [])
        self.spans: list[RecordedSpan] = []
        self.cache_lookups: list[bool] = []
        self.verdicts: list[tuple[str, str, str]] = []
        self.closed = False
        self._current: contextvars.ContextVar[RecordedSpan | None] = contextvars.ContextVar(
            "recorded_span", default=None
        )
        self._attribution: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
            "recorded_attribution", default=None
        )

    def close(self) -> None:
        """Called once by the gateway that built this tracer, when it shuts down."""
        self.closed = True

    def _check(self, method: str) -> None:
        if method in self.fail_on:
            raise RuntimeError(f"RecordingTracer.{method} fails on purpose")

    @contextlib.contextmanager
    def attribute(
        self,
        *,
        request_id: str | None = None,
        principal: Principal | None = None,
        route: str | None = None,
    ) -> Iterator[None]:
        attributes = {
            "gf.request_id": request_id,
            "gf.org_id": principal.org_id if principal else None,
            "gf.team_id": principal.team_id if principal else None,
            "gf.route": route,
        }
        token = self._attribution.set({k: v for k, v in attributes.items() if v})
        try:
            yield
        finally:
            self._attribution.reset(token)

    def _open(self, operation: str, model: str) -> RecordedSpan:
        self._check("open")
        attributes = {"gen_ai.operation.name": operation, "gen_ai.request.model": model}
        attributes |= self._attribution.get() or {}
        span = RecordedSpan(self, f"{operation} {model}", attributes)
        self.spans.append(span)
        return span

    def chat(
        self,
        request: ChatCompletionRequest | None = None,
        *,
        model: str | None = None,
        operation: str = "chat",
        provider: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> RecordedSpan:
        name = model or (request.model if request is not None else "")
        span = self._open(operation, name)
        span.attributes.update(attributes or {})
        return span

    def embeddings(self, model: str, *, provider: str | None = None) -> RecordedSpan:
        return self._open("embeddings", model)

    def record_cache_lookup(self, *, hit: bool, cache: str = "response") -> None:
        self._check("record_cache_lookup")
        self.cache_lookups.append(hit)
        span = self._current.get()
        if span is not None:
            span.events.append(("gf.cache.lookup", {"gf.cache.hit": hit}))

    def record_guard_verdict(self, verdict: Verdict, *, stage: str, guard: str) -> None:
        self._check("record_guard_verdict")
        self.verdicts.append((guard, stage, verdict.decision))
        span = self._current.get()
        if span is not None:
            span.events.append(
                ("gf.guard.verdict", {"guard": guard, "stage": stage, "decision": verdict.decision})
            )
