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
from itertools import product
from typing import Any

import orjson
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from genai_factory.observability import conventions as sc
from genai_factory.observability.store import (
    COLUMN_ATTRIBUTES,
    SPAN_COLUMNS,
    SpanRow,
    TelemetryStore,
    _trace_key,
)

__all__ = ["SQLiteSpanExporter", "span_to_row", "span_values"]

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
    if type(bounded) is dict:  # DirectTracer's spans hold a plain dict already
        return bounded
    plain = getattr(bounded, "_dict", None)
    if isinstance(plain, dict):
        return plain
    return dict(span.attributes or {})


_FIRST = SPAN_COLUMNS.index("error_type")
_KEY_OF = {column: key for column, key, _ in COLUMN_ATTRIBUTES}
# error_type .. team_id: the attribute each of these columns comes from and the types that
# column holds exactly (ttft_ms comes converted, from seconds to ms: it stays in the JSON too).
_SLOTS = SPAN_COLUMNS[_FIRST : SPAN_COLUMNS.index("attributes")]
_SLOT_KEYS = tuple(_KEY_OF.get(column, sc.RESPONSE_TIME_TO_FIRST_CHUNK) for column in _SLOTS)
_KIND_OF = {column: kind for column, _, kind in COLUMN_ATTRIBUTES}
_NONE = type(None)
# Every combination of types for which each column holds its attribute exactly: one set
# lookup tells the common case apart (a few thousand tuples, built once).
_EXACT_TYPES = frozenset(
    product(
        *(
            (_NONE, _KIND_OF[column]) if column in _KIND_OF else (_NONE, int, float)
            for column in _SLOTS
        )
    )
)
_DROPPED = frozenset(_KEY_OF.values())
_I_TTFT = _SLOTS.index("ttft_ms")
_I_START = SPAN_COLUMNS.index("start_ns")


def span_values(span: ReadableSpan) -> tuple[list[Any], list[tuple[str, str, str]]]:
    """A finished span as the store's column values (``SPAN_COLUMNS`` order) and its signals.

    The exporter writes these straight to the store. Attributes that a column holds exactly
    (``COLUMN_ATTRIBUTES``) are left out of the attributes JSON; reads merge them back.
    """
    ctx = span.get_span_context()
    parent = span.parent
    attrs = _attributes(span)
    found = list(map(attrs.get, _SLOT_KEYS))
    if tuple(map(type, found)) in _EXACT_TYPES:
        rest = {k: v for k, v in attrs.items() if k not in _DROPPED}
    else:
        rest = _inexact(attrs, found)
    ttft = found[_I_TTFT]
    if ttft is not None:
        found[_I_TTFT] = ttft * 1000
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
    start = span.start_time or 0
    end = span.end_time or start
    trace_id = format(ctx.trace_id, "032x") if ctx else "0" * 32
    # Enum members' ``_name_`` is the documented raw name; ``.name`` is a slower descriptor.
    values: list[Any] = [
        trace_id,
        format(ctx.span_id, "016x") if ctx else "0" * 16,
        format(parent.span_id, "016x") if parent else None,
        int(parent is None or parent.is_remote),
        span.name,
        span.kind._name_,
        str(span.resource.attributes.get("service.name", "")) or None,
        start,
        end,
        max(end - start, 0) / 1e6,
        span.status.status_code._name_,
        *found,
        _dumps(rest),
        events,
        _trace_key(trace_id),
    ]
    return values, signals


def _inexact(attrs: dict[str, Any], found: list[Any]) -> dict[str, Any]:
    """The JSON's attributes when a column cannot hold its attribute exactly, and ``found``
    changed to what the columns can hold (the JSON keeps the original)."""
    rest = {k: v for k, v in attrs.items() if k not in _DROPPED}
    for index, column in enumerate(_SLOTS):
        value = found[index]
        if value is None:
            continue
        kind = _KIND_OF.get(column)
        if kind is None:  # ttft: a number in seconds, or nothing
            if not isinstance(value, int | float) or isinstance(value, bool):
                found[index] = None
        elif type(value) is not kind:
            rest[_SLOT_KEYS[index]] = value
            found[index] = _coerce(value, kind)
    return rest


def _coerce(value: Any, kind: type) -> Any:
    """What a column holds for an attribute of another type (the JSON keeps the original)."""
    if kind is str:
        return str(value)
    if kind is float and isinstance(value, int | float):
        return float(value)
    return None  # token counts that are not plain ints (bools, floats, text): no column value


def span_to_row(span: ReadableSpan) -> SpanRow:
    """Flatten a finished span into a :class:`SpanRow` (typed columns + JSON attributes)."""
    values, signals = span_values(span)
    row = dict(zip(SPAN_COLUMNS, values, strict=True))
    del row["duration_ms"], row["trace_key"]
    row["is_root"] = bool(row["is_root"])
    return SpanRow(**row, signals=signals)


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
            values = []
            signals = []
            for span in spans:
                row, found = span_values(span)
                values.append(row)
                if found:
                    start = row[_I_START]
                    signals += [(start, *signal) for signal in found]
            written = self.store.write_span_values(values, signals)
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
