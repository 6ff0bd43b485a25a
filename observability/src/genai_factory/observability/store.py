"""The built-in telemetry store: one SQLite file (WAL) with spans, per-minute rollups, cost, alerts.

It is the zero-server default behind the console. Writes come in batches (one transaction per
batch, from the span exporter's worker thread or the cost tracker); at the same time they fold
each span into per-minute and per-hour rollups (calls, errors, tokens, cost and a log-bucketed
latency histogram per operation and model; cost per team and model; cache and guard outcomes),
so the console's charts read a few hundred rollup rows instead of scanning every span, at any
store size. Reads use one connection per thread.

Examples:
    >>> import tempfile, pathlib
    >>> store = TelemetryStore(pathlib.Path(tempfile.mkdtemp()) / "telemetry.db")
    >>> store.write_spans([SpanRow(trace_id="a" * 32, span_id="b" * 16, parent_span_id=None,
    ...     is_root=True, name="chat m", kind="CLIENT", service="demo", start_ns=60 * 10**9,
    ...     end_ns=60 * 10**9 + 5 * 10**6, status="UNSET", operation="chat", model="m",
    ...     input_tokens=3, output_tokens=4)])
    1
    >>> [(r["name"], r["duration_ms"]) for r in store.recent_requests(limit=5)]
    [('chat m', 5.0)]
    >>> store.close()
"""

from __future__ import annotations

import bisect
import json
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import chain, compress
from operator import is_not
from pathlib import Path
from typing import Any

from genai_factory.observability import conventions as sc

__all__ = [
    "COLUMN_ATTRIBUTES",
    "LATENCY_BOUNDS_MS",
    "SPAN_COLUMNS",
    "AlertRow",
    "CostRow",
    "SpanRow",
    "TelemetryStore",
    "percentile_from_histogram",
]

# Latency histogram buckets: upper bounds 1.25**i ms (about 12% wide), from 1 ms to ~21 min.
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(1.25**i for i in range(64))
_NS_PER_MINUTE = 60 * 10**9
_MODEL_OPERATIONS = ("chat", "text_completion", "generate_content")

