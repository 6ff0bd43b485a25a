"""Where API key records live: SQLite by default (WAL, fsync on commit), PostgreSQL for real.

A record holds a key's public id, its owner, roles, scopes and lifetime, and the keyed hash of the
key (HMAC-SHA256 under a server secret): never the key itself. Both stores speak the same
:class:`APIKeyStore` protocol; the SQLite one runs its blocking calls in a worker thread so the
event loop never waits on the disk.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from genai_factory.security.keystore import APIKeyRecord, SQLiteAPIKeyStore
    >>> async def demo() -> str | None:
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         store = SQLiteAPIKeyStore(str(pathlib.Path(tmp) / "keys.db"))
    ...         await store.insert(APIKeyRecord(key_id="0123abcd", key_hash="00" * 32,
    ...                                         name="demo", subject="user:alice", created_at=0.0))
    ...         record = await store.get("0123abcd")
    ...         await store.close()
    ...         return record.subject if record else None
    >>> asyncio.run(demo())
    'user:alice'
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar, runtime_checkable

from genai_factory.shared.errors import Conflict
from genai_factory.shared.storage import connect_durable_sqlite

__all__ = [
    "APIKeyRecord",
    "APIKeyStore",
    "PostgresAPIKeyStore",
    "SQLiteAPIKeyStore",
    "open_key_store",
]

T = TypeVar("T")

_COLUMNS = (
    "key_id",
    "key_hash",
    "name",
    "subject",
    "org_id",
    "team_id",
    "user_id",
    "roles",
    "scopes",
    "created_at",
    "expires_at",
    "revoked_at",
    "replaced_by",
)


@dataclass(frozen=True, slots=True)
class APIKeyRecord:
    """One API key as stored: its hash, owner, permissions and lifetime (epoch seconds)."""

    key_id: str
    key_hash: str = field(repr=False)
    name: str
    subject: str
    created_at: float
    org_id: str | None = None
    team_id: str | None = None
    user_id: str | None = None
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] = ()
    expires_at: float | None = None
    revoked_at: float | None = None
    replaced_by: str | None = None

    def status(self, now: float) -> str:
        """``active``, ``revoked`` or ``expired`` at time ``now``."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def with_changes(self, **changes: Any) -> APIKeyRecord:
        return replace(self, **changes)

    def _row(self) -> tuple[Any, ...]:
        return (
            self.key_id,
            self.key_hash,
            self.name,
            self.subject,
            self.org_id,
            self.team_id,
            self.user_id,
            json.dumps(list(self.roles)),
            json.dumps(list(self.scopes)),
            self.created_at,
            self.expires_at,
            self.revoked_at,
            self.replaced_by,
        )

    @classmethod
    def _from_row(cls, row: Sequence[Any]) -> APIKeyRecord:
        values = dict(zip(_COLUMNS, row, strict=True))
        return cls(
            key_id=values["key_id"],
            key_hash=values["key_hash"],
            name=values["name"],
            subject=values["subject"],
            org_id=values["org_id"],
            team_id=values["team_id"],
            user_id=values["user_id"],
            roles=tuple(json.loads(values["roles"])),
            scopes=tuple(json.loads(values["scopes"])),
            created_at=float(values["created_at"]),
            expires_at=None if values["expires_at"] is None else float(values["expires_at"]),
            revoked_at=None if values["revoked_at"] is None else float(values["revoked_at"]),
            replaced_by=values["replaced_by"],
        )


