"""traceparent in and out: the gateway's span becomes the parent of model serving's span."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from genai_factory.observability.propagation import (
    attach_remote_parent,
    current_trace_context,
    extract_context,
    inject_traceparent,
)
from genai_factory.shared.tracecontext import TraceContext

pytestmark = pytest.mark.unit


def test_a_span_started_under_extracted_headers_joins_the_callers_trace() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    gateway, serving = provider.get_tracer("gateway"), provider.get_tracer("serving")

    with gateway.start_as_current_span("gateway call"):
        headers = inject_traceparent({})
        sent = current_trace_context()
    assert sent is not None and TraceContext.parse(headers["traceparent"]) == sent

    # the model server receives the headers (case-insensitively) and continues the trace
    with attach_remote_parent({"TraceParent": headers["traceparent"]}) as parent:
        assert parent == sent
        with serving.start_as_current_span("chat smollm2"):
            pass
    caller, callee = exporter.get_finished_spans()
    assert callee.context.trace_id == caller.context.trace_id
    assert callee.parent is not None and callee.parent.span_id == caller.context.span_id
    assert callee.parent.is_remote


def test_tracestate_travels_with_traceparent() -> None:
    ctx = extract_context(
        {
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "tracestate": "vendor=abc",
        }
    )
    headers = inject_traceparent({}, ctx)
    assert headers["tracestate"] == "vendor=abc"


def test_nothing_is_injected_without_a_span_and_unsampled_flags_survive() -> None:
    assert inject_traceparent({}) == {}
    assert current_trace_context() is None
    header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
    assert inject_traceparent({}, extract_context({"traceparent": header})) == {
        "traceparent": header
    }
    with attach_remote_parent({}) as parent:
        assert parent is None


@given(
    st.dictionaries(
        st.sampled_from(["traceparent", "TRACEPARENT", "tracestate", "x"]), st.text(max_size=80)
    )
)
def test_arbitrary_headers_never_raise(headers: dict[str, str]) -> None:
    ctx = extract_context(headers)
    if ctx is not None:
        assert TraceContext.parse(inject_traceparent({}, ctx)["traceparent"])
