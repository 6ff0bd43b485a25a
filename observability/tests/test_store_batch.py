"""Batched span writes (one multi-row INSERT per chunk) store exactly what row-by-row writes did."""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genai_factory.observability import store as store_module
from genai_factory.observability.store import SpanRow, TelemetryStore

pytestmark = pytest.mark.unit

_TABLES = (
    "spans",
    "call_rollup",
    "call_rollup_hour",
    "event_rollup",
    "event_rollup_hour",
)
_INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
_TEXT = st.text(max_size=12)  # any unicode, incl. NUL and astral characters
_FLOAT = st.floats(allow_nan=False, allow_infinity=False)


def _row_by_row(
    conn: sqlite3.Connection, head: str, tail: str, rows: Sequence[Sequence[Any]]
) -> None:
    """The previous write path: one `executemany` step per row."""
    if rows:
        conn.executemany(head + "(" + ",".join("?" * len(rows[0])) + ")" + tail, rows)


@st.composite
def span_rows(draw: st.DrawFn) -> list[SpanRow]:
    count = draw(st.integers(min_value=1, max_value=100))  # crosses the 41-row chunk size
    rows = []
    for i in range(count):
        start = draw(st.integers(min_value=0, max_value=10**13)) * 1000
        rows.append(
            SpanRow(
                trace_id=draw(_TEXT),
                span_id=f"{i:016x}",
                parent_span_id=draw(st.none() | _TEXT),
                is_root=draw(st.booleans()),
                name=draw(_TEXT),
                kind=draw(st.sampled_from(["CLIENT", "INTERNAL", "SERVER"])),
                service=draw(st.none() | _TEXT),
                start_ns=start,
                end_ns=start + draw(st.integers(min_value=0, max_value=10**12)),
                status=draw(st.sampled_from(["UNSET", "OK", "ERROR"])),
                error_type=draw(st.none() | _TEXT),
                operation=draw(st.none() | st.sampled_from(["chat", "embeddings", "é🚀"])),
                provider=draw(st.none() | _TEXT),
                model=draw(st.none() | st.sampled_from(["m", "ü-model", ""])),
                response_model=draw(st.none() | _TEXT),
                input_tokens=draw(st.none() | st.integers(min_value=0, max_value=2**40)),
                output_tokens=draw(st.none() | st.integers(min_value=0, max_value=2**40)),
                ttft_ms=draw(st.none() | _FLOAT),
                cost_usd=draw(st.none() | st.floats(min_value=0, max_value=1e6)),
                request_id=draw(st.none() | _TEXT),
                team_id=draw(st.none() | _TEXT),
                attributes=draw(_TEXT),
                events=draw(st.none() | _TEXT),
                signals=draw(
                    st.lists(st.tuples(_TEXT, _TEXT, st.sampled_from(["hit", "miss"])), max_size=3)
                ),
            )
        )
    # Large ints reach the INTEGER columns too (tokens are summed in the rollups, so they stay
    # bounded above; start/end are bounded by the minute arithmetic).
    if draw(st.booleans()):
        rows[0].input_tokens = draw(_INT64.filter(lambda v: abs(v) < 2**62))
    return rows


def _dump(path: Path) -> dict[str, list[list[tuple[str, str]]]]:
    """Every row of every written table, each value with its Python (hence SQLite) type."""
    conn = sqlite3.connect(path)
    try:
        return {
            # Rollups are WITHOUT ROWID tables: sort in Python for a stable order.
            table: sorted(
                # Spans go in grouped by which values are None: their ids may differ.
                [(type(v).__name__, repr(v)) for v in row[table == "spans" :]]
                for row in conn.execute(f"SELECT * FROM {table}")  # noqa: S608
            )
            for table in _TABLES
        }
    finally:
        conn.close()


def _spans_row_by_row(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> None:
    """The previous span insert: every value bound, None included."""
    _row_by_row(conn, store_module._INSERT_SPANS, "", rows)


def _write(path: Path, batches: list[list[SpanRow]]) -> None:
    store = TelemetryStore(path)
    try:
        for batch in batches:
            store.write_spans(batch)
    finally:
        store.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(span_rows(), min_size=1, max_size=2))
def test_batched_inserts_store_exactly_what_row_by_row_inserts_did(
    batches: list[list[SpanRow]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        batched, reference = Path(tmp) / "batched.db", Path(tmp) / "rows.db"
        _write(batched, batches)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store_module, "_insert_rows", _row_by_row)
            mp.setattr(store_module, "_insert_spans", _spans_row_by_row)
            _write(reference, batches)
        assert _dump(batched) == _dump(reference)
        assert len(_dump(batched)["spans"]) == sum(len(b) for b in batches)


def test_a_batch_is_written_with_one_statement_per_chunk(tmp_path: Path) -> None:
    store = TelemetryStore(tmp_path / "t.db")
    statements: list[str] = []
    store._writer.set_trace_callback(statements.append)
    rows = [
        SpanRow(
            trace_id="a" * 32, span_id=f"{i:016x}", parent_span_id=None, is_root=True,
            name="chat m", kind="CLIENT", service="s", start_ns=i * 10**6,
            end_ns=i * 10**6 + 5, status="UNSET", operation="chat", model="m",
        )
        for i in range(100)
    ]  # fmt: skip
    assert store.write_spans(rows) == 100
    span_inserts = [s for s in statements if s.startswith("INSERT INTO spans")]
    # NULLs are written into the statement, so only the other values count against the limit
    bound = sum(value is not None for value in rows[0].values())
    assert 10 < bound < 25
    per_chunk = 999 // bound
    assert len(span_inserts) == -(-100 // per_chunk)  # 2 statements, not 100 steps
    assert all("NULL" in statement for statement in span_inserts)
    assert store.count_spans() == 100
    store.close()
