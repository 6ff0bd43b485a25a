"""The tamper-evident audit log on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from genai_factory.guardrails.audit import GENESIS, AuditLog


async def filled(log: AuditLog, n: int = 5) -> None:
    for i in range(n):
        await log.append({"i": i, "decision": "block" if i % 2 else "allow", "rules": [f"r{i}"]})


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.db'}"


async def test_records_chain_and_verify(tmp_path: Path) -> None:
    log = AuditLog(sqlite_url(tmp_path))
    await filled(log)
    records = await log.records()
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[0].prev_hash == GENESIS
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(records))
    assert records[1].data() == {"decision": "block", "i": 1, "rules": ["r1"]}
    report = await log.verify(batch=2)
    assert report.ok and report.checked == 5 and report.head == records[-1].hash


def tamper(tmp_path: Path, sql: str) -> None:
    conn = sqlite3.connect(tmp_path / "audit.db")
    conn.execute(sql)
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    ("sql", "problem"),
    [
        (
            "UPDATE guard_audit SET event = replace(event, 'block', 'allow') WHERE seq = 2",
            "seq 2: hash mismatch",
        ),
        ("DELETE FROM guard_audit WHERE seq = 3", "seq 4: expected seq 3"),
        (
            "UPDATE guard_audit SET ts = '2020-01-01T00:00:00+00:00' WHERE seq = 1",
            "seq 1: hash mismatch",
        ),
        (
            "UPDATE guard_audit SET hash = '" + "f" * 64 + "' WHERE seq = 4",
            "seq 5: prev_hash does not match",
        ),
        ("DELETE FROM guard_audit WHERE seq = 1", "seq 2: expected seq 1"),
    ],
)
async def test_any_edit_or_deletion_is_detected(tmp_path: Path, sql: str, problem: str) -> None:
    log = AuditLog(sqlite_url(tmp_path))
    await filled(log)
    tamper(tmp_path, sql)
    report = await log.verify()
    assert not report.ok
    assert any(p.startswith(problem) for p in report.problems), report.problems


async def test_a_rechained_edit_is_caught_by_the_keyed_hash(tmp_path: Path) -> None:
    keyed = AuditLog(sqlite_url(tmp_path), key="kept-outside-the-db")
    await filled(keyed, 3)
    # an attacker without the key edits record 2 and re-chains the whole log
    forger = AuditLog(sqlite_url(tmp_path))
    rows = await forger.records()
    prev = GENESIS
    conn = sqlite3.connect(tmp_path / "audit.db")
    for row in rows:
        event = row.event.replace("block", "allow")
        digest = forger.chain_hash(prev, row.seq, row.ts, event)
        conn.execute(
            "UPDATE guard_audit SET event=?, prev_hash=?, hash=? WHERE seq=?",
            (event, prev, digest, row.seq),
        )
        prev = digest
    conn.commit()
    conn.close()
    assert (await forger.verify()).ok  # an unkeyed chain can be forged...
    assert not (await keyed.verify()).ok  # ...a keyed one cannot


async def test_concurrent_appends_keep_one_chain(tmp_path: Path) -> None:
    log = AuditLog(sqlite_url(tmp_path))
    await asyncio.gather(*(log.append({"n": n}) for n in range(20)))
    report = await log.verify()
    assert report.ok and report.checked == 20


def test_sqlite_log_survives_kill_9(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    writer = textwrap.dedent(
        f"""
        import asyncio, sys
        from genai_factory.guardrails.audit import AuditLog
        async def main():
            log = AuditLog({url!r})
            i = 0
            while True:
                await log.append({{"i": i}})
                i += 1
                if i == 5:
                    print("ready", flush=True)
        asyncio.run(main())
        """
    )
    process = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        time.sleep(0.3)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    report = asyncio.run(AuditLog(url).verify())
    assert report.ok and report.checked >= 5, report.problems


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="identifier"):
        AuditLog(table="x; DROP TABLE y")
    with pytest.raises(ValueError, match="url"):
        AuditLog("mysql://x")
    assert AuditLog(key="s").to_params() == {
        "url": "sqlite:///guardrails-audit.db",
        "table": "guard_audit",
    }


@pytest.mark.integration
async def test_postgres_chain_tamper_and_verify(postgres_schema_dsn: str) -> None:
    import psycopg

    log = AuditLog(postgres_schema_dsn)
    try:
        await asyncio.gather(*(log.append({"n": n}) for n in range(6)))
        other = AuditLog(postgres_schema_dsn)  # a second writer (another replica)
        await other.append({"n": "other"})
        await other.close()
        report = await log.verify()
        assert report.ok and report.checked == 7
        async with await psycopg.AsyncConnection.connect(
            postgres_schema_dsn, autocommit=True
        ) as conn:
            await conn.execute("UPDATE guard_audit SET event = '{\"n\": 99}' WHERE seq = 3")
            await conn.execute("DELETE FROM guard_audit WHERE seq = 5")
        broken = await log.verify()
        assert not broken.ok
        assert any(p.startswith("seq 3: hash mismatch") for p in broken.problems)
        assert any(p.startswith("seq 6: expected seq 5") for p in broken.problems)
    finally:
        await log.close()


async def test_url_reads_variables_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GF_TEST_AUDIT_DIR", str(tmp_path))
    log = AuditLog("sqlite:///${GF_TEST_AUDIT_DIR}/env.db")
    await log.append({"x": 1})
    assert (tmp_path / "env.db").exists()
    assert (
        log.to_params()["url"] == "sqlite:///${GF_TEST_AUDIT_DIR}/env.db"
    )  # never the expanded secret
