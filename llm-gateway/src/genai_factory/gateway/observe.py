"""The observe stage's hooks: a live span per request, and a summary handed to observers.

Two kinds of component plug in here:

- a **tracer** (``telemetry:`` in the config): an object with the interface of the
  observability module's ``GenAITelemetry`` (:class:`GenAITracer`). The pipeline opens one GenAI
  span per request once the caller is known (``chat {model}``, attributed to the principal),
  makes it current while the stages run (non-streamed requests), notes cache lookups and guard
  verdicts on it, records streamed chunks (time to first chunk), usage and errors, and ends it
  when the request is done. A cache hit records zero tokens: nothing was spent.
- **observers**: any object with ``observe(summary)``, called once per request with a
  :class:`RequestSummary` (ids, deployment, tokens, cost, timings; never message content). The
  built-in :class:`LogObserver` writes one JSON log line per request.

Example:
    >>> summary = RequestSummary(request_id="r1", operation="chat", model="m", status=200)
    >>> summary.gen_ai_attributes()["gen_ai.request.model"]
    'm'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from genai_factory.shared.models import ChatCompletionRequest, Principal, Verdict

__all__ = ["GenAITracer", "LogObserver", "RequestObserver", "RequestSummary"]


@dataclass(slots=True)
class RequestSummary:
    """What one request did, for traces, metrics and logs (no message content)."""

    request_id: str
    operation: str
    model: str
    status: int
    stream: bool = False
    deployment: str | None = None
    provider: str | None = None
    subject: str | None = None
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    cache_hit: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: str = "0"
    duration_s: float = 0.0
    upstream_s: float = 0.0
    ttft_s: float | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    error_type: str | None = None
    finish_reason: str | None = None

    def gen_ai_attributes(self) -> dict[str, Any]:
        """OpenTelemetry GenAI semantic-convention attributes for this request's span."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": self.operation,
            "gen_ai.request.model": self.model,
            "gen_ai.usage.input_tokens": self.prompt_tokens,
            "gen_ai.usage.output_tokens": self.completion_tokens,
        }
        if self.provider:
            attributes["gen_ai.provider.name"] = self.provider
        if self.deployment:
            attributes["gen_ai.response.model"] = self.deployment
        if self.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [self.finish_reason]
        if self.error_type:
            attributes["error.type"] = self.error_type
        return attributes


@runtime_checkable
class RequestObserver(Protocol):
    """Receives every request's summary once it is done (keep it quick: it runs inline)."""

    def observe(self, summary: RequestSummary) -> None: ...


class LogObserver:
    """One structured log line per request (logger ``genai_factory.gateway.requests``)."""

    def __init__(self, level: str = "INFO") -> None:
        self.level = level
        self._level = logging.getLevelName(level.upper())
        self._logger = logging.getLogger("genai_factory.gateway.requests")

    def observe(self, summary: RequestSummary) -> None:
        if self._logger.isEnabledFor(self._level):
            self._logger.log(
                self._level,
                "%s %s -> %s",
                summary.operation,
                summary.model,
                summary.status,
                extra={"gateway": asdict(summary)},
            )


@runtime_checkable
class GenAITracer(Protocol):
    """What the pipeline needs from a tracer: the observability module's ``GenAITelemetry``.

    ``chat`` and ``embeddings`` open a span and return its handle: a context manager (entering
    makes the span current, leaving ends it) with ``trace_id``, ``set_attribute(key, value)``,
    ``record_response(response)``, ``finish(error)``, and for model calls ``record_chunk(chunk)``
    and ``set_usage(input_tokens, output_tokens)``.
    """

    def attribute(
        self,
        *,
        request_id: str | None = None,
        principal: Principal | None = None,
        route: str | None = None,
    ) -> AbstractContextManager[Any]: ...

    def chat(
        self,
        request: ChatCompletionRequest | None = None,
        *,
        model: str | None = None,
        operation: str = "chat",
        provider: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Any: ...

    def embeddings(self, model: str, *, provider: str | None = None) -> Any: ...

    def record_cache_lookup(self, *, hit: bool, cache: str = "response") -> None: ...

    def record_guard_verdict(self, verdict: Verdict, *, stage: str, guard: str) -> None: ...
