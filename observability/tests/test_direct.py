"""DirectTracer against the SDK's tracer: the same operations must give the same finished spans."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from genai_factory.observability.direct import DirectSpan, DirectTracer
from genai_factory.observability.ids import TimeOrderedIdGenerator
from genai_factory.observability.setup import TelemetryConfig, setup_telemetry

RESOURCE = Resource.create({"service.name": "direct-test"})


@dataclass
class Pair:
    """The SDK's tracer and ours, on the same resource, sampler, limits and scope."""

    sdk: trace.Tracer
    direct: DirectTracer
    sdk_spans: InMemorySpanExporter
    direct_spans: InMemorySpanExporter

    def run(self, script: Callable[[trace.Tracer], Any]) -> tuple[ReadableSpan, ReadableSpan]:
        script(self.sdk)
        script(self.direct)
        (theirs,) = self.sdk_spans.get_finished_spans()
        (ours,) = self.direct_spans.get_finished_spans()
        self.sdk_spans.clear()
        self.direct_spans.clear()
        return theirs, ours


def make_pair(limits: SpanLimits | None = None, sampler: Sampler | None = None) -> Pair:
    sdk_spans, direct_spans = InMemorySpanExporter(), InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE, sampler=sampler, span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(sdk_spans))
    direct = DirectTracer(
        SimpleSpanProcessor(direct_spans),
        resource=RESOURCE,
        sampler=sampler,
        limits=limits,
        scope_name="test",
    )
    return Pair(provider.get_tracer("test"), direct, sdk_spans, direct_spans)


def without_frames(attributes: dict[str, Any]) -> dict[str, Any]:
    """A stack trace's frames differ between the tracers' own code; its last line must not."""
    if "exception.stacktrace" in attributes:
        attributes["exception.stacktrace"] = attributes["exception.stacktrace"].splitlines()[-1]
    return attributes


def view(span: ReadableSpan) -> dict[str, Any]:
    """Everything an exporter reads from a span, except ids and times."""
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": list(dict(span.attributes or {}).items()),  # order matters too
        "dropped_attributes": span.dropped_attributes,
        "events": [(e.name, without_frames(dict(e.attributes or {}))) for e in span.events],
        "dropped_events": span.dropped_events,
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "dropped_links": span.dropped_links,
        "status": (span.status.status_code, span.status.description),
        "resource": dict(span.resource.attributes),
        "scope": span.instrumentation_scope.name if span.instrumentation_scope else None,
        "has_parent": span.parent is not None,
        "sampled": span.context.trace_flags.sampled if span.context else None,
    }


class WithText:
    def __str__(self) -> str:
        return "with-text"


class Opaque:
    """No __str__ or __repr__ of its own: the SDK drops the value to None."""

    __slots__ = ()


scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.binary(max_size=6),
    st.none(),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.lists(scalars, max_size=4).map(tuple),
    st.dictionaries(st.text(max_size=4), scalars, max_size=3),
    st.sampled_from([WithText(), Opaque()]),
)
# Keys without digits, so a converted int key never collides with a text key.
keys = st.text(alphabet="abcdefg._", max_size=6)
mixed_keys = st.one_of(keys, st.integers(min_value=0, max_value=9))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.dictionaries(mixed_keys, values, max_size=6),
    later=st.lists(st.tuples(keys, values), max_size=6),
    bulk=st.dictionaries(mixed_keys, values, max_size=4),
    max_attributes=st.one_of(st.none(), st.integers(min_value=0, max_value=5)),
    max_length=st.one_of(st.none(), st.integers(min_value=0, max_value=5)),
)
def test_attributes_are_cleaned_limited_and_ordered_as_the_sdk_does(
    initial: dict[Any, Any],
    later: list[tuple[str, Any]],
    bulk: dict[Any, Any],
    max_attributes: int | None,
    max_length: int | None,
) -> None:
    logging.disable(logging.WARNING)  # the SDK warns on every dropped value
    try:
        pair = make_pair(
            SpanLimits(max_span_attributes=max_attributes, max_span_attribute_length=max_length)
        )

        def script(tracer: trace.Tracer) -> None:
            span = tracer.start_span("s", attributes=initial)
            for key, value in later:
                span.set_attribute(key, value)
            span.set_attributes(bulk)
            span.end()

        theirs, ours = pair.run(script)
    finally:
        logging.disable(logging.NOTSET)
    assert view(ours) == view(theirs)


def test_a_non_text_key_is_converted_in_bulk_and_refused_alone_as_in_the_sdk() -> None:
    pair = make_pair()

    def script(tracer: trace.Tracer) -> None:
        span = tracer.start_span("s", attributes={3: "three"})  # type: ignore[dict-item]
        span.set_attribute(4, "four")  # type: ignore[arg-type]
        span.set_attribute("", "empty")
        span.end()

    theirs, ours = pair.run(script)
    assert view(ours) == view(theirs)
    assert dict(ours.attributes or {}) == {"3": "three"}
    assert ours.dropped_attributes == 2