@runtime_checkable
class APIKeyStore(Protocol):
    """Persistence for API key records. Records are immutable; ``update`` replaces one."""

    async def insert(self, record: APIKeyRecord) -> None: ...

    async def get(self, key_id: str) -> APIKeyRecord | None: ...

    async def update(self, record: APIKeyRecord) -> None: ...

    async def list(self, subject: str | None = None) -> list[APIKeyRecord]: ...

    async def delete_for_user(self, user_id: str) -> int: ...

    async def purge_inactive_before(self, cutoff: float) -> int: ...

    async def close(self) -> None: ...


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS gf_api_keys (
    key_id      TEXT PRIMARY KEY,
    key_hash    TEXT NOT NULL,
    name        TEXT NOT NULL,
    subject     TEXT NOT NULL,
    org_id      TEXT,
    team_id     TEXT,
    user_id     TEXT,
    roles       TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION,
    revoked_at  DOUBLE PRECISION,
    replaced_by TEXT
)
"""
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS gf_api_keys_subject ON gf_api_keys (subject)",
    "CREATE INDEX IF NOT EXISTS gf_api_keys_user ON gf_api_keys (user_id)",
)
_SELECT = f"SELECT {', '.join(_COLUMNS)} FROM gf_api_keys"  # noqa: S608 - fixed column list
_UPDATE_SET = ", ".join(f"{c} = {{p}}" for c in _COLUMNS[1:])
# inactive: revoked, or expired, before the cutoff
_PURGE_WHERE = (
    "(revoked_at IS NOT NULL AND revoked_at < {p}) OR (expires_at IS NOT NULL AND expires_at < {p})"
)


class SQLiteAPIKeyStore:
    """API key records in one SQLite file: WAL journal, ``synchronous=FULL``.

    Every commit is fsynced, so a key that ``create`` returned survives ``kill -9`` and power loss.
    One connection serves all calls from a worker thread, guarded by a lock.
    """

    def __init__(self, path: str = ".gf-data/api-keys.db") -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = connect_durable_sqlite(self.path)
            conn.execute(_CREATE_TABLE)
            for statement in _INDEXES:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._connection())

        return await asyncio.to_thread(locked)

    async def insert(self, record: APIKeyRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    f"INSERT INTO gf_api_keys ({', '.join(_COLUMNS)}) "  # noqa: S608
                    f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                    record._row(),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"API key {record.key_id} already exists") from None

        await self._run(work)

    async def get(self, key_id: str) -> APIKeyRecord | None:
        def work(conn: sqlite3.Connection) -> APIKeyRecord | None:
            row = conn.execute(f"{_SELECT} WHERE key_id = ?", (key_id,)).fetchone()
            return None if row is None else APIKeyRecord._from_row(row)

        return await self._run(work)

    async def update(self, record: APIKeyRecord) -> None:
        def work(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"UPDATE gf_api_keys SET {_UPDATE_SET.format(p='?')} WHERE key_id = ?",  # noqa: S608
                (*record._row()[1:], record.key_id),
            )

        await self._run(work)

    async def list(self, subject: str | None = None) -> list[APIKeyRecord]:
        def work(conn: sqlite3.Connection) -> list[APIKeyRecord]:
            if subject is None:
                rows = conn.execute(f"{_SELECT} ORDER BY created_at, key_id").fetchall()
            else:
                rows = conn.execute(
                    f"{_SELECT} WHERE subject = ? ORDER BY created_at, key_id", (subject,)
                ).fetchall()
            return [APIKeyRecord._from_row(row) for row in rows]

        return await self._run(work)

    async def delete_for_user(self, user_id: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM gf_api_keys WHERE user_id = ?", (user_id,)).rowcount

        return await self._run(work)

    async def purge_inactive_before(self, cutoff: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return conn.execute(
                f"DELETE FROM gf_api_keys WHERE {_PURGE_WHERE.format(p='?')}",  # noqa: S608
                (cutoff, cutoff),
            ).rowcount

        return await self._run(work)

    async def close(self) -> None:
        def work() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(work)


class PostgresAPIKeyStore:
    """API key records in PostgreSQL (psycopg 3, async). One connection, calls serialised.

    ``dsn`` is a libpq connection string; keep its password in the environment (``PGPASSWORD``)
    or a secret provider rather than in config files.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock = asyncio.Lock()
        self._conn: Any = None

    async def _connection(self) -> Any:
        import psycopg

        if self._conn is None or self._conn.closed:
            conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)
            await conn.execute(_CREATE_TABLE)
            for statement in _INDEXES:
                await conn.execute(statement)
            self._conn = conn
        return self._conn

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        async with self._lock:
            conn = await self._connection()
            return await conn.execute(sql, params)

    async def insert(self, record: APIKeyRecord) -> None:
        import psycopg

        try:
            await self._execute(
                f"INSERT INTO gf_api_keys ({', '.join(_COLUMNS)}) "  # noqa: S608
                f"VALUES ({', '.join('%s' for _ in _COLUMNS)})",
                record._row(),
            )
        except psycopg.errors.UniqueViolation:
            raise Conflict(f"API key {record.key_id} already exists") from None

    async def get(self, key_id: str) -> APIKeyRecord | None:
        async with self._lock:
            conn = await self._connection()
            cursor = await conn.execute(f"{_SELECT} WHERE key_id = %s", (key_id,))
            row = await cursor.fetchone()
        return None if row is None else APIKeyRecord._from_row(row)

    async def update(self, record: APIKeyRecord) -> None:
        await self._execute(
            f"UPDATE gf_api_keys SET {_UPDATE_SET.format(p='%s')} WHERE key_id = %s",  # noqa: S608
            (*record._row()[1:], record.key_id),
        )

    async def list(self, subject: str | None = None) -> list[APIKeyRecord]:
        async with self._lock:
            conn = await self._connection()
            if subject is None:
                cursor = await conn.execute(f"{_SELECT} ORDER BY created_at, key_id")
            else:
                cursor = await conn.execute(
                    f"{_SELECT} WHERE subject = %s ORDER BY created_at, key_id", (subject,)
                )
            rows = await cursor.fetchall()
        return [APIKeyRecord._from_row(row) for row in rows]

    async def delete_for_user(self, user_id: str) -> int:
        cursor = await self._execute("DELETE FROM gf_api_keys WHERE user_id = %s", (user_id,))
        return int(cursor.rowcount)

    async def purge_inactive_before(self, cutoff: float) -> int:
        cursor = await self._execute(
            f"DELETE FROM gf_api_keys WHERE {_PURGE_WHERE.format(p='%s')}",  # noqa: S608
            (cutoff, cutoff),
        )
        return int(cursor.rowcount)

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None


def open_key_store(url: str) -> APIKeyStore:
    """A store for ``url``: ``postgresql://...`` / ``postgres://...``, else a SQLite path.

    ``sqlite:///path`` is accepted too.

    >>> type(open_key_store("postgresql://db/app")).__name__
    'PostgresAPIKeyStore'
    >>> open_key_store("sqlite:///keys.db").path
    'keys.db'
    """
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresAPIKeyStore(url)
    return SQLiteAPIKeyStore(url.removeprefix("sqlite:///"))
