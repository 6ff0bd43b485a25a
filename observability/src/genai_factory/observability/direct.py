"""A tracer whose spans go straight to the span processors: the OpenTelemetry API, less of the SDK.

The SDK's span keeps a lock, a validating attribute container, bounded event and link lists and
its own metrics for every span, then copies itself into a :class:`ReadableSpan` when it ends.
On this project's 2-core VM that bookkeeping was 20-30 µs of the ~35 µs a model-call span cost
(the issue's budget for *all* our instrumentation is 50 µs). :class:`DirectTracer` makes spans
that hold their attributes in a plain dict (values of the common types are stored as they
come; anything else is cleaned exactly as the SDK cleans it) and hand one ``ReadableSpan`` to
the processors' ``on_end``. Everything else is the SDK's own, through public classes: the
sampler decides, the id generator makes the ids, the limits bound attributes, events and
links, and the batch processors and exporters (OTLP, console, the SQLite store) are unchanged.
Spans from either tracer can be parents of spans from the other: a parent is just a
``SpanContext`` in the context.

What it leaves out: processors get ``on_end`` only (``on_start`` is not called; the batch
processors do nothing there), and a span is not guarded by a lock (one span is written by one
task at a time everywhere in this platform).

Example:
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    >>> finished = InMemorySpanExporter()
    >>> tracer = DirectTracer(SimpleSpanProcessor(finished))
    >>> with tracer.start_as_current_span("chat gpt-4o-mini", attributes={"n": 1}) as span:
    ...     span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
    >>> ended = finished.get_finished_spans()[0]
    >>> ended.name, dict(ended.attributes)
    ('chat gpt-4o-mini', {'n': 1, 'gen_ai.response.finish_reasons': ('stop',)})
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from time import time_ns
from types import TracebackType
from typing import Any

from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, SpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, ParentBased, Sampler
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util import types

__all__ = ["DirectSpan", "DirectTracer"]

_logger = logging.getLogger(__name__)

# Values stored as they come; every other value goes through the SDK's own cleaning.
_PLAIN = frozenset({bool, int, float})
_SCALARS = frozenset({bool, int, float, str})


def _clean_by_sdk(key: Any, value: Any, max_length: int | None) -> tuple[str, Any] | None:
    """The SDK's verdict on one attribute: its cleaned key and value, or None if it drops it."""
    cleaned = BoundedAttributes(None, {key: value}, max_value_len=max_length)
    for kept in cleaned.items():
        return kept
    return None


