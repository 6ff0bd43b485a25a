"""Embedded state that must survive a kill -9: one way to open a SQLite file for it.

Keys, spend, audit records and checkpoints live in SQLite by default. Every store opens its file
the same way: WAL journal, a full fsync of the WAL on every commit, autocommit (each statement is
its own durable transaction), and a busy timeout so several processes can share the file.

Example:
    >>> import tempfile, os
    >>> from genai_factory.shared.storage import connect_durable_sqlite
    >>> path = os.path.join(tempfile.mkdtemp(), "state", "ledger.db")
    >>> conn = connect_durable_sqlite(path)
    >>> conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0]
    ('wal', 2)
    >>> conn.close()
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["connect_durable_sqlite"]


def connect_durable_sqlite(path: str | Path, *, busy_timeout_s: float = 5.0) -> sqlite3.Connection:
    """Open (creating its folder) a SQLite file for state that must not be lost.

    The connection may be used from any thread; callers serialise access themselves.
    ``:memory:`` is accepted for tests and gets no journal settings that need a file.
    """
    target = str(path)
    if target != ":memory:":
        Path(target).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        target, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    if target != ":memory:":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL on every commit
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
    return conn
