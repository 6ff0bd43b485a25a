"""L1 eviction policies, L2 Redis (shared entries + pub/sub invalidation), L3 SQLite/PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from genai_factory.cache.core import SemanticCache
from genai_factory.cache.entry import CacheEntry, CacheScope, InvalidationFilter
from genai_factory.cache.policy import ThresholdPolicy
from genai_factory.cache.tiers.base import EntryStore
from genai_factory.cache.tiers.memory import MemoryStore
from genai_factory.cache.tiers.redis import RedisStore
from genai_factory.cache.tiers.sql import PostgresStore, SQLiteStore

from .conftest import LetterEmbedder

SCOPE = CacheScope(tenant="acme", namespace="docs", model="m", prompt_version="v1")


def make_entry(key: str, **overrides: object) -> CacheEntry:
    values: dict[str, object] = {
        "key": key,
        "scope": SCOPE,
        "prompt": f"prompt {key}",
        "response": f'{{"answer": "{key}"}}',
        "vector": np.full(4, 0.5, dtype=np.float32),
    }
    values.update(overrides)
    return CacheEntry(**values)  # type: ignore[arg-type]


# ------------------------------------------------------------------ L1


def test_lru_evicts_the_least_recently_used() -> None:
    store = MemoryStore(max_entries=2, eviction="lru")
    store.put(make_entry("a"))
    store.put(make_entry("b"))
    store.get("a")
    evicted = store.put(make_entry("c"))
    assert [e.key for e in evicted] == ["b"] and sorted(store.keys()) == ["a", "c"]


def test_lfu_evicts_the_least_frequently_used() -> None:
    store = MemoryStore(max_entries=2, eviction="lfu")
    store.put(make_entry("a"))
    store.put(make_entry("b"))
    for _ in range(3):
        store.get("b")
    store.get("a")
    evicted = store.put(make_entry("c"))
    assert [e.key for e in evicted] == ["a"]


def test_cost_aware_eviction_keeps_expensive_answers() -> None:
    store = MemoryStore(max_entries=2, eviction="cost")
    store.put(make_entry("pricey", cost_usd=0.05, latency_ms=3000))
    store.put(make_entry("cheap", cost_usd=0.00001, latency_ms=5))
    evicted = store.put(make_entry("medium", cost_usd=0.01, latency_ms=800))
    assert [e.key for e in evicted] == ["cheap"]
    assert "pricey" in store and store.evictions == 1


def test_byte_bound_and_bad_settings() -> None:
    one = make_entry("x")
    store = MemoryStore(max_entries=100, max_bytes=int(one.size_bytes * 2.5))
    for key in "abcd":
        store.put(make_entry(key))
    assert len(store) == 2 and store.bytes_used <= store.max_bytes  # type: ignore[operator]
    assert store.remove("zzz") is None
    store.clear()
    assert len(store) == 0 and store.bytes_used == 0
    with pytest.raises(ValueError, match="max_entries"):
        MemoryStore(max_entries=0)
    with pytest.raises(ValueError, match="eviction"):
        MemoryStore(eviction="fifo")  # type: ignore[arg-type]


def test_entries_round_trip_through_json() -> None:
    entry = make_entry("k", tags=("a", "b"), threshold=0.9, answer_vector=np.ones(3, np.float32))
    back = CacheEntry.from_json(entry.to_json())
    assert back.scope == entry.scope and back.tags == ("a", "b") and back.threshold == 0.9
    assert back.vector is not None and np.array_equal(back.vector, entry.vector)
    assert back.answer_vector is not None and back.answer_vector.shape == (3,)


# ------------------------------------------------------------------ L2 / L3 contract


async def check_store_contract(store: EntryStore) -> None:
    assert isinstance(store, EntryStore)
    await store.put(make_entry("a", tags=("pricing",)))
    await store.put(make_entry("b", last_access=time.time() + 5))
    await store.put(make_entry("gone", expires_at=time.time() - 1))
    got = await store.get("a")
    assert got is not None and got.prompt == "prompt a" and got.tags == ("pricing",)
    assert got.vector is not None and np.allclose(got.vector, 0.5)
    assert await store.get("gone") is None and await store.get("missing") is None
    assert [e.key async for e in store.scan(limit=1)] == ["b"]  # most recent first
    assert {e.key async for e in store.scan()} == {"a", "b"}
    assert await store.purge(InvalidationFilter(tag="pricing")) == ["a"]
    purged = await store.purge(InvalidationFilter(tenant="acme", namespace="docs", model="m"))
    assert set(purged) - {"gone"} == {"b"}  # an expired row may still be there to purge
    assert await store.delete(["nothing"]) == 0 and await store.delete([]) == 0
    await store.put(make_entry("c"))
    assert await store.count() >= 1
    assert await store.delete(["c"]) == 1


async def test_sqlite_store_contract(tmp_path: Path) -> None:
    store = SQLiteStore(path=str(tmp_path / "cache.db"))
    try:
        await check_store_contract(store)
    finally:
        await store.close()
    with pytest.raises(ValueError, match="identifier"):
        SQLiteStore(path=":memory:", table="x; drop")


@pytest.mark.integration
async def test_postgres_store_contract(postgres_schema_dsn: str) -> None:
    store = PostgresStore(dsn=postgres_schema_dsn)
    try:
        await check_store_contract(store)
    finally:
        await store.close()
    with pytest.raises(ValueError, match="identifier"):
        PostgresStore(dsn=postgres_schema_dsn, table="1bad")


@pytest.mark.integration
async def test_redis_store_contract(redis_url: str, redis_namespace: str) -> None:
    store = RedisStore(url=redis_url, key_prefix=redis_namespace)
    try:
        await check_store_contract(store)
        assert [e async for e in store.scan(limit=0)] == []
    finally:
        await store.close()


# ------------------------------------------------------------------ replicas and warm start


async def wait_for(condition: object, within_s: float = 3.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.integration
async def test_replicas_share_entries_and_invalidations_through_redis(
    redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    letters = LetterEmbedder()
    scope = CacheScope(tenant="acme")
    a = SemanticCache(embedder=letters, l2=RedisStore(redis_url, redis_namespace))
    b = SemanticCache(embedder=letters, l2=RedisStore(redis_url, redis_namespace))
    try:
        await a.start()
        await b.start()
        await a.store(scope, "shared question about invoices", "A", tags=["billing"])
        # b hears about it and indexes it: a semantic hit, not just an exact L2 read
        assert await wait_for(lambda: len(b.l1) == 1)
        near = await b.lookup(scope, "shared question about the invoices")
        assert near.kind == "semantic" and near.tier == "l1"
        await a.invalidate(InvalidationFilter(tag="billing"))
        assert await wait_for(lambda: len(b.l1) == 0)
        assert (await b.lookup(scope, "shared question about invoices")).kind == "miss"

        entry = await a.store(scope, "second question", "B")
        assert entry is not None
        assert await wait_for(lambda: len(b.l1) == 1)
        await a.delete([entry.key])
        assert await wait_for(lambda: len(b.l1) == 0)
        await b.handle_event({"op": "put", "key": entry.key, "origin": a.node_id})
        assert len(b.l1) == 0  # deleted everywhere: nothing to fetch
    finally:
        await a.close()
        await b.close()


@pytest.mark.integration
async def test_exact_hits_come_from_l2_then_l3_and_warm_start_fills_l1(
    redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    letters = LetterEmbedder()
    scope = CacheScope(tenant="acme")
    db = str(tmp_path / "l3.db")
    writer = SemanticCache(
        embedder=letters, l2=RedisStore(redis_url, redis_namespace), l3=SQLiteStore(db)
    )
    for i in range(5):
        await writer.store(scope, f"stored question number {'abcde'[i]}", f"A{i}")
    await writer.close()

    cold = SemanticCache(
        embedder=letters, l2=RedisStore(redis_url, redis_namespace), l3=SQLiteStore(db)
    )
    hit = await cold.lookup(scope, "stored question number a")
    assert hit.kind == "exact" and hit.tier == "l2"
    assert cold.stats.tier_hits["l2"] == 1
    await cold.close()

    only_l3 = SemanticCache(embedder=letters, l3=SQLiteStore(db))
    assert (await only_l3.lookup(scope, "stored question number b")).tier == "l3"
    assert await only_l3.warm_start() == 4  # the fifth is already in L1 from the read
    assert len(only_l3.l1) == 5 and len(only_l3.index) == 5
    assert (await only_l3.lookup(scope, "stored question numbr c")).kind == "semantic"
    await only_l3.close()


async def test_a_broken_shared_tier_degrades_to_a_miss() -> None:
    broken = RedisStore(url="redis://127.0.0.1:1/0", key_prefix="nowhere:")
    # letter-count vectors make any two English texts look alike: a strict gate keeps this
    # test about the tier, not about the verifier
    cache = SemanticCache(
        embedder=LetterEmbedder(), l2=broken, thresholds=ThresholdPolicy(default=0.97)
    )
    scope = CacheScope(tenant="acme")
    assert await cache.store(scope, "question while redis is down", "A") is not None
    assert (await cache.lookup(scope, "question while redis is down")).tier == "l1"
    assert (await cache.lookup(scope, "another question")).kind == "miss"
    await cache.close()