class _EndedSpan(ReadableSpan):
    """A ReadableSpan that reports how many attributes the live span dropped."""

    def __init__(self, *args: Any, dropped_attributes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._dropped_attributes = dropped_attributes

    @property
    def dropped_attributes(self) -> int:
        return self._dropped_attributes


class DirectSpan(trace.Span):
    """A recording span made by :class:`DirectTracer`; it becomes a ReadableSpan when it ends."""

    __slots__ = (
        "_attributes",
        "_context",
        "_dropped",
        "_end_time",
        "_events",
        "_kind",
        "_limits",
        "_links",
        "_name",
        "_parent",
        "_record_exception",
        "_set_status_on_exception",
        "_start_time",
        "_status",
        "_tracer",
    )

    def __init__(
        self,
        tracer: DirectTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        attributes: types.Attributes,
        links: Sequence[Link],
        start_time: int | None,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        self._tracer = tracer
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._limits = tracer.limits
        self._attributes: dict[str, types.AnyValue] = {}
        self._dropped = 0
        self._events: BoundedList[Event] | None = (
            None  # made on the first event: most spans have none
        )
        self._links = self._new_links(links)
        self._status = Status(StatusCode.UNSET)
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._end_time: int | None = None
        if attributes:
            self._set_items(attributes)
        self._start_time = start_time if start_time is not None else time_ns()

    def __repr__(self) -> str:
        return f'{type(self).__name__}(name="{self._name}", context={self._context})'

    # -- attributes ---------------------------------------------------------------------------

    def _set_items(self, attributes: Mapping[str, types.AnyValue]) -> None:
        stored = self._attributes
        limit = self._limits.max_span_attributes
        max_length = self._limits.max_span_attribute_length
        for key, value in attributes.items():
            kind = type(value)
            if type(key) is not str:  # the SDK turns it into text if it can, else drops it
                kept = _clean_by_sdk(key, value, max_length)
                if kept is None:
                    self._dropped += 1
                    continue
                key, value = kept
            elif not key:
                _logger.warning("invalid key `%s`. must be non-empty string. Dropping it.", key)
                self._dropped += 1
                continue
            elif kind is str:
                if max_length is not None and len(value) > max_length:  # type: ignore[arg-type]
                    value = value[:max_length]  # type: ignore[index]
            elif (kind is tuple or kind is list) and all(
                type(item) in _SCALARS
                for item in value  # type: ignore[union-attr]
            ):
                value = tuple(  # as the SDK stores sequences: a tuple, strings cut to the limit
                    item[:max_length] if max_length is not None and type(item) is str else item
                    for item in value  # type: ignore[union-attr]
                )
            elif kind not in _PLAIN:
                value = _clean_by_sdk(key, value, max_length)[1]  # type: ignore[index]
            if key in stored:
                del stored[key]  # a re-set key moves to the end, as in the SDK
            elif limit is not None and len(stored) >= limit:
                if limit == 0:
                    self._dropped += 1
                    continue
                del stored[next(iter(stored))]  # full: the oldest goes, as in the SDK
                self._dropped += 1
            stored[key] = value

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        if self._end_time is not None:
            _logger.warning("Setting attribute on ended span.")
            return
        self._set_items(attributes)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        if self._end_time is not None:
            _logger.warning("Setting attribute on ended span.")
            return
        if not key or not isinstance(key, str):  # one key is never converted, as in the SDK
            _logger.warning("invalid key `%s`. must be non-empty string. Dropping it.", key)
            self._dropped += 1
            return
        self._set_items({key: value})

    # -- events, links, status ----------------------------------------------------------------

    def _link(self, context: SpanContext, attributes: types.Attributes) -> Link:
        limits = self._limits
        bounded = BoundedAttributes(
            limits.max_link_attributes, attributes, max_value_len=limits.max_attribute_length
        )
        return Link(context, bounded)

    def _new_links(self, links: Sequence[Link]) -> BoundedList[Link]:
        kept = [
            self._link(link.context, link.attributes)
            for link in links
            if link and _valid_link(link.context, link.attributes)
        ]
        return BoundedList.from_seq(self._limits.max_links, kept)

    def _ended(self, what: str) -> bool:
        if self._end_time is not None:
            _logger.warning("Tried calling %s on ended span.", what)
            return True
        return False

    def add_event(
        self, name: str, attributes: types.Attributes = None, timestamp: int | None = None
    ) -> None:
        if self._ended("add_event"):
            return
        limits = self._limits
        if self._events is None:
            self._events = BoundedList(limits.max_events)
        self._events.append(
            Event(
                name,
                BoundedAttributes(
                    limits.max_event_attributes,
                    attributes,
                    max_value_len=limits.max_attribute_length,
                ),
                timestamp,
            )
        )

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if not _valid_link(context, attributes) or self._ended("add_link"):
            return
        self._links.append(self._link(context, attributes))

    def update_name(self, name: str) -> None:
        if not self._ended("update_name"):
            self._name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        if self._ended("set_status"):
            return
        # As in the SDK: OK is final, and UNSET never overwrites.
        if self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is StatusCode.UNSET:
                return
            if description is not None:
                _logger.warning(
                    "Description %s ignored. Use either `Status` or `(StatusCode, Description)`",
                    description,
                )
            self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        module = type(exception).__module__
        qualname = type(exception).__qualname__
        recorded: MutableMapping[str, types.AnyValue] = {
            "exception.type": f"{module}.{qualname}"
            if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    # -- life ---------------------------------------------------------------------------------

    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    @property
    def name(self) -> str:
        return self._name

    @property
    def attributes(self) -> Mapping[str, types.AnyValue]:
        """The attributes so far (a copy)."""
        return dict(self._attributes)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            _logger.warning("Calling end() on an ended span.")
            return
        self._end_time = end_time if end_time is not None else time_ns()
        tracer = self._tracer
        tracer.span_processor.on_end(
            _EndedSpan(
                name=self._name,
                context=self._context,
                parent=self._parent,
                resource=tracer.resource,
                attributes=self._attributes,
                events=self._events if self._events is not None else (),
                links=self._links,
                kind=self._kind,
                status=self._status,
                start_time=self._start_time,
                end_time=self._end_time,
                instrumentation_scope=tracer.instrumentation_scope,
                dropped_attributes=self._dropped,
            )
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        if exc_val is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(exc_val, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(exc_val).__name__}: {exc_val}"))
        self.end()


def _valid_link(context: SpanContext, attributes: types.Attributes) -> bool:
    # The SDK's rule: a link needs a valid context, or at least attributes or a trace state.
    return bool(context and (context.is_valid or (attributes or context.trace_state)))


class DirectTracer(trace.Tracer):
    """An OpenTelemetry tracer whose spans are :class:`DirectSpan`, ended into ``span_processor``.

    Args:
        span_processor: gets every sampled span when it ends (e.g. a ``BatchSpanProcessor``, or
            the ``SynchronousMultiSpanProcessor`` a ``TracerProvider`` was built with).
        resource: the resource stamped on every span.
        sampler: decides each span, as in the SDK (default: parent-based, always on).
        id_generator: makes trace and span ids (default: random).
        limits: attribute, event and link limits (default: the SDK's, from the environment).
        scope_name: the instrumentation scope of every span.
        scope_version: its version.
    """

    def __init__(
        self,
        span_processor: SpanProcessor,
        *,
        resource: Resource | None = None,
        sampler: Sampler | None = None,
        id_generator: IdGenerator | None = None,
        limits: SpanLimits | None = None,
        scope_name: str = "genai_factory.observability",
        scope_version: str | None = None,
    ) -> None:
        self.span_processor = span_processor
        self.resource = resource if resource is not None else Resource.create({})
        self.sampler = sampler or ParentBased(ALWAYS_ON)
        self.id_generator = id_generator or RandomIdGenerator()
        self.limits = limits or SpanLimits()
        self.instrumentation_scope = InstrumentationScope(scope_name, scope_version)
        random_flag = TraceFlags.RANDOM_TRACE_ID if self.id_generator.is_trace_id_random() else 0
        self._root_flags = {
            True: TraceFlags(TraceFlags.SAMPLED | random_flag),
            False: TraceFlags(TraceFlags.DEFAULT | random_flag),
        }

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        links = links or ()
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        if parent is not None and not isinstance(parent, SpanContext):
            raise TypeError("parent_span_context must be a SpanContext or None.")
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = self.id_generator.generate_trace_id()
        else:
            trace_id = parent.trace_id
        result = self.sampler.should_sample(context, trace_id, name, kind, attributes, links)
        sampled = result.decision is Decision.RECORD_AND_SAMPLE
        if parent is None:
            flags = self._root_flags[sampled]
        else:
            random_bit = TraceFlags.RANDOM_TRACE_ID if parent.trace_flags.random_trace_id else 0
            flags = TraceFlags((TraceFlags.SAMPLED if sampled else 0) | random_bit)
        span_context = SpanContext(
            trace_id,
            self.id_generator.generate_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=result.trace_state,
        )
        if result.decision is Decision.DROP:
            return NonRecordingSpan(span_context)
        return DirectSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            result.attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )

    # The API types this as its own private context-manager class; a plain one behaves the same.
    @contextmanager
    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name,
            context,
            kind,
            attributes,
            links,
            start_time,
            record_exception,
            set_status_on_exception,
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current
