"""L3: persistent entries in SQLite (default, a file) or PostgreSQL.

Vectors are stored as raw float32 bytes (``BLOB`` / ``bytea``) and searched in process after a
warm start: the loopback PostgreSQL 15 has no pgvector, so nothing here needs it. Equality
filters of a purge run in SQL; tags and dates are checked in Python.

Example::

    store = SQLiteStore(path=".gf-data/cache.db")
    await store.put(entry)
    async for entry in store.scan(limit=1000):   # most recently used first
        ...
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np

from genai_factory.cache.entry import CacheEntry, InvalidationFilter

__all__ = ["PostgresStore", "SQLiteStore"]

_COLUMNS = (
    "key, tenant, namespace, model, prompt_version, created_at, last_access, expires_at, "
    "embedding_model_id, record, vector, answer_vector"
)


def _row(entry: CacheEntry) -> tuple[Any, ...]:
    record = entry.to_record()
    record["vector"] = None
    record["answer_vector"] = None
    scope = entry.scope
    return (
        entry.key,
        scope.tenant,
        scope.namespace,
        scope.model,
        scope.prompt_version,
        entry.created_at,
        entry.last_access,
        entry.expires_at,
        entry.embedding_model_id,
        json.dumps(record, separators=(",", ":")),
        None if entry.vector is None else np.asarray(entry.vector, np.float32).tobytes(),
        None
        if entry.answer_vector is None
        else np.asarray(entry.answer_vector, np.float32).tobytes(),
    )


def _entry(record: str, vector: bytes | None, answer_vector: bytes | None) -> CacheEntry:
    entry = CacheEntry.from_record(json.loads(record))
    if vector is not None:
        entry.vector = np.frombuffer(bytes(vector), dtype=np.float32).copy()
    if answer_vector is not None:
        entry.answer_vector = np.frombuffer(bytes(answer_vector), dtype=np.float32).copy()
    return entry


def _pushdown(where: InvalidationFilter, placeholder: str) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    values: list[Any] = []
    for column in ("tenant", "namespace", "model", "prompt_version"):
        value = getattr(where, column)
        if value is not None:
            clauses.append(f"{column} = {placeholder}")
            values.append(value)
    if where.created_before is not None:
        clauses.append(f"created_at < {placeholder}")
        values.append(where.created_before)
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", values


class SQLiteStore:
    """L3 in one SQLite file; calls run in a worker thread so the event loop never blocks."""

    def __init__(
        self, path: str = ".gf-data/semantic-cache.db", table: str = "cache_entries"
    ) -> None:
        if not table.isidentifier():
            raise ValueError(f"table name {table!r} is not an identifier")
        self.path = path
        self.table = table
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, tenant TEXT NOT NULL, "
            "namespace TEXT NOT NULL, model TEXT NOT NULL, prompt_version TEXT NOT NULL, "
            "created_at REAL NOT NULL, last_access REAL NOT NULL, expires_at REAL, "
            "embedding_model_id TEXT NOT NULL, record TEXT NOT NULL, vector BLOB, answer_vector BLOB)"
        )
        self._conn.execute(
            f"CREATE INDEX IF NOT EXISTS {table}_recent ON {table} (last_access DESC)"
        )

    def _run(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    async def get(self, key: str) -> CacheEntry | None:
        rows = await asyncio.to_thread(
            self._run,
            f"SELECT record, vector, answer_vector FROM {self.table} WHERE key = ? "  # noqa: S608 (table is a checked identifier)
            "AND (expires_at IS NULL OR expires_at > ?)",
            (key, time.time()),
        )
        return _entry(*rows[0]) if rows else None

    async def put(self, entry: CacheEntry) -> None:
        await asyncio.to_thread(
            self._run,
            f"INSERT OR REPLACE INTO {self.table} ({_COLUMNS}) VALUES ({', '.join('?' * 12)})",  # noqa: S608 (table is a checked identifier)
            _row(entry),
        )

    async def delete(self, keys: list[str]) -> int:
        deleted = 0
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            rows = await asyncio.to_thread(
                self._run,
                f"DELETE FROM {self.table} WHERE key IN ({', '.join('?' * len(batch))}) RETURNING key",  # noqa: S608 (table is a checked identifier)
                batch,
            )
            deleted += len(rows)
        return deleted

    async def scan(self, limit: int | None = None) -> AsyncIterator[CacheEntry]:
        rows = await asyncio.to_thread(
            self._run,
            f"SELECT record, vector, answer_vector FROM {self.table} "  # noqa: S608 (table is a checked identifier)
            "WHERE expires_at IS NULL OR expires_at > ? ORDER BY last_access DESC LIMIT ?",
            (time.time(), -1 if limit is None else limit),
        )
        for row in rows:
            yield _entry(*row)

    async def purge(self, where: InvalidationFilter) -> list[str]:
        clause, values = _pushdown(where, "?")
        rows = await asyncio.to_thread(
            self._run,
            f"SELECT record, vector, answer_vector FROM {self.table}{clause}",  # noqa: S608 (table is a checked identifier)
            values,
        )
        doomed = [e.key for e in (_entry(*row) for row in rows) if where.matches(e)]
        await self.delete(doomed)
        return doomed

    async def count(self) -> int:
        rows = await asyncio.to_thread(self._run, f"SELECT COUNT(*) FROM {self.table}")  # noqa: S608 (table is a checked identifier)
        return int(rows[0][0])

    async def close(self) -> None:
        with self._lock:
            self._conn.close()


class PostgresStore:
    """L3 in PostgreSQL through psycopg (async). Vectors are ``bytea``, searched in process."""

    def __init__(self, dsn: str, table: str = "cache_entries") -> None:
        if not table.isidentifier():
            raise ValueError(f"table name {table!r} is not an identifier")
        self.dsn = dsn
        self.table = table
        self._conn: Any = None
        self._lock = asyncio.Lock()

    async def _connection(self) -> Any:
        if self._conn is None:
            import psycopg

            self._conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            await self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (key TEXT PRIMARY KEY, "
                "tenant TEXT NOT NULL, namespace TEXT NOT NULL, model TEXT NOT NULL, "
                "prompt_version TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
                "last_access DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION, "
                "embedding_model_id TEXT NOT NULL, record TEXT NOT NULL, vector BYTEA, "
                "answer_vector BYTEA)"
            )
            await self._conn.execute(
                f"CREATE INDEX IF NOT EXISTS {self.table}_recent ON {self.table} (last_access DESC)"
            )
        return self._conn

    async def _run(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        async with self._lock:
            conn = await self._connection()
            cursor = await conn.execute(sql, params)
            if cursor.description is None:
                return []
            return list(await cursor.fetchall())

    async def get(self, key: str) -> CacheEntry | None:
        rows = await self._run(
            f"SELECT record, vector, answer_vector FROM {self.table} WHERE key = %s "  # noqa: S608 (table is a checked identifier)
            "AND (expires_at IS NULL OR expires_at > %s)",
            (key, time.time()),
        )
        return _entry(*rows[0]) if rows else None

    async def put(self, entry: CacheEntry) -> None:
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS.split(", ")[1:])
        await self._run(
            f"INSERT INTO {self.table} ({_COLUMNS}) VALUES ({', '.join(['%s'] * 12)}) "  # noqa: S608 (table is a checked identifier)
            f"ON CONFLICT (key) DO UPDATE SET {updates}",
            _row(entry),
        )

    async def delete(self, keys: list[str]) -> int:
        if not keys:
            return 0
        rows = await self._run(
            f"DELETE FROM {self.table} WHERE key = ANY(%s) RETURNING key",  # noqa: S608 (table is a checked identifier)
            (list(keys),),
        )
        return len(rows)

    async def scan(self, limit: int | None = None) -> AsyncIterator[CacheEntry]:
        rows = await self._run(
            f"SELECT record, vector, answer_vector FROM {self.table} "  # noqa: S608 (table is a checked identifier)
            "WHERE expires_at IS NULL OR expires_at > %s ORDER BY last_access DESC LIMIT %s",
            (time.time(), limit),
        )
        for row in rows:
            yield _entry(*row)

    async def purge(self, where: InvalidationFilter) -> list[str]:
        clause, values = _pushdown(where, "%s")
        rows = await self._run(
            f"SELECT record, vector, answer_vector FROM {self.table}{clause}",  # noqa: S608 (table is a checked identifier)
            values,
        )
        doomed = [e.key for e in (_entry(*row) for row in rows) if where.matches(e)]
        await self.delete(doomed)
        return doomed

    async def count(self) -> int:
        rows = await self._run(f"SELECT COUNT(*) FROM {self.table}")  # noqa: S608 (table is a checked identifier)
        return int(rows[0][0])

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None
