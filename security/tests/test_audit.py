"""The audit trail: hash chain, tamper detection, encrypted payloads, erasure and retention."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from genai_factory.security.audit import AuditLog
from genai_factory.security.compliance import ErasureRegistry, RetentionManager, pseudonym
from genai_factory.security.encryption import AtRestCipher, Keyring, new_key_entry

DAY = 86_400.0


@pytest.fixture
def keys(remember_secret: Callable[..., None]) -> tuple[str, str]:
    first, second = new_key_entry("a1"), new_key_entry("a2")
    remember_secret(first.split(":", 1)[1], second.split(":", 1)[1])
    return first, second


@pytest.fixture
async def log(tmp_path: Path, keys: tuple[str, str]) -> AsyncIterator[AuditLog]:
    audit = AuditLog(
        str(tmp_path / "audit.db"), cipher=AtRestCipher(keyring=Keyring.parse(keys[0]))
    )
    yield audit
    await audit.close()


def read_all(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(directory.iterdir()))


def tamper(path: Path, sql: str, *params: object) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


async def fill(log: AuditLog) -> None:
    await log.record(
        actor="alice", action="keys.create", resource="key:1", user_id="bob", payload={"name": "ci"}
    )
    await log.record(
        actor="alice",
        action="roles.assign",
        resource="role:editor",
        user_id="carol",
        payload={"to": "carol"},
    )
    await log.record(
        actor="bob",
        action="model.invoke",
        resource="model:m",
        outcome="denied",
        user_id="bob",
        payload={"prompt": "secret plans"},
    )
    await log.record(actor="system", action="retention.run", resource="store:prompts")


async def test_events_chain_and_payloads_are_encrypted(log: AuditLog, tmp_path: Path) -> None:
    await fill(log)
    events = await log.events()
    assert [e.seq for e in events] == [1, 2, 3, 4] and await log.verify() is None
    assert events[2].payload == {"prompt": "secret plans"} and events[2].outcome == "denied"
    assert events[0].subject == pseudonym("bob") and events[3].payload == {}
    assert [e.seq for e in await log.events(user_id="bob")] == [1, 3]
    raw = read_all(tmp_path)
    assert b"secret plans" not in raw and b'"to": "carol"' not in raw


@pytest.mark.parametrize(
    ("sql", "params", "first_bad"),
    [
        ("UPDATE gf_audit SET action = 'keys.read' WHERE seq = 2", (), 2),
        ("UPDATE gf_audit SET outcome = 'ok' WHERE seq = 3", (), 3),
        ("UPDATE gf_audit SET ts = ts - 3600 WHERE seq = 1", (), 1),
        ("DELETE FROM gf_audit WHERE seq = 2", (), 3),
        ("UPDATE gf_audit SET seq = 9 WHERE seq = 4", (), 9),
        (
            "UPDATE gf_audit SET payload = (SELECT payload FROM gf_audit WHERE seq = 1) WHERE seq = 3",
            (),
            3,
        ),
        ("UPDATE gf_audit SET payload_digest = 'x' WHERE seq = 1", (), 1),
    ],
)
async def test_tampering_is_detected_where_it_happened(
    log: AuditLog, tmp_path: Path, sql: str, params: tuple[object, ...], first_bad: int
) -> None:
    await fill(log)
    await log.close()
    tamper(tmp_path / "audit.db", sql, *params)
    assert await log.verify() == first_bad


async def test_a_recomputed_hash_still_breaks_the_next_link(log: AuditLog, tmp_path: Path) -> None:
    """An attacker who edits an event and fixes its own hash is caught by the next event."""
    await fill(log)
    await log.close()
    tamper(tmp_path / "audit.db", "UPDATE gf_audit SET hash = ? WHERE seq = 2", "f" * 64)
    assert await log.verify() == 2
    tamper(tmp_path / "audit.db", "UPDATE gf_audit SET prev_hash = ? WHERE seq = 3", "f" * 64)
    assert await log.verify() == 2


async def test_erasure_scrubs_a_user_and_keeps_the_chain(log: AuditLog) -> None:
    await fill(log)
    registry = ErasureRegistry()
    registry.register("audit", log.erase_user)
    report = await registry.erase("bob")
    assert report.deleted == {"audit": 2}
    events = {e.seq: e for e in await log.events()}
    assert events[1].payload is None and events[3].payload is None and events[3].user_id is None
    assert events[2].payload == {"to": "carol"}
    assert events[3].action == "model.invoke"  # the tombstone says what happened, not to whom
    assert await log.verify() is None


async def test_retention_keeps_an_anchor_so_the_rest_verifies(log: AuditLog) -> None:
    await log.record(actor="a", action="x", resource="r")
    await log.record(actor="a", action="y", resource="r")
    await asyncio.sleep(0.02)
    cutoff = time.time()
    await asyncio.sleep(0.02)
    await log.record(actor="a", action="z", resource="r")
    retention = RetentionManager(clock=lambda: cutoff + 30 * DAY)
    retention.register("audit", log.purge_before, max_age_days=30)
    assert (await retention.run()).deleted == {"audit": 2}
    assert [e.action for e in await log.events()] == ["z"] and await log.verify() is None
    assert await log.purge_before(0) == 0
    await log.record(actor="a", action="after", resource="r")
    assert [e.seq for e in await log.events()] == [3, 4] and await log.verify() is None


async def test_payload_keys_rotate_without_breaking_the_chain(
    log: AuditLog, tmp_path: Path, keys: tuple[str, str]
) -> None:
    await fill(log)
    rotated = AuditLog(log.path, cipher=AtRestCipher(keyring=Keyring.parse(f"{keys[1]},{keys[0]}")))
    try:
        await rotated.record(actor="x", action="after-rotation", resource="r", payload={"n": 1})
        assert await rotated.verify() is None
        assert (await rotated.events())[-1].payload == {"n": 1}
    finally:
        await rotated.close()
