"""The observe stage's hooks: a summary of every request, handed to observers and metrics.

An observer is any object with ``observe(summary)``; the observability module plugs an
OpenTelemetry exporter in this way (span name ``{operation} {model}``, GenAI semantic convention
attributes from the summary). The built-in :class:`LogObserver` writes one JSON log line per
request with ids, deployment, tokens and timings, never message content.

Example:
    >>> summary = RequestSummary(request_id="r1", operation="chat", model="m", status=200)
    >>> summary.gen_ai_attributes()["gen_ai.request.model"]
    'm'
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = ["LogObserver", "RequestObserver", "RequestSummary"]


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
