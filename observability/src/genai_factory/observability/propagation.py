"""W3C ``traceparent`` in and out of HTTP headers, bridging OpenTelemetry and the shared model.

The gateway injects the current span into the headers of its upstream call; model serving
extracts it so its spans join the same trace. Parsing is the shared
:class:`~genai_factory.shared.tracecontext.TraceContext`'s (strict, spec-following); a bad header
is ignored, never an error, so a client cannot break a request with it.

Example:
    >>> from genai_factory.observability.propagation import extract_context, inject_traceparent
    >>> from opentelemetry import trace
    >>> header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    >>> ctx = extract_context({"Traceparent": header})
    >>> inject_traceparent({}, ctx)
    {'traceparent': '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'}
    >>> extract_context({"traceparent": "garbage"}) is None
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from genai_factory.shared.tracecontext import TraceContext

__all__ = [
    "attach_remote_parent",
    "current_trace_context",
    "extract_context",
    "inject_traceparent",
    "to_trace_context",
]

_MAX_TRACESTATE = 512


def to_trace_context(span_context: SpanContext) -> TraceContext | None:
    """The shared model for an OpenTelemetry span context (None if it is invalid)."""
    if not span_context.is_valid:
        return None
    return TraceContext(
        trace_id=format(span_context.trace_id, "032x"),
        span_id=format(span_context.span_id, "016x"),
        flags=int(span_context.trace_flags),
    )


def current_trace_context(context: Context | None = None) -> TraceContext | None:
    """The current span (or the one in ``context``) as a TraceContext."""
    return to_trace_context(trace.get_current_span(context).get_span_context())


def inject_traceparent(
    headers: MutableMapping[str, str], context: Context | None = None
) -> MutableMapping[str, str]:
    """Set ``traceparent`` (and ``tracestate`` if any) from the current span; returns ``headers``."""
    span_context = trace.get_current_span(context).get_span_context()
    parent = to_trace_context(span_context)
    if parent is not None:
        headers["traceparent"] = parent.to_header()
        if span_context.trace_state:
            headers["tracestate"] = span_context.trace_state.to_header()
    return headers


def extract_context(headers: Mapping[str, str], context: Context | None = None) -> Context | None:
    """A context whose parent is the remote span in ``headers``; None when absent or invalid."""
    parent = TraceContext.from_headers(dict(headers))
    if parent is None:
        return None
    state = TraceState()
    for name, value in headers.items():
        if name.lower() == "tracestate" and len(value) <= _MAX_TRACESTATE:
            state = TraceState.from_header([value])
    span_context = SpanContext(
        trace_id=int(parent.trace_id, 16),
        span_id=int(parent.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(parent.flags & 0xFF),
        trace_state=state,
    )
    return trace.set_span_in_context(NonRecordingSpan(span_context), context)


@contextlib.contextmanager
def attach_remote_parent(headers: Mapping[str, str]) -> Iterator[TraceContext | None]:
    """Make the remote span in ``headers`` the parent of spans started inside the block."""
    ctx = extract_context(headers)
    if ctx is None:
        yield None
        return
    token = otel_context.attach(ctx)
    try:
        yield current_trace_context()
    finally:
        otel_context.detach(token)
