from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.shared.errors import ValidationError
from genai_factory.shared.tracecontext import TraceContext

hex_digits = "0123456789abcdef"


@given(
    st.text(hex_digits, min_size=32, max_size=32).filter(lambda s: s != "0" * 32),
    st.text(hex_digits, min_size=16, max_size=16).filter(lambda s: s != "0" * 16),
    st.integers(0, 255),
)
def test_traceparent_round_trips(trace_id: str, span_id: str, flags: int) -> None:
    ctx = TraceContext(trace_id=trace_id, span_id=span_id, flags=flags)
    assert TraceContext.parse(ctx.to_header()) == ctx
    assert TraceContext.parse(ctx.to_header().upper()) == ctx


@given(st.text(max_size=80))
def test_any_header_parses_or_raises_validation_error(header: str) -> None:
    try:
        ctx = TraceContext.parse(header)
    except ValidationError as exc:
        assert exc.param == "traceparent"
    else:
        assert len(ctx.trace_id) == 32


@pytest.mark.parametrize(
    "header",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # zero span id
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has no extra fields
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
    ],
)
def test_invalid_headers_are_rejected(header: str) -> None:
    with pytest.raises(ValidationError):
        TraceContext.parse(header)


def test_future_versions_may_carry_more_fields_and_children_keep_the_trace() -> None:
    ctx = TraceContext.parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-future")
    assert not ctx.sampled
    child = ctx.child()
    assert child.trace_id == ctx.trace_id and child.span_id != ctx.span_id
    assert TraceContext.from_headers({"TraceParent": ctx.to_header()}) == ctx
    assert TraceContext.from_headers({"traceparent": "garbage"}) is None
    assert TraceContext.from_headers({}) is None
    assert TraceContext.new().sampled