def test_events_links_status_and_exceptions_match_the_sdk() -> None:
    pair = make_pair(SpanLimits(max_events=2, max_links=1, max_event_attributes=2))
    other = SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1))

    def script(tracer: trace.Tracer) -> None:
        span = tracer.start_span(
            "s",
            kind=SpanKind.CLIENT,
            links=[Link(other, {"why": "retry"}), Link(other, {"dropped": True})],
        )
        span.add_event("first", {"a": 1, "b": [1, 2], "c": "cut by the limit"})
        span.add_link(other, {"late": "link"})
        span.set_status(StatusCode.UNSET)  # never overwrites
        span.set_status(Status(StatusCode.ERROR, "bad"))
        span.set_status(StatusCode.ERROR, "worse")
        span.update_name("renamed")
        try:
            raise ValueError("boom")
        except ValueError as error:
            span.record_exception(error, {"extra": 1})
        span.end()

    theirs, ours = pair.run(script)
    assert view(ours) == view(theirs)
    assert view(ours)["status"] == (StatusCode.ERROR, "worse")
    assert [event.name for event in ours.events] == ["first", "exception"]


def test_ok_is_final_and_a_status_with_a_description_argument_keeps_its_own() -> None:
    pair = make_pair()

    def script(tracer: trace.Tracer) -> None:
        span = tracer.start_span("s")
        span.set_status(Status(StatusCode.ERROR, "kept"), "ignored")
        span.set_status(StatusCode.OK)
        span.set_status(StatusCode.ERROR, "too late")
        span.end()

    theirs, ours = pair.run(script)
    assert view(ours) == view(theirs)
    assert ours.status.status_code is StatusCode.OK


def test_an_exception_leaving_start_as_current_span_marks_it_as_the_sdk_does() -> None:
    pair = make_pair()

    def script(tracer: trace.Tracer) -> None:
        current: list[bool] = []

        def fail() -> None:
            with tracer.start_as_current_span("s") as span:
                current.append(trace.get_current_span() is span)
                raise KeyError("missing")

        with pytest.raises(KeyError):
            fail()
        assert current == [True]

    theirs, ours = pair.run(script)
    assert view(ours) == view(theirs)
    assert ours.status.status_code is StatusCode.ERROR
    assert ours.events[0].attributes["exception.type"] == "KeyError"  # type: ignore[index]


def test_an_exception_leaving_the_span_itself_is_recorded_unless_told_not_to() -> None:
    pair = make_pair()

    def script(tracer: trace.Tracer) -> None:
        with pytest.raises(RuntimeError), tracer.start_span("s"):
            raise RuntimeError("inside")

    theirs, ours = pair.run(script)
    assert view(ours) == view(theirs)
    assert ours.status.description == "RuntimeError: inside"

    def quiet(tracer: trace.Tracer) -> None:
        span = tracer.start_span("q", record_exception=False, set_status_on_exception=False)
        with pytest.raises(RuntimeError), span:
            raise RuntimeError("not recorded")

    theirs, ours = pair.run(quiet)
    assert view(ours) == view(theirs)
    assert not ours.events and ours.status.status_code is StatusCode.UNSET


def test_an_ended_span_takes_nothing_more_and_is_exported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pair = make_pair()
    span = pair.direct.start_span("s", attributes={"before": 1})
    assert isinstance(span, DirectSpan) and span.is_recording()
    span.end(end_time=span._start_time + 5)
    span.set_attribute("after", 2)
    span.set_attributes({"after": 2})
    span.add_event("after")
    span.add_link(SpanContext(1, 2, is_remote=False))
    span.update_name("after")
    span.set_status(StatusCode.ERROR)
    span.end()
    assert not span.is_recording()
    (ended,) = pair.direct_spans.get_finished_spans()
    assert dict(ended.attributes or {}) == {"before": 1}
    assert ended.name == "s" and not ended.events and not ended.links
    assert ended.end_time == ended.start_time + 5  # type: ignore[operator]
    assert "ended span" in caplog.text
    assert span.attributes == {"before": 1} and span.name == "s"
    assert "DirectSpan" in repr(span)


def test_parents_and_children_cross_between_the_two_tracers() -> None:
    pair = make_pair()
    with (
        pair.direct.start_as_current_span("outer") as outer,
        pair.sdk.start_as_current_span("middle") as middle,
    ):
        pair.direct.start_span("inner").end()
    (middle_done,) = pair.sdk_spans.get_finished_spans()
    inner_done, outer_done = pair.direct_spans.get_finished_spans()
    trace_id = outer.get_span_context().trace_id
    assert middle_done.context.trace_id == inner_done.context.trace_id == trace_id  # type: ignore[union-attr]
    assert middle_done.parent.span_id == outer.get_span_context().span_id  # type: ignore[union-attr]
    assert inner_done.parent.span_id == middle.get_span_context().span_id  # type: ignore[union-attr]
    assert outer_done.parent is None


