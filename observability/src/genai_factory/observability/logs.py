"""JSON logs that carry the current trace and span ids, with secrets and personal data masked.

Builds on :mod:`genai_factory.shared.logging` (JSON lines, ``request_id`` / ``trace_id`` from
``log_context``, the secret RedactionFilter) and adds two handler filters: one that masks personal
data (:class:`~genai_factory.observability.redaction.PIIRedactionFilter`) and one that stamps the
active OpenTelemetry span's ``trace_id`` and ``span_id`` on every record, so a log line in Loki
links to its trace in the console or Tempo.

Example:
    >>> import io, json, logging
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> stream = io.StringIO()
    >>> _ = configure_observability_logging(stream=stream)
    >>> with TracerProvider().get_tracer("demo").start_as_current_span("work") as span:
    ...     logging.getLogger("genai_factory.demo").info("user bob@example.com asked")
    >>> line = json.loads(stream.getvalue())
    >>> line["msg"], line["trace_id"] == format(span.get_span_context().trace_id, "032x")
    ('user [EMAIL] asked', True)
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import IO

from opentelemetry import trace

from genai_factory.observability.redaction import ContentRedactor, PIIRedactionFilter
from genai_factory.shared.logging import configure_logging, current_trace_id, log_context

__all__ = ["TraceContextFilter", "configure_observability_logging", "request_log_context"]


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` of the current OpenTelemetry span to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        span_context = trace.get_current_span().get_span_context()
        if span_context.is_valid:
            if current_trace_id() is None and not hasattr(record, "trace_id"):
                record.trace_id = format(span_context.trace_id, "032x")
            record.span_id = format(span_context.span_id, "016x")
        return True


def configure_observability_logging(
    *,
    level: str = "INFO",
    fmt: str = "json",
    stream: IO[str] | None = None,
    secrets: Iterable[str] = (),
    pii: bool = True,
) -> logging.Logger:
    """The shared logging setup plus PII masking and trace/span ids on every record."""
    secrets = list(secrets)
    logger = configure_logging(level=level, fmt=fmt, stream=stream, secrets=secrets)
    for handler in logger.handlers:
        if pii:
            handler.addFilter(PIIRedactionFilter(ContentRedactor(secrets=secrets)))
        # Last, so ids are added after masking and never mistaken for personal data.
        handler.addFilter(TraceContextFilter())
    return logger


@contextlib.contextmanager
def request_log_context(request_id: str) -> Iterator[None]:
    """``log_context`` with the request id and the current span's trace id."""
    span_context = trace.get_current_span().get_span_context()
    trace_id = format(span_context.trace_id, "032x") if span_context.is_valid else None
    with log_context(request_id=request_id, trace_id=trace_id):
        yield