_SCHEMA_TEMPLATE = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spans (
  id INTEGER PRIMARY KEY,
  trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT, is_root INTEGER NOT NULL,
  name TEXT NOT NULL, kind TEXT NOT NULL, service TEXT,
  start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, duration_ms REAL NOT NULL,
  status TEXT NOT NULL, error_type TEXT,
  operation TEXT, provider TEXT, model TEXT, response_model TEXT,
  input_tokens INTEGER, output_tokens INTEGER, ttft_ms REAL, cost_usd REAL,
  request_id TEXT, team_id TEXT, attributes TEXT NOT NULL, events TEXT, trace_key INTEGER
);
CREATE INDEX IF NOT EXISTS spans_roots ON spans(start_ns) WHERE is_root = 1;
CREATE TABLE IF NOT EXISTS cost_records (
  id INTEGER PRIMARY KEY, request_id TEXT NOT NULL, ts_ns INTEGER NOT NULL,
  model TEXT NOT NULL, provider TEXT, org_id TEXT, team_id TEXT, user_id TEXT, key_id TEXT,
  route TEXT, tags TEXT, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
  cached_input_tokens INTEGER NOT NULL, cost_usd TEXT NOT NULL, cache_hit INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS cost_records_ts ON cost_records(ts_ns);
CREATE TABLE IF NOT EXISTS alerts (
  id INTEGER PRIMARY KEY, ts_ns INTEGER NOT NULL, rule TEXT NOT NULL, kind TEXT NOT NULL,
  severity TEXT NOT NULL, scope TEXT NOT NULL, message TEXT NOT NULL,
  value REAL, threshold REAL
);
"""

_ROLLUPS_TEMPLATE = """
CREATE TABLE IF NOT EXISTS call_rollup (
  minute INTEGER NOT NULL, operation TEXT NOT NULL, model TEXT NOT NULL,
  calls INTEGER NOT NULL, errors INTEGER NOT NULL,
  input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL,
  {buckets},
  PRIMARY KEY (minute, operation, model)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_rollup (
  minute INTEGER NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL, outcome TEXT NOT NULL,
  count INTEGER NOT NULL,
  PRIMARY KEY (minute, kind, name, outcome)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS cost_rollup (
  minute INTEGER NOT NULL, team_id TEXT NOT NULL, model TEXT NOT NULL,
  requests INTEGER NOT NULL, cost_usd REAL NOT NULL,
  input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
  PRIMARY KEY (minute, team_id, model)
) WITHOUT ROWID;
"""
_BUCKETS = len(LATENCY_BOUNDS_MS)
_BUCKET_COLUMNS = [f"h{i}" for i in range(_BUCKETS)]
# Latency histograms live in one integer column per bucket, so SQLite sums them in C.
_ROLLUPS = _ROLLUPS_TEMPLATE.replace(
    "{buckets}", ", ".join(f"{c} INTEGER NOT NULL DEFAULT 0" for c in _BUCKET_COLUMNS)
)
# Each rollup exists per minute and per hour (``minute`` floored to the hour): long windows read
# 60 times fewer rows.
_SCHEMA = _SCHEMA_TEMPLATE + _ROLLUPS + _ROLLUPS.replace("_rollup (", "_rollup_hour (")
_HOURLY_FROM_NS = 6 * 3600 * 10**9
_SUM_BUCKETS = ", ".join(f"sum({c})" for c in _BUCKET_COLUMNS)
# Built from our own constant column names only; values are always bound parameters.
_UPSERT_CALLS_HEAD = (
    f"INSERT INTO {{table}} (minute, operation, model, calls, errors, input_tokens,"  # noqa: S608
    f" output_tokens, cost_usd, {', '.join(_BUCKET_COLUMNS)}) VALUES "
)
_UPSERT_CALLS_TAIL = (
    " ON CONFLICT(minute, operation, model) DO UPDATE SET"
    " calls = calls + excluded.calls, errors = errors + excluded.errors,"
    " input_tokens = input_tokens + excluded.input_tokens,"
    " output_tokens = output_tokens + excluded.output_tokens,"
    " cost_usd = cost_usd + excluded.cost_usd, "
    + ", ".join(f"{c} = {c} + excluded.{c}" for c in _BUCKET_COLUMNS)
)
# The values of one span as `write_span_values` takes them, in this order.
SPAN_COLUMNS: tuple[str, ...] = (
    "trace_id", "span_id", "parent_span_id", "is_root", "name", "kind", "service", "start_ns",
    "end_ns", "duration_ms", "status", "error_type", "operation", "provider", "model",
    "response_model", "input_tokens", "output_tokens", "ttft_ms", "cost_usd", "request_id",
    "team_id", "attributes", "events", "trace_key",
)  # fmt: skip
_INSERT_SPANS = f"INSERT INTO spans ({', '.join(SPAN_COLUMNS)}) VALUES "  # noqa: S608
_I_START, _I_DURATION, _I_STATUS, _I_OPERATION, _I_MODEL = (
    SPAN_COLUMNS.index(c) for c in ("start_ns", "duration_ms", "status", "operation", "model")
)
_I_INPUT, _I_OUTPUT, _I_COST = (
    SPAN_COLUMNS.index(c) for c in ("input_tokens", "output_tokens", "cost_usd")
)
# Attributes with a column of their own: (column, attribute, the type the column holds exactly).
# The exporter leaves them out of the attributes JSON when the column holds them exactly, and
# reads merge them back (`SpanRow.all_attributes`, `TelemetryStore.trace`): a model call's JSON
# is less than half as long, and the insert that much cheaper.
COLUMN_ATTRIBUTES: tuple[tuple[str, str, type], ...] = (
    ("error_type", sc.ERROR_TYPE, str),
    ("operation", sc.OPERATION_NAME, str),
    ("provider", sc.PROVIDER_NAME, str),
    ("model", sc.REQUEST_MODEL, str),
    ("response_model", sc.RESPONSE_MODEL, str),
    ("input_tokens", sc.USAGE_INPUT_TOKENS, int),
    ("output_tokens", sc.USAGE_OUTPUT_TOKENS, int),
    ("cost_usd", sc.GF_COST_USD, float),
    ("request_id", sc.GF_REQUEST_ID, str),
    ("team_id", sc.GF_TEAM_ID, str),
)


def _merge_column_attributes(
    attributes: dict[str, Any], column_value: Callable[[str], Any]
) -> dict[str, Any]:
    """``attributes`` (decoded JSON) plus the attributes held by columns."""
    for column, key, _ in COLUMN_ATTRIBUTES:
        value = column_value(column)
        if value is not None and key not in attributes:
            attributes[key] = value
    return attributes


# Trace lookups go through a 60-bit integer taken from the trace id (see _trace_key): an index
# of 32-character texts in random order dirtied a page per span at every commit and cost as
# much as the rest of the insert; an integer key is a fraction of the size.
_INDEX_TRACE_KEY = "CREATE INDEX IF NOT EXISTS spans_trace_key ON spans(trace_key)"

# Bound parameters per statement: 999 is SQLite's historical SQLITE_MAX_VARIABLE_NUMBER, the
# lowest limit any build may have, so a chunk always fits. (Larger statements were tried: binding
# thousands of values holds the GIL in one stretch, which the request thread then waits out.)
_MAX_PARAMS = 999


def _insert_rows(
    conn: sqlite3.Connection,
    head: str,
    tail: str,
    rows: Sequence[Sequence[Any]],
    bound: tuple[bool, ...] | None = None,
) -> None:
    """Insert rows with one multi-row VALUES statement per chunk instead of one step per row.

    Why: `executemany` steps once per row and the sqlite3 module releases and re-takes the GIL
    around every step, so a busy request thread starves the export thread; one statement per
    chunk hands the GIL back once per chunk. Values are bound exactly as before (same Python
    objects as parameters), so the stored types and values do not change. ``bound`` (one flag
    per column, every column when None): the columns that are not bound are written as NULL
    into the statement (see `_insert_spans`).
    """
    if not rows:
        return
    if bound is None:
        ncols = len(rows[0])
        placeholder = "(" + ",".join("?" * ncols) + ")"
    else:
        ncols = sum(bound)
        placeholder = "(" + ",".join("?" if flag else "NULL" for flag in bound) + ")"
    per_chunk = max(1, _MAX_PARAMS // max(1, ncols))
    for start in range(0, len(rows), per_chunk):
        chunk = rows[start : start + per_chunk]
        # Full chunks reuse one SQL text, so the statement cache keeps it prepared.
        sql = head + ",".join([placeholder] * len(chunk)) + tail
        if bound is None:
            values = list(chain.from_iterable(chunk))
        else:
            values = list(chain.from_iterable(compress(row, bound) for row in chunk))
        conn.execute(sql, values)


_NONES = (None,) * len(SPAN_COLUMNS)


def _insert_spans(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Insert span rows (``SPAN_COLUMNS`` order) with their NULLs written into the SQL text.

    Why: the sqlite3 module looks up an adapter for every bound value that is not exactly an
    int, float or str (for None: a registry lookup and two attribute lookups), and a span's row
    holds half a dozen Nones; that cost a fifth of the export. Rows are grouped by which of
    their values are None, and each group goes in through `_insert_rows`.
    """
    groups: dict[tuple[bool, ...], list[Sequence[Any]]] = {}
    for row in rows:
        present = tuple(map(is_not, row, _NONES))
        group = groups.get(present)
        if group is None:
            groups[present] = [row]
        else:
            group.append(row)
    for present, members in groups.items():
        _insert_rows(conn, _INSERT_SPANS, "", members, bound=present)


_SCHEMA_VERSION = "4"


def _trace_key(trace_id: str) -> int:
    """The integer that indexes a trace: its first 15 hex digits (60 bits, a positive int64).

    Only a filter: lookups also match the full id, so a rare shared key costs nothing but a row
    read. Ids that are not hex (hand-written rows) get a stable hash instead.
    """
    try:
        return int(trace_id[:15], 16)
    except ValueError:
        return zlib.crc32(trace_id.encode()) + (1 << 60)


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older version to this schema (idempotent)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(spans)")}
    if "trace_key" not in columns:  # version 3: spans indexed by the trace id text
        conn.execute("ALTER TABLE spans ADD COLUMN trace_key INTEGER")
        conn.create_function("gf_trace_key", 1, _trace_key, deterministic=True)
        conn.execute("UPDATE spans SET trace_key = gf_trace_key(trace_id)")
    conn.execute("DROP INDEX IF EXISTS spans_trace")
    conn.execute(_INDEX_TRACE_KEY)
    conn.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)", (_SCHEMA_VERSION,)
    )


@dataclass(slots=True)
class SpanRow:
    """One finished span, flattened for storage (attributes and events stay as JSON text).

    ``attributes`` need not repeat what a column holds (see ``COLUMN_ATTRIBUTES``):
    :meth:`all_attributes` and the store's reads put the two together.
    """

    trace_id: str
    span_id: str
    parent_span_id: str | None
    is_root: bool
    name: str
    kind: str
    service: str | None
    start_ns: int
    end_ns: int
    status: str
    error_type: str | None = None
    operation: str | None = None
    provider: str | None = None
    model: str | None = None
    response_model: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    ttft_ms: float | None = None
    cost_usd: float | None = None
    request_id: str | None = None
    team_id: str | None = None
    attributes: str = "{}"
    events: str | None = None
    # (kind, name, outcome) triples from span events: cache lookups and guard verdicts.
    signals: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return max(self.end_ns - self.start_ns, 0) / 1e6

    def all_attributes(self) -> dict[str, Any]:
        """The span's attributes: the JSON ones and those held by columns."""
        return _merge_column_attributes(
            json.loads(self.attributes), lambda column: getattr(self, column)
        )

    def values(self) -> tuple[Any, ...]:
        """The row's values in ``SPAN_COLUMNS`` order."""
        return (
            self.trace_id, self.span_id, self.parent_span_id, int(self.is_root), self.name,
            self.kind, self.service, self.start_ns, self.end_ns, self.duration_ms, self.status,
            self.error_type, self.operation, self.provider, self.model, self.response_model,
            self.input_tokens, self.output_tokens, self.ttft_ms, self.cost_usd,
            self.request_id, self.team_id, self.attributes, self.events,
            _trace_key(self.trace_id),
        )  # fmt: skip


@dataclass(slots=True)
class CostRow:
    request_id: str
    ts_ns: int
    model: str
    provider: str | None
    org_id: str | None
    team_id: str | None
    user_id: str | None
    key_id: str | None
    route: str | None
    tags: str
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cost_usd: str
    cache_hit: bool


@dataclass(slots=True)
class AlertRow:
    ts_ns: int
    rule: str
    kind: str
    severity: str
    scope: str
    message: str
    value: float | None = None
    threshold: float | None = None


def _by_hour(minute_rows: dict[tuple[Any, ...], Any]) -> dict[tuple[Any, ...], Any]:
    """Fold per-minute aggregates (key starts with the minute) into per-hour ones."""
    hourly: dict[tuple[Any, ...], Any] = {}
    for key, value in minute_rows.items():
        hour_key = (key[0] // 60 * 60, *key[1:])
        if isinstance(value, list):
            found = hourly.get(hour_key)
            hourly[hour_key] = (
                list(value) if found is None else [a + b for a, b in zip(found, value, strict=True)]
            )
        else:
            hourly[hour_key] = hourly.get(hour_key, 0) + value
    return hourly


def _latency_bucket(ms: float) -> int:
    return min(bisect.bisect_left(LATENCY_BOUNDS_MS, ms), len(LATENCY_BOUNDS_MS) - 1)


def percentile_from_histogram(hist: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) in ms, interpolated geometrically inside its bucket."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(hist):
        count = hist[bucket]
        if seen + count >= rank:
            upper = LATENCY_BOUNDS_MS[bucket]
            lower = LATENCY_BOUNDS_MS[bucket - 1] if bucket > 0 else upper / 1.25
            fraction = (rank - seen) / count if count else 1.0
            return float(lower * (upper / lower) ** fraction)
        seen += count
    return LATENCY_BOUNDS_MS[max(hist)]


class TelemetryStore:
    """SQLite (WAL) storage and queries for spans, rollups, cost records and alerts.

    Args:
        path: the database file (created with its folder).
        retention_s: spans, cost records and rollups older than this are pruned (None: keep).
        busy_timeout_ms: how long a write waits for another process's write lock.
    """

    def __init__(
        self,
        path: str | Path,
        retention_s: float | None = 7 * 24 * 3600,
        busy_timeout_ms: int = 5000,
    ) -> None:
        self.path = Path(path)
        self.retention_s = retention_s
        self.busy_timeout_ms = busy_timeout_ms
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._last_prune = time.monotonic()
        self._closed = False
        writer = self._connect()
        writer.executescript(_SCHEMA)
        writer.execute("BEGIN IMMEDIATE")
        try:
            _migrate(writer)
            writer.execute("COMMIT")
        except BaseException:
            writer.execute("ROLLBACK")
            raise
        self._writer = writer

    def to_params(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "retention_s": self.retention_s,
            "busy_timeout_ms": self.busy_timeout_ms,
        }

    # -- connections --------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.row_factory = sqlite3.Row
        with self._connections_lock:
            self._connections.append(conn)
        return conn

    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError("the telemetry store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = 1")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        """Close every connection (readers in other threads too)."""
        self._closed = True
        with self._connections_lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # -- writes -------------------------------------------------------------------------------

    def write_spans(self, rows: Sequence[SpanRow]) -> int:
        """Store a batch of spans and fold them into the rollups, in one transaction."""
        return self.write_span_values(
            [row.values() for row in rows],
            [(row.start_ns, *signal) for row in rows for signal in row.signals],
        )

    def write_span_values(
        self,
        values: Sequence[Sequence[Any]],
        signals: Iterable[tuple[int, str, str, str]] = (),
    ) -> int:
        """:meth:`write_spans` for spans already flattened into ``SPAN_COLUMNS`` order (the
        exporter's path: no :class:`SpanRow` in between). ``signals``: (start_ns, kind, name,
        outcome) of the batch's cache lookups and guard verdicts."""
        if not values:
            return 0
        calls: dict[tuple[int, str, str], list[Any]] = {}
        for row in values:
            operation = row[_I_OPERATION]
            if operation:
                key = (row[_I_START] // _NS_PER_MINUTE, operation, row[_I_MODEL] or "")
                agg = calls.get(key)
                if agg is None:
                    agg = calls[key] = [0, 0, 0, 0, 0.0] + [0] * _BUCKETS
                agg[0] += 1
                agg[1] += row[_I_STATUS] == "ERROR"
                agg[2] += row[_I_INPUT] or 0
                agg[3] += row[_I_OUTPUT] or 0
                agg[4] += row[_I_COST] or 0.0
                agg[5 + _latency_bucket(row[_I_DURATION])] += 1
        events: dict[tuple[int, str, str, str], int] = {}
        for start_ns, kind, name, outcome in signals:
            event_key = (start_ns // _NS_PER_MINUTE, kind, name, outcome)
            events[event_key] = events.get(event_key, 0) + 1
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                _insert_spans(conn, values)
                for suffix, call_rows, event_rows in (
                    ("", calls, events),
                    ("_hour", _by_hour(calls), _by_hour(events)),
                ):
                    _insert_rows(
                        conn,
                        _UPSERT_CALLS_HEAD.format(table=f"call_rollup{suffix}"),
                        _UPSERT_CALLS_TAIL,
                        [(*key, *agg) for key, agg in call_rows.items()],
                    )
                    _insert_rows(
                        conn,
                        f"INSERT INTO event_rollup{suffix} VALUES ",  # noqa: S608
                        " ON CONFLICT(minute, kind, name, outcome) DO UPDATE SET"
                        " count = count + excluded.count",
                        [(*key, count) for key, count in event_rows.items()],
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._maybe_prune()
        return len(values)

    def write_costs(self, rows: Sequence[CostRow]) -> int:
        """Store cost records and fold them into the per-minute cost rollup."""
        if not rows:
            return 0
        rollup: dict[tuple[int, str, str], list[Any]] = {}
        for row in rows:
            key = (row.ts_ns // _NS_PER_MINUTE, row.team_id or "", row.model)
            agg = rollup.setdefault(key, [0, 0.0, 0, 0])
            agg[0] += 1
            agg[1] += float(row.cost_usd)
            agg[2] += row.input_tokens
            agg[3] += row.output_tokens
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO cost_records (request_id, ts_ns, model, provider, org_id, team_id,"
                    " user_id, key_id, route, tags, input_tokens, output_tokens,"
                    " cached_input_tokens, cost_usd, cache_hit)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (
                            r.request_id, r.ts_ns, r.model, r.provider, r.org_id, r.team_id,
                            r.user_id, r.key_id, r.route, r.tags, r.input_tokens, r.output_tokens,
                            r.cached_input_tokens, r.cost_usd, int(r.cache_hit),
                        )
                        for r in rows
                    ],
                )  # fmt: skip
                for suffix, rows_by_key in (("", rollup), ("_hour", _by_hour(rollup))):
                    conn.executemany(
                        f"INSERT INTO cost_rollup{suffix} VALUES (?,?,?,?,?,?,?)"  # noqa: S608
                        " ON CONFLICT(minute, team_id, model) DO UPDATE SET"
                        " requests = requests + excluded.requests,"
                        " cost_usd = cost_usd + excluded.cost_usd,"
                        " input_tokens = input_tokens + excluded.input_tokens,"
                        " output_tokens = output_tokens + excluded.output_tokens",
                        [(*key, *agg) for key, agg in rows_by_key.items()],
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return len(rows)

    def write_alert(self, row: AlertRow) -> None:
        with self._write_lock:
            self._writer.execute(
                "INSERT INTO alerts (ts_ns, rule, kind, severity, scope, message, value, threshold)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (
                    row.ts_ns,
                    row.rule,
                    row.kind,
                    row.severity,
                    row.scope,
                    row.message,
                    row.value,
                    row.threshold,
                ),
            )

    def _maybe_prune(self) -> None:
        if self.retention_s is None or time.monotonic() - self._last_prune < 60:
            return
        self._last_prune = time.monotonic()
        self.prune(time.time_ns() - int(self.retention_s * 1e9))

    def prune(self, older_than_ns: int) -> int:
        """Delete spans, cost records, rollups and alerts older than ``older_than_ns``."""
        minute = older_than_ns // _NS_PER_MINUTE
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute(
                    "DELETE FROM spans WHERE start_ns < ?", (older_than_ns,)
                ).rowcount
                conn.execute("DELETE FROM cost_records WHERE ts_ns < ?", (older_than_ns,))
                conn.execute("DELETE FROM alerts WHERE ts_ns < ?", (older_than_ns,))
                for table in ("call_rollup", "event_rollup", "cost_rollup"):
                    conn.execute(f"DELETE FROM {table} WHERE minute < ?", (minute,))  # noqa: S608
                    # an hour row covers [hour, hour + 60): drop it once all of it is older
                    conn.execute(
                        f"DELETE FROM {table}_hour WHERE minute + 60 <= ?",  # noqa: S608
                        (minute,),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return int(deleted)

    # -- reads --------------------------------------------------------------------------------

    def count_spans(self) -> int:
        return int(self._reader().execute("SELECT count(*) FROM spans").fetchone()[0])

    def recent_requests(
        self, *, limit: int = 50, before_ns: int | None = None
    ) -> list[dict[str, Any]]:
        """The newest root spans (one per request), with their trace's model, tokens and cost."""
        conn = self._reader()
        query = (
            "SELECT trace_id, span_id, name, kind, service, start_ns, duration_ms, status,"
            " error_type, operation, model, input_tokens, output_tokens, cost_usd, request_id,"
            " team_id FROM spans WHERE is_root = 1"
        )
        params: list[Any] = []
        if before_ns is not None:
            query += " AND start_ns < ?"
            params.append(before_ns)
        query += " ORDER BY start_ns DESC LIMIT ?"
        params.append(max(1, min(limit, 500)))
        roots = [dict(row) for row in conn.execute(query, params)]
        if not roots:
            return roots
        ids = [root["trace_id"] for root in roots]
        marks = ",".join("?" * len(ids))
        # Only "?" placeholders are interpolated; the values travel as parameters.
        per_trace = (
            "SELECT trace_id, count(*) AS spans, max(model) AS model,"  # noqa: S608
            " sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,"
            " sum(cost_usd) AS cost_usd, max(team_id) AS team_id, max(request_id) AS request_id,"
            " sum(status = 'ERROR') AS errors, max(error_type) AS any_error_type"
            f" FROM spans WHERE trace_key IN ({marks}) AND trace_id IN ({marks})"
            " GROUP BY trace_id"
        )
        keys = [_trace_key(trace_id) for trace_id in ids]
        totals = {row["trace_id"]: row for row in conn.execute(per_trace, [*keys, *ids])}
        for root in roots:
            total = totals.get(root["trace_id"])
            if total is not None:
                root["spans"] = total["spans"]
                # A request failed if any of its spans did (the root may have handled it).
                root["errors"] = total["errors"]
                root["error_type"] = root["error_type"] or total["any_error_type"]
                for key in (
                    "model",
                    "input_tokens",
                    "output_tokens",
                    "cost_usd",
                    "team_id",
                    "request_id",
                ):
                    if root[key] is None:
                        root[key] = total[key]
        return roots

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """Every stored span of one trace, oldest first, attributes and events decoded."""
        rows = self._reader().execute(
            "SELECT trace_id, span_id, parent_span_id, name, kind, service, start_ns, end_ns,"
            " duration_ms, status, error_type, operation, provider, model, response_model,"
            " input_tokens, output_tokens, ttft_ms, cost_usd, request_id, team_id, attributes,"
            " events FROM spans"
            " WHERE trace_key = ? AND trace_id = ? ORDER BY start_ns, id LIMIT 5000",
            (_trace_key(trace_id), trace_id),
        )
        spans = []
        for row in rows:
            span = dict(row)
            span["attributes"] = _merge_column_attributes(json.loads(span["attributes"]), span.get)
            span["events"] = json.loads(span["events"]) if span["events"] else []
            spans.append(span)
        return spans

    @staticmethod
    def _resolution(since_ns: int, step_s: int | None, until_ns: int | None) -> tuple[str, int]:
        """Which rollup to read (``""`` per minute, ``"_hour"``) and the first minute to include.

        Windows of 6 h or more that need no finer steps read the hourly rollup; they then start
        at the hour containing ``since_ns`` (up to 59 minutes more than asked).
        """
        minute = since_ns // _NS_PER_MINUTE
        hourly = (
            until_ns is None
            and time.time_ns() - since_ns >= _HOURLY_FROM_NS
            and (step_s is None or step_s % 3600 == 0)
        )
        return ("_hour", minute // 60 * 60) if hourly else ("", minute)

    def _call_filter(
        self,
        since_ns: int,
        operations: Iterable[str] | None,
        until_ns: int | None,
        first_minute: int | None = None,
    ) -> tuple[str, list[Any]]:
        where = "minute >= ?"
        params: list[Any] = [since_ns // _NS_PER_MINUTE if first_minute is None else first_minute]
        if until_ns is not None:
            where += " AND minute < ?"
            params.append(until_ns // _NS_PER_MINUTE)
        if operations is not None:
            ops = list(operations)
            where += f" AND operation IN ({','.join('?' * len(ops))})"
            params.extend(ops)
        return where, params

    def latency(
        self,
        *,
        since_ns: int,
        step_s: int = 60,
        operations: Sequence[str] | None = _MODEL_OPERATIONS,
    ) -> dict[str, Any]:
        """Latency percentiles (ms) per model and over time, from the rollup histograms."""
        step = max(1, step_s // 60)
        suffix, first = self._resolution(since_ns, step_s, None)
        where, params = self._call_filter(since_ns, operations, None, first)
        conn = self._reader()
        by_model = conn.execute(
            f"SELECT model, {_SUM_BUCKETS} FROM call_rollup{suffix} WHERE {where}"  # noqa: S608
            " GROUP BY model ORDER BY model",
            params,
        ).fetchall()
        by_time = conn.execute(
            f"SELECT (minute / ?) * ? AS t, sum(calls), sum(errors), {_SUM_BUCKETS}"  # noqa: S608
            f" FROM call_rollup{suffix} WHERE {where} GROUP BY t ORDER BY t",
            [step, step, *params],
        ).fetchall()

        def summary(counts: Sequence[int]) -> dict[str, float | int | None]:
            hist = {i: int(c) for i, c in enumerate(counts) if c}
            return {
                "count": sum(hist.values()),
                "p50": percentile_from_histogram(hist, 0.50),
                "p90": percentile_from_histogram(hist, 0.90),
                "p95": percentile_from_histogram(hist, 0.95),
                "p99": percentile_from_histogram(hist, 0.99),
            }

        return {
            "by_model": {(row[0] or "(none)"): summary(row[1:]) for row in by_model},
            "series": [
                {"t": row[0] * 60, **summary(row[3:]), "calls": row[1], "errors": row[2]}
                for row in by_time
            ],
        }

    def cost(
        self,
        *,
        since_ns: int,
        step_s: int = 60,
        group_by: str = "team",
        until_ns: int | None = None,
    ) -> dict[str, Any]:
        """Spend over time grouped by ``team`` or ``model``, from the cost rollup."""
        if group_by not in {"team", "model"}:
            raise ValueError("group_by must be 'team' or 'model'")
        column = "team_id" if group_by == "team" else "model"
        step = max(1, step_s // 60)
        until_minute = (until_ns // _NS_PER_MINUTE) if until_ns is not None else 2**62
        suffix, first = self._resolution(since_ns, step_s, until_ns)
        rows = self._reader().execute(
            f"SELECT (minute / ?) * ? AS t, {column} AS grp, sum(cost_usd) AS cost,"  # noqa: S608
            " sum(requests) AS requests, sum(input_tokens) AS input_tokens,"
            f" sum(output_tokens) AS output_tokens FROM cost_rollup{suffix}"
            f" WHERE minute >= ? AND minute < ? GROUP BY t, {column} ORDER BY t",
            (step, step, first, until_minute),
        )
        series: dict[int, dict[str, float]] = {}
        totals: dict[str, dict[str, float]] = {}
        for row in rows:
            name = row["grp"] or "(none)"
            series.setdefault(row["t"] * 60, {})[name] = row["cost"]
            total = totals.setdefault(name, {"cost_usd": 0.0, "requests": 0, "tokens": 0})
            total["cost_usd"] += row["cost"]
            total["requests"] += row["requests"]
            total["tokens"] += row["input_tokens"] + row["output_tokens"]
        return {
            "group_by": group_by,
            "groups": sorted(totals, key=lambda g: -totals[g]["cost_usd"]),
            "series": [{"t": t, "values": values} for t, values in sorted(series.items())],
            "totals": totals,
        }

    def signals(self, *, kind: str, since_ns: int) -> list[dict[str, Any]]:
        """Cache lookups (kind ``cache``) or guard verdicts (``guard``) counted per minute
        (per hour for windows of 6 h or more)."""
        suffix, first = self._resolution(since_ns, None, None)
        rows = self._reader().execute(
            f"SELECT minute * 60 AS t, name, outcome, count FROM event_rollup{suffix}"  # noqa: S608
            " WHERE kind = ? AND minute >= ? ORDER BY minute",
            (kind, first),
        )
        return [dict(row) for row in rows]

    def summary(self, *, since_ns: int, until_ns: int | None = None) -> dict[str, Any]:
        """Model calls, errors, tokens and span-attributed cost in ``[since_ns, until_ns)``."""
        suffix, first = self._resolution(since_ns, None, until_ns)
        where, params = self._call_filter(since_ns, _MODEL_OPERATIONS, until_ns, first)
        row = (
            self._reader()
            .execute(
                "SELECT coalesce(sum(calls), 0), coalesce(sum(errors), 0),"  # noqa: S608
                " coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0),"
                f" coalesce(sum(cost_usd), 0.0) FROM call_rollup{suffix} WHERE {where}",
                params,
            )
            .fetchone()
        )
        calls, errors = int(row[0]), int(row[1])
        return {
            "model_calls": calls,
            "errors": errors,
            "error_rate": errors / calls if calls else 0.0,
            "input_tokens": int(row[2]),
            "output_tokens": int(row[3]),
            "span_cost_usd": float(row[4]),
        }

    def cost_total(self, dimension: str, value: str | None, *, since_ns: int) -> Decimal:
        """Exact spend (Decimal) of one attribution scope since ``since_ns``."""
        columns = {"org": "org_id", "team": "team_id", "user": "user_id", "key": "key_id",
                   "model": "model", "route": "route"}  # fmt: skip
        query = "SELECT cost_usd FROM cost_records WHERE ts_ns >= ?"
        params: list[Any] = [since_ns]
        if dimension == "feature":
            query += " AND json_extract(tags, '$.feature') = ?"
            params.append(value)
        elif dimension != "all":
            query += f" AND {columns[dimension]} = ?"
            params.append(value)
        rows = self._reader().execute(query, params)
        return sum((Decimal(row[0]) for row in rows), Decimal(0))

    def alerts(self, *, limit: int = 100) -> list[dict[str, Any]]:
        rows = self._reader().execute(
            "SELECT ts_ns, rule, kind, severity, scope, message, value, threshold FROM alerts"
            " ORDER BY ts_ns DESC LIMIT ?",
            (max(1, min(limit, 1000)),),
        )
        return [dict(row) for row in rows]

    def models_seen(self, *, since_ns: int) -> list[str]:
        rows = self._reader().execute(
            "SELECT DISTINCT model FROM call_rollup WHERE minute >= ? AND model != ''",
            (since_ns // _NS_PER_MINUTE,),
        )
        return [row[0] for row in rows]
