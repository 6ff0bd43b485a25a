"""Retention and erasure across real stores: the API key store (SQLite, PostgreSQL) and a table of
stored prompts encrypted at rest."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr

from genai_factory.security.apikeys import APIKeyManager
from genai_factory.security.compliance import (
    ErasureRegistry,
    RetentionManager,
    pseudonym,
)
from genai_factory.security.encryption import AtRestCipher, Keyring, new_key_entry
from genai_factory.security.keystore import PostgresAPIKeyStore, SQLiteAPIKeyStore
from genai_factory.shared.errors import ConfigError, Conflict, NotFound, ValidationError

DAY = 86_400.0


class PromptStore:
    """A small real store: prompts per user in SQLite, the text encrypted at rest."""

    def __init__(self, path: Path, cipher: AtRestCipher) -> None:
        self.conn = sqlite3.connect(path)
        self.conn.execute(
            "CREATE TABLE prompts (id INTEGER PRIMARY KEY, user_id TEXT, created_at REAL, body TEXT)"
        )
        self.cipher = cipher

    def add(self, user_id: str, text: str, created_at: float) -> None:
        cursor = self.conn.execute(
            "INSERT INTO prompts (user_id, created_at, body) VALUES (?, ?, '')",
            (user_id, created_at),
        )
        body = self.cipher.encrypt_text(text, context=f"prompt:{cursor.lastrowid}")
        self.conn.execute("UPDATE prompts SET body = ? WHERE id = ?", (body, cursor.lastrowid))

    async def erase(self, user_id: str) -> int:
        return self.conn.execute("DELETE FROM prompts WHERE user_id = ?", (user_id,)).rowcount

    async def purge(self, cutoff: float) -> int:
        return self.conn.execute("DELETE FROM prompts WHERE created_at < ?", (cutoff,)).rowcount

    def texts(self) -> list[str]:
        rows = self.conn.execute("SELECT id, body FROM prompts ORDER BY id").fetchall()
        return [self.cipher.decrypt_text(body, context=f"prompt:{rid}") for rid, body in rows]


@pytest.fixture
def prompts(tmp_path: Path, remember_secret: Callable[..., None]) -> PromptStore:
    entry = new_key_entry("d1")
    remember_secret(entry.split(":", 1)[1])
    return PromptStore(tmp_path / "prompts.db", AtRestCipher(keyring=Keyring.parse(entry)))


@pytest.fixture(params=["sqlite", "postgres"])
async def keys(
    request: pytest.FixtureRequest, tmp_path: Path, hash_secret: SecretStr
) -> AsyncIterator[APIKeyManager]:
    if request.param == "sqlite":
        store: SQLiteAPIKeyStore | PostgresAPIKeyStore = SQLiteAPIKeyStore(str(tmp_path / "k.db"))
    else:
        store = PostgresAPIKeyStore(request.getfixturevalue("postgres_schema_dsn"))
    yield APIKeyManager(store, secret=hash_secret)
    await store.close()


async def test_erasure_deletes_a_user_everywhere_and_reports(
    keys: APIKeyManager, prompts: PromptStore, remember_secret: Callable[..., None]
) -> None:
    now = time.time()
    for user in ("alice", "bob"):
        issued = await keys.create("k", subject=user, user_id=user)
        remember_secret(issued.key)
        prompts.add(user, f"{user}'s prompt", now)
    prompts.add("alice", "another one", now)
    registry = ErasureRegistry()
    registry.register("api_keys", keys.store.delete_for_user)
    registry.register("prompts", prompts.erase)
    assert registry.stores == ["api_keys", "prompts"]
    report = await registry.erase("alice")
    assert report.complete and report.deleted == {"api_keys": 1, "prompts": 2} and report.total == 3
    assert report.subject == pseudonym("alice") and "alice" not in report.subject
    assert [r.subject for r in await keys.list()] == ["bob"]
    assert prompts.texts() == ["bob's prompt"]
    again = await registry.erase("alice")  # idempotent
    assert again.complete and again.total == 0


async def test_a_failing_store_does_not_stop_the_others(prompts: PromptStore) -> None:
    prompts.add("carol", "hello", time.time())
    attempts: list[str] = []

    async def broken(user_id: str) -> int:
        attempts.append(user_id)
        if len(attempts) == 1:
            raise RuntimeError(f"connection lost while deleting {user_id}")  # must not be echoed
        return 4

    async def slow(user_id: str) -> int:
        await asyncio.sleep(5)
        return 0

    registry = ErasureRegistry(timeout_s=0.2)
    registry.register("prompts", prompts.erase)
    registry.register("vector_store", broken)
    registry.register("cold_storage", slow)
    report = await registry.erase("carol")
    assert not report.complete and report.deleted == {"prompts": 1}
    assert report.failed == {
        "vector_store": "RuntimeError",
        "cold_storage": "timed out after 0.2 s",
    }
    registry2 = ErasureRegistry()
    registry2.register("vector_store", broken)
    assert (await registry2.erase("carol")).deleted == {"vector_store": 4}


async def test_platform_errors_keep_their_message_in_the_report() -> None:
    async def gone(user_id: str) -> int:
        raise NotFound("index offline")

    registry = ErasureRegistry()
    registry.register("index", gone)
    assert (await registry.erase("dave")).failed == {"index": "index offline"}


async def test_erasure_guards() -> None:
    registry = ErasureRegistry()
    with pytest.raises(ConfigError, match="no store"):
        await registry.erase("x")

    async def noop(user_id: str) -> int:
        return 0

    registry.register("a", noop)
    with pytest.raises(Conflict):
        registry.register("a", noop)
    with pytest.raises(ValidationError):
        await registry.erase("  ")


async def test_retention_deletes_only_what_is_older_than_each_policy(
    keys: APIKeyManager, prompts: PromptStore, remember_secret: Callable[..., None]
) -> None:
    now = time.time()
    prompts.add("a", "ancient", now - 40 * DAY)
    prompts.add("a", "recent", now - 5 * DAY)
    expired = await keys.create("old", subject="a", ttl_s=1)
    live = await keys.create("live", subject="a")
    remember_secret(expired.key, live.key)
    await keys.store.update(expired.record.with_changes(expires_at=now - 100 * DAY))

    async def broken(cutoff: float) -> int:
        raise RuntimeError("disk full")

    retention = RetentionManager(clock=lambda: now)
    retention.register("prompts", prompts.purge, max_age_days=30)
    retention.register("api_keys", keys.store.purge_inactive_before, max_age_days=90)
    retention.register("broken", broken, max_age_days=1)
    assert retention.policies == {"api_keys": 90.0, "broken": 1.0, "prompts": 30.0}
    report = await retention.run()
    assert report.deleted == {"prompts": 1, "api_keys": 1}
    assert report.failed == {"broken": "RuntimeError"}
    assert report.cutoffs["prompts"] == now - 30 * DAY
    assert prompts.texts() == ["recent"]
    assert [r.key_id for r in await keys.list()] == [live.key_id]
    with pytest.raises(ConfigError):
        retention.register("x", prompts.purge, max_age_days=0)
    with pytest.raises(Conflict):
        retention.register("prompts", prompts.purge, max_age_days=1)