def test_a_remote_parent_from_a_traceparent_is_kept() -> None:
    pair = make_pair()
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    span = pair.direct.start_span("s", context=parent)
    span.end()
    (done,) = pair.direct_spans.get_finished_spans()
    assert done.context.trace_id == 0x1234  # type: ignore[union-attr]
    assert done.parent == remote


def test_the_sampler_decides_and_unsampled_spans_are_not_exported() -> None:
    never = make_pair(sampler=ParentBased(ALWAYS_OFF))
    span = never.direct.start_span("dropped")
    assert not span.is_recording() and not span.get_span_context().trace_flags.sampled
    span.end()
    assert never.direct_spans.get_finished_spans() == ()
    # A sampled remote parent wins over ALWAYS_OFF for the root, as parent-based sampling says.
    remote = SpanContext(7, 8, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
    child = never.direct.start_span(
        "kept", context=trace.set_span_in_context(trace.NonRecordingSpan(remote))
    )
    child.end()
    assert [s.name for s in never.direct_spans.get_finished_spans()] == ["kept"]
    # At ratio 0.5 both tracers keep exactly the same trace ids (the ratio reads the id).
    half = make_pair(sampler=TraceIdRatioBased(0.5))
    kept = {True: 0, False: 0}
    for trace_id in range(1, 2**64, 2**58 + 12345):
        context = trace.set_span_in_context(
            trace.NonRecordingSpan(SpanContext(trace_id, 1, is_remote=True))
        )
        ours = half.direct.start_span("s", context=context)
        theirs = half.sdk.start_span("s", context=context)
        assert ours.is_recording() == theirs.is_recording()
        kept[ours.is_recording()] += 1
    assert kept[True] and kept[False]


def test_root_flags_follow_the_id_generator() -> None:
    exporter = InMemorySpanExporter()
    ordered = DirectTracer(SimpleSpanProcessor(exporter), id_generator=TimeOrderedIdGenerator())
    random_ids = DirectTracer(SimpleSpanProcessor(exporter))
    provider = TracerProvider(id_generator=TimeOrderedIdGenerator())
    for ours, theirs in [
        (ordered, provider.get_tracer("t")),
        (random_ids, TracerProvider().get_tracer("t")),
    ]:
        mine = ours.start_span("s").get_span_context().trace_flags
        sdk = theirs.start_span("s").get_span_context().trace_flags
        assert mine == sdk
        child = ours.start_span("c", context=trace.set_span_in_context(ours.start_span("p")))
        assert child.get_span_context().trace_flags == mine


def test_a_parent_that_is_not_a_span_context_is_refused() -> None:
    class Broken(trace.NonRecordingSpan):
        def get_span_context(self) -> Any:
            return "not a context"

    tracer = DirectTracer(SimpleSpanProcessor(InMemorySpanExporter()))
    with pytest.raises(TypeError):
        tracer.start_span(
            "s", context=trace.set_span_in_context(Broken(trace.INVALID_SPAN_CONTEXT))
        )


@pytest.mark.parametrize("direct", [True, False])
def test_setup_telemetry_stores_the_same_model_call_either_way(tmp_path: Any, direct: bool) -> None:
    telemetry = setup_telemetry(
        TelemetryConfig(sqlite_path=tmp_path / "t.db", metric_exporters=[], direct_spans=direct)
    )
    try:
        tracer = telemetry.genai._tracer
        assert isinstance(tracer, DirectTracer) is direct
        with telemetry.genai.chat(model="gpt-4o-mini", max_tokens=8) as call:
            trace_id = call.trace_id
            call.set_usage(5, 2)
            call.finish_reasons = ["stop"]
            # another library's span under ours goes through the SDK tracer, same processors
            with telemetry.tracer_provider.get_tracer("other").start_as_current_span("http"):
                pass
        telemetry.flush()
        assert telemetry.store is not None
        rows = {row["name"]: row for row in telemetry.store.trace(trace_id)}
        chat, http = rows["chat gpt-4o-mini"], rows["http"]
        assert http["parent_span_id"] == chat["span_id"]
        assert chat["attributes"]["gen_ai.response.finish_reasons"] == ["stop"]
        assert chat["attributes"]["gen_ai.usage.input_tokens"] == 5
        assert chat["attributes"]["gen_ai.request.max_tokens"] == 8
        assert chat["service"] == "genai-factory" and chat["kind"] == "CLIENT"
    finally:
        telemetry.shutdown()
