"""A SpanExporter that writes finished spans into the SQLite :class:`TelemetryStore`.

Put it behind a ``BatchSpanProcessor``: the processor's queue is bounded (it drops the oldest
span when full rather than growing), and each batch it hands over becomes one SQLite transaction
(WAL mode), so the request path only appends to a deque.

Example:
    >>> import tempfile, pathlib
    >>> from opentelemetry.sdk.trace import TracerProvider
    >>> from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    >>> store = TelemetryStore(pathlib.Path(tempfile.mkdtemp()) / "t.db")
    >>> provider = TracerProvider()
    >>> provider.add_span_processor(SimpleSpanProcessor(SQLiteSpanExporter(store)))
    >>> with provider.get_tracer("demo").start_as_current_span("work"):
    ...     pass
    >>> store.count_spans()
    1
    >>> provider.shutdown()
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import orjson
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from genai_factory.observability import conventions as sc
from genai_factory.observability.store import SpanRow, TelemetryStore

__all__ = ["SQLiteSpanExporter", "span_to_row"]

_log = logging.getLogger("genai_factory.observability.exporters")


def _json_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else str(value)


def _dumps(value: Any) -> str:
    """JSON text; orjson (several times faster: this runs for every exported span), else the
    standard library for what orjson refuses (integers beyond 64 bits)."""
    try:
        return orjson.dumps(value, default=_json_default).decode()
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return json.dumps(value, default=_json_default, ensure_ascii=False)


def _signals(events: Sequence[Event]) -> list[tuple[str, str, str]]:
    found: list[tuple[str, str, str]] = []
    for event in events:
        attrs = event.attributes or {}
        if event.name == "gf.cache.lookup":
            outcome = "hit" if attrs.get(sc.GF_CACHE_HIT) else "miss"
            found.append(("cache", str(attrs.get(sc.GF_CACHE_NAME, "")), outcome))
        elif event.name == "gf.guard.verdict":
            name = f"{attrs.get(sc.GF_GUARD_NAME, '')}:{attrs.get(sc.GF_GUARD_STAGE, '')}"
            found.append(("guard", name, str(attrs.get(sc.GF_GUARD_DECISION, ""))))
    return found


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    """The span's attributes as a plain dict, read-only.

    ``ReadableSpan.attributes`` is a read-only view over the SDK's ``BoundedAttributes``, and
    copying it goes through Python-level ``__iter__``/``__getitem__`` per key (2 µs of a model
    call's ~13 attributes, on every exported span); the SDK keeps the values in a plain dict,
    which is used directly when it is there.
    """
    bounded = getattr(span, "_attributes", None)
    plain = getattr(bounded, "_dict", None)
    if isinstance(plain, dict):
        return plain
    return dict(span.attributes or {})


def span_to_row(span: ReadableSpan) -> SpanRow:
    """Flatten a finished span into a :class:`SpanRow` (typed columns + JSON attributes)."""
    ctx = span.get_span_context()
    parent = span.parent
    attrs = _attributes(span)
    get = attrs.get
    span_events = span.events  # a fresh tuple on every access: read it once
    events = None
    signals: list[tuple[str, str, str]] = []
    if span_events:
        events = _dumps(
            [
                {"name": e.name, "ts_ns": e.timestamp, "attributes": dict(e.attributes or {})}
                for e in span_events
            ]
        )
        signals = _signals(span_events)
    ttft = get(sc.RESPONSE_TIME_TO_FIRST_CHUNK)
    cost = get(sc.GF_COST_USD)
    input_tokens = get(sc.USAGE_INPUT_TOKENS)
    output_tokens = get(sc.USAGE_OUTPUT_TOKENS)
    start = span.start_time or 0
    # Enum members' ``_name_`` is the documented raw name; ``.name`` is a slower descriptor.
    return SpanRow(
        trace_id=format(ctx.trace_id, "032x") if ctx else "0" * 32,
        span_id=format(ctx.span_id, "016x") if ctx else "0" * 16,
        parent_span_id=format(parent.span_id, "016x") if parent else None,
        is_root=parent is None or parent.is_remote,
        name=span.name,
        kind=span.kind._name_,
        service=str(span.resource.attributes.get("service.name", "")) or None,
        start_ns=start,
        end_ns=span.end_time or start,
        status=span.status.status_code._name_,
        error_type=_str_or_none(get(sc.ERROR_TYPE)),
        operation=_str_or_none(get(sc.OPERATION_NAME)),
        provider=_str_or_none(get(sc.PROVIDER_NAME)),
        model=_str_or_none(get(sc.REQUEST_MODEL)),
        response_model=_str_or_none(get(sc.RESPONSE_MODEL)),
        input_tokens=input_tokens if isinstance(input_tokens, int) else None,
        output_tokens=output_tokens if isinstance(output_tokens, int) else None,
        ttft_ms=ttft * 1000 if isinstance(ttft, int | float) else None,
        cost_usd=float(cost) if isinstance(cost, int | float) else None,
        request_id=_str_or_none(get(sc.GF_REQUEST_ID)),
        team_id=_str_or_none(get(sc.GF_TEAM_ID)),
        attributes=_dumps(attrs),
        events=events,
        signals=signals,
    )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


class SQLiteSpanExporter(SpanExporter):
    """Writes each exported batch to the store in one transaction; never raises into the SDK.

    ``exported`` and ``failed`` count spans, so a benchmark or a health check can see losses.
    """

    def __init__(self, store: TelemetryStore) -> None:
        self.store = store
        self.exported = 0
        self.failed = 0
        self._last_error_log = 0.0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            written = self.store.write_spans([span_to_row(span) for span in spans])
        except Exception as exc:  # a locked or full disk must not take the app down
            self.failed += len(spans)
            now = time.monotonic()
            if now - self._last_error_log > 10:  # one line per 10 s, not one per batch
                self._last_error_log = now
                _log.warning("span export to %s failed: %s", self.store.path, exc)
            return SpanExportResult.FAILURE
        self.exported += written
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """The store outlives the exporter (the console still reads it); nothing to close here."""

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
