"""A tamper-evident audit trail: hash-chained events in SQLite, payloads encrypted at rest.

Each event's hash covers the previous event's hash and the event itself (time, actor, action,
resource, outcome, a pseudonym of the user it concerns and a salted digest of its payload), so
editing, deleting or reordering any event breaks the chain at that point and
:meth:`AuditLog.verify` names it. Payloads are sealed with
:class:`~genai_factory.security.encryption.AtRestCipher` (bound to the event's sequence number).

Erasure and retention keep the chain verifiable: :meth:`AuditLog.erase_user` removes the
payload and the user id of a user's events but keeps their digests (the event stays as a
tombstone that still verifies; the digest's salt went with the payload, so it confirms no guess); :meth:`AuditLog.purge_before` deletes old events from the start
and records the last deleted hash as the new anchor.

Example:
    >>> import asyncio, tempfile, pathlib
    >>> from genai_factory.security.audit import AuditLog
    >>> from genai_factory.security.encryption import AtRestCipher, Keyring, new_key_entry
    >>> async def demo() -> tuple[int | None, str]:
    ...     with tempfile.TemporaryDirectory() as tmp:
    ...         log = AuditLog(str(pathlib.Path(tmp) / "audit.db"),
    ...                        cipher=AtRestCipher(keyring=Keyring.parse(new_key_entry("a1"))))
    ...         await log.record(actor="alice", action="keys.revoke", resource="key:0123",
    ...                          user_id="bob", payload={"reason": "left the team"})
    ...         event = (await log.events())[0]
    ...         broken = await log.verify()
    ...         await log.close()
    ...         return broken, event.payload["reason"]
    >>> asyncio.run(demo())
    (None, 'left the team')
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from genai_factory.security.compliance import pseudonym
from genai_factory.security.encryption import AtRestCipher
from genai_factory.shared.errors import GFError
from genai_factory.shared.storage import connect_durable_sqlite

__all__ = ["AuditEvent", "AuditLog"]

T = TypeVar("T")
GENESIS = "0" * 64

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS gf_audit (
        seq INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        resource TEXT NOT NULL,
        outcome TEXT NOT NULL,
        user_id TEXT,
        subject TEXT,
        payload TEXT,
        payload_digest TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS gf_audit_user ON gf_audit (user_id)",
    "CREATE TABLE IF NOT EXISTS gf_audit_anchor (id INTEGER PRIMARY KEY CHECK (id = 1), hash TEXT NOT NULL, seq INTEGER NOT NULL)",
)


@dataclass(frozen=True)
class AuditEvent:
    seq: int
    ts: float
    actor: str
    action: str
    resource: str
    outcome: str
    subject: str | None
    user_id: str | None
    payload: dict[str, Any] | None
    hash: str


def _event_hash(prev_hash: str, fields: Mapping[str, Any]) -> str:
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}|{body}".encode()).hexdigest()


class AuditLog:
    """Append-only, hash-chained audit events in one SQLite file (WAL, fsync per commit)."""

    def __init__(self, path: str = ".gf-data/audit.db", *, cipher: AtRestCipher) -> None:
        self.path = path
        self.cipher = cipher
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = connect_durable_sqlite(self.path)
            for statement in _SCHEMA:
                conn.execute(statement)
            self._conn = conn
        return self._conn

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                return work(self._connection())

        return await asyncio.to_thread(locked)

    @staticmethod
    def _digest(salt: str, payload_text: str) -> str:
        # the salt lives only inside the sealed payload: once a payload is erased, its digest
        # cannot be used to confirm a guess of what it said
        return hashlib.sha256(f"{salt}|{payload_text}".encode()).hexdigest()

    def _open(self, seq: int, sealed: str) -> tuple[str, str]:
        """(salt, payload text) of a sealed payload."""
        envelope = json.loads(self.cipher.decrypt_text(sealed, context=f"audit:{seq}"))
        return str(envelope["salt"]), str(envelope["payload"])

    async def record(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        outcome: str = "ok",
        user_id: str | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one event; returns its sequence number."""
        payload_text = json.dumps(payload or {}, sort_keys=True, default=str)
        salt = secrets.token_hex(16)
        envelope = json.dumps({"salt": salt, "payload": payload_text})
        now = time.time()
        subject = pseudonym(user_id) if user_id else None

        def work(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")  # one writer at a time, also across processes
            try:
                row = conn.execute(
                    "SELECT seq, hash FROM gf_audit ORDER BY seq DESC LIMIT 1"
                ).fetchone()
                if row is None:
                    anchor = conn.execute("SELECT seq, hash FROM gf_audit_anchor").fetchone()
                    row = anchor if anchor is not None else (0, GENESIS)
                seq, prev_hash = int(row[0]) + 1, str(row[1])
                fields = {
                    "seq": seq,
                    "ts": now,
                    "actor": actor,
                    "action": action,
                    "resource": resource,
                    "outcome": outcome,
                    "subject": subject,
                    "payload_digest": self._digest(salt, payload_text),
                }
                sealed = self.cipher.encrypt_text(envelope, context=f"audit:{seq}")
                conn.execute(
                    "INSERT INTO gf_audit (seq, ts, actor, action, resource, outcome, user_id, "
                    "subject, payload, payload_digest, prev_hash, hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq,
                        now,
                        actor,
                        action,
                        resource,
                        outcome,
                        user_id,
                        subject,
                        sealed,
                        fields["payload_digest"],
                        prev_hash,
                        _event_hash(prev_hash, fields),
                    ),
                )
                conn.execute("COMMIT")
                return seq
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._run(work)

    async def events(self, *, user_id: str | None = None, limit: int = 1000) -> list[AuditEvent]:
        """Events in order (optionally one user's), payloads decrypted (None once erased)."""

        def work(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            sql = (
                "SELECT seq, ts, actor, action, resource, outcome, subject, user_id, payload, hash "
                "FROM gf_audit"
            )
            if user_id is not None:
                return conn.execute(
                    f"{sql} WHERE user_id = ? ORDER BY seq LIMIT ?", (user_id, limit)
                ).fetchall()
            return conn.execute(f"{sql} ORDER BY seq LIMIT ?", (limit,)).fetchall()

        rows = await self._run(work)
        events = []
        for seq, ts, actor, action, resource, outcome, subject, uid, sealed, digest in rows:
            payload = None
            if sealed is not None:
                payload = json.loads(self._open(seq, sealed)[1])
            events.append(
                AuditEvent(seq, ts, actor, action, resource, outcome, subject, uid, payload, digest)
            )
        return events

    async def verify(self) -> int | None:
        """None when the chain is intact; else the sequence number of the first bad event."""

        def work(conn: sqlite3.Connection) -> int | None:
            anchor = conn.execute("SELECT seq, hash FROM gf_audit_anchor").fetchone()
            expected_seq, prev_hash = (int(anchor[0]), str(anchor[1])) if anchor else (0, GENESIS)
            rows = conn.execute(
                "SELECT seq, ts, actor, action, resource, outcome, subject, payload, "
                "payload_digest, prev_hash, hash FROM gf_audit ORDER BY seq"
            )
            for seq, ts, actor, action, resource, outcome, subject, sealed, digest, prev, h in rows:
                expected_seq += 1
                fields = {
                    "seq": seq,
                    "ts": ts,
                    "actor": actor,
                    "action": action,
                    "resource": resource,
                    "outcome": outcome,
                    "subject": subject,
                    "payload_digest": digest,
                }
                if seq != expected_seq or prev != prev_hash or _event_hash(prev_hash, fields) != h:
                    return int(seq)
                if sealed is not None:
                    try:
                        salt, text = self._open(seq, sealed)
                    except (GFError, ValueError, KeyError, TypeError):
                        return int(seq)
                    if not hmac.compare_digest(self._digest(salt, text), digest):
                        return int(seq)
                prev_hash = h
            return None

        return await self._run(work)

    async def erase_user(self, user_id: str) -> int:
        """Right to erasure: drop the payloads and user id of ``user_id``'s events; the events
        stay as verifiable tombstones. Returns how many events were scrubbed."""

        def work(conn: sqlite3.Connection) -> int:
            return conn.execute(
                "UPDATE gf_audit SET payload = NULL, user_id = NULL WHERE user_id = ?", (user_id,)
            ).rowcount

        return await self._run(work)

    async def purge_before(self, cutoff: float) -> int:
        """Retention: delete events older than ``cutoff`` (epoch s) from the start of the chain,
        keeping the last deleted hash as the anchor the rest still verifies against."""

        def work(conn: sqlite3.Connection) -> int:
            conn.execute("BEGIN IMMEDIATE")
            try:
                last = conn.execute(
                    "SELECT seq, hash FROM gf_audit WHERE ts < ? ORDER BY seq DESC LIMIT 1",
                    (cutoff,),
                ).fetchone()
                if last is None:
                    conn.execute("COMMIT")
                    return 0
                deleted = conn.execute("DELETE FROM gf_audit WHERE seq <= ?", (last[0],)).rowcount
                conn.execute(
                    "INSERT INTO gf_audit_anchor (id, seq, hash) VALUES (1, ?, ?) "
                    "ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
                    (last[0], last[1]),
                )
                conn.execute("COMMIT")
                return int(deleted)
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return await self._run(work)

    async def close(self) -> None:
        def work() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(work)
