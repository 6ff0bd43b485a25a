"""The audit log: append-only and tamper-evident, in SQLite (default) or PostgreSQL.

Every record carries the hash of the one before it: ``hash = SHA-256(prev_hash | seq | time |
event)`` (an HMAC when a ``key`` is set, so nobody without the key can re-chain edited records).
:meth:`AuditLog.verify` walks the chain and reports any edited, inserted, reordered or deleted
record by sequence number. Appends take a write lock (SQLite ``BEGIN IMMEDIATE``, a PostgreSQL
advisory lock), so several processes can share one log. SQLite runs in WAL mode with full sync:
a committed record survives ``kill -9``.

Records hold what a guard decided and why (rule ids, categories, scores, a hash of the text),
never the text itself.

Example:
    >>> import asyncio, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "audit.db")
    >>> log = AuditLog(f"sqlite:///{path}")
    >>> record = asyncio.run(log.append({"decision": "block", "rules": ["heuristic.override"]}))
    >>> record.seq, len(record.hash)
    (1, 64)
    >>> asyncio.run(log.verify()).ok
    True
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import sqlite3
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from genai_factory.shared.storage import connect_durable_sqlite

__all__ = ["GENESIS", "AuditLog", "AuditRecord", "VerifyReport"]

GENESIS = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditRecord:
    seq: int
    ts: str
    event: str  # canonical JSON
    prev_hash: str
    hash: str

    def data(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.event)
        return parsed


@dataclass(slots=True)
class VerifyReport:
    ok: bool
    checked: int
    problems: list[str] = field(default_factory=list)
    head: str = GENESIS


def _canonical(event: Mapping[str, Any]) -> str:
    return json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


class AuditLog:
    """Hash-chained audit records. ``url``: ``sqlite:///path.db`` or ``postgresql://...``
    (``${VAR}`` parts are read from the environment).

    ``key`` turns the chain hash into an HMAC (keep it outside the database); ``table`` names
    the table (created on first use).
    """

    def __init__(
        self,
        url: str = "sqlite:///guardrails-audit.db",
        key: str | None = None,
        table: str = "guard_audit",
    ) -> None:
        if not table.isidentifier():
            raise ValueError("table must be a plain identifier")
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("url must be sqlite:///PATH or postgresql://...")
        self.url = url
        # "${VAR}" in the URL comes from the environment, so passwords stay out of config files
        self._url = os.path.expandvars(url)
        self.key = key
        self.table = table
        # ``table`` is checked to be a plain identifier above, so formatting it in is safe
        columns = "seq, ts, event, prev_hash, hash"
        self._sql_last = f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1"  # noqa: S608
        self._sql_insert = f"INSERT INTO {table} ({columns}) VALUES (?, ?, ?, ?, ?)"  # noqa: S608
        self._sql_range = f"SELECT {columns} FROM {table} WHERE seq > ? ORDER BY seq LIMIT ?"  # noqa: S608
        self._sqlite_lock = threading.Lock()
        self._pg_lock = asyncio.Lock()
        self._pg: Any = None
        self._ready = False

    def to_params(self) -> dict[str, object]:
        # the key is a secret: it is configured, never dumped
        return {"url": self.url, "table": self.table}

    @property
    def is_postgres(self) -> bool:
        return self._url.startswith(("postgresql://", "postgres://"))

    def chain_hash(self, prev_hash: str, seq: int, ts: str, event: str) -> str:
        payload = f"{prev_hash}|{seq}|{ts}|{event}".encode("utf-8", "surrogatepass")
        if self.key:
            return hmac.new(self.key.encode(), payload, hashlib.sha256).hexdigest()
        return hashlib.sha256(payload).hexdigest()

    # ---------------------------------------------------------------------------------- SQLite

    def _sqlite_path(self) -> str:
        return self._url.removeprefix("sqlite:///")

    def _sqlite_connect(self) -> sqlite3.Connection:
        conn = connect_durable_sqlite(self._sqlite_path(), busy_timeout_s=30.0)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL,"
            " event TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
        )
        return conn

    def _sqlite_append(self, event: str, ts: str) -> AuditRecord:
        with self._sqlite_lock:
            conn = self._sqlite_connect()
            try:
                conn.execute("BEGIN IMMEDIATE")
                row = conn.execute(self._sql_last).fetchone()
                seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
                digest = self.chain_hash(prev, seq, ts, event)
                conn.execute(self._sql_insert, (seq, ts, event, prev, digest))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            finally:
                conn.close()
        return AuditRecord(seq, ts, event, prev, digest)

    def _sqlite_records(self, after: int, limit: int) -> list[AuditRecord]:
        conn = self._sqlite_connect()
        try:
            rows = conn.execute(self._sql_range, (after, limit)).fetchall()
        finally:
            conn.close()
        return [AuditRecord(*row) for row in rows]

    # ------------------------------------------------------------------------------ PostgreSQL

    async def _pg_conn(self) -> Any:
        import psycopg

        if self._pg is None or self._pg.closed:
            self._pg = await psycopg.AsyncConnection.connect(self._url, autocommit=True)
            self._ready = False
        if not self._ready:
            await self._pg.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (seq BIGINT PRIMARY KEY, ts TEXT NOT NULL,"
                " event TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
            )
            self._ready = True
        return self._pg

    async def _pg_append(self, event: str, ts: str) -> AuditRecord:
        async with self._pg_lock:
            conn = await self._pg_conn()
            async with conn.transaction():
                # one writer at a time across every process sharing the table
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.table,))
                cursor = await conn.execute(self._sql_last)
                row = await cursor.fetchone()
                seq, prev = (int(row[0]) + 1, str(row[1])) if row else (1, GENESIS)
                digest = self.chain_hash(prev, seq, ts, event)
                await conn.execute(
                    self._sql_insert.replace("?", "%s"), (seq, ts, event, prev, digest)
                )
        return AuditRecord(seq, ts, event, prev, digest)

    async def _pg_records(self, after: int, limit: int) -> list[AuditRecord]:
        async with self._pg_lock:
            conn = await self._pg_conn()
            cursor = await conn.execute(self._sql_range.replace("?", "%s"), (after, limit))
            rows = await cursor.fetchall()
        return [AuditRecord(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]

    # ---------------------------------------------------------------------------------- public

    async def append(self, event: Mapping[str, Any]) -> AuditRecord:
        """Add one record at the end of the chain."""
        canonical = _canonical(event)
        ts = datetime.now(UTC).isoformat(timespec="microseconds")
        if self.is_postgres:
            return await self._pg_append(canonical, ts)
        return await asyncio.to_thread(self._sqlite_append, canonical, ts)

    async def records(self, after: int = 0, limit: int = 1000) -> list[AuditRecord]:
        """Records with ``seq > after``, in order, at most ``limit``."""
        if self.is_postgres:
            return await self._pg_records(after, limit)
        return await asyncio.to_thread(self._sqlite_records, after, limit)

    async def verify(self, batch: int = 5000) -> VerifyReport:
        """Walk the whole chain; every broken link is a problem naming its sequence number."""
        report = VerifyReport(ok=True, checked=0)
        expected_prev, expected_seq, after = GENESIS, 1, 0
        while True:
            rows = await self.records(after=after, limit=batch)
            if not rows:
                break
            for record in rows:
                if record.seq != expected_seq:
                    report.problems.append(
                        f"seq {record.seq}: expected seq {expected_seq} (records deleted or inserted)"
                    )
                if record.prev_hash != expected_prev:
                    report.problems.append(
                        f"seq {record.seq}: prev_hash does not match the previous record's hash"
                    )
                if (
                    self.chain_hash(record.prev_hash, record.seq, record.ts, record.event)
                    != record.hash
                ):
                    report.problems.append(f"seq {record.seq}: hash mismatch (record edited)")
                expected_prev, expected_seq = record.hash, record.seq + 1
                report.checked += 1
            after = rows[-1].seq
        report.ok = not report.problems
        report.head = expected_prev
        return report

    async def close(self) -> None:
        if self._pg is not None and not self._pg.closed:
            await self._pg.close()
        self._pg = None
