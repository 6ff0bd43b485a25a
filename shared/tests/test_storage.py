"""A row acknowledged by a durable SQLite connection survives the writer being killed with -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from genai_factory.shared.storage import connect_durable_sqlite

WRITER = """
import os, sys, time
from genai_factory.shared.storage import connect_durable_sqlite
conn = connect_durable_sqlite(sys.argv[1])
conn.execute("CREATE TABLE IF NOT EXISTS spend (id INTEGER PRIMARY KEY, usd TEXT)")
conn.execute("INSERT INTO spend (usd) VALUES ('0.25')")
print("acknowledged", flush=True)
time.sleep(60)
"""


def test_an_acknowledged_row_survives_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "ledger.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout is not None
    assert writer.stdout.readline().strip() == "acknowledged"
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    conn = connect_durable_sqlite(path)
    assert conn.execute("SELECT usd FROM spend").fetchall() == [("0.25",)]
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_memory_databases_work_for_tests() -> None:
    conn = connect_durable_sqlite(":memory:", busy_timeout_s=1.5)
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 1500
    conn.close()
