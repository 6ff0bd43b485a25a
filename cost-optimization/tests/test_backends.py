"""The backend contract, run against the in-process backend and the real Redis backend alike."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from genai_factory.cost.backends import BudgetBackend, Hold, InProcessBudgetBackend
from genai_factory.cost.redis_backend import RedisBudgetBackend
from genai_factory.shared.errors import ConfigError, Conflict, ServiceUnavailable, to_http

Factory = Callable[..., BudgetBackend]


def usd(counter: str, amount: int, limit: int = 100, mode: str = "hard") -> Hold:
    return Hold(counter, "usd", amount, limit, mode)  # type: ignore[arg-type]


def tokens(counter: str, amount: int, limit: int = 1000) -> Hold:
    return Hold(counter, "tokens", amount, limit)


async def test_reserve_is_all_or_none(backend_factory: Factory) -> None:
    backend = backend_factory()
    try:
        assert (await backend.reserve("r1", [usd("a", 50), usd("b", 90)])).ok
        outcome = await backend.reserve("r2", [usd("a", 40), usd("b", 20)])
        assert not outcome.ok and outcome.blocked == "b" and outcome.blocked_used == 90
        assert await backend.usage(["a", "b"]) == {"a": 50, "b": 90}  # "a" untouched
        ok = await backend.reserve("r3", [usd("a", 50), tokens("t", 7)])
        assert ok.ok and [(c.counter, c.before, c.after) for c in ok.changes] == [
            ("a", 50, 100),
            ("t", 0, 7),
        ]
        # an exhausted hard budget blocks even a zero-amount hold; soft and downgrade never block
        assert not (await backend.reserve("r4", [usd("a", 0)])).ok
        assert (await backend.reserve("r5", [usd("a", 30, mode="soft")])).ok
        assert (await backend.reserve("r6", [usd("a", 30, mode="downgrade")])).ok
        assert (await backend.usage(["a"]))["a"] == 160
        with pytest.raises(Conflict, match="already in use"):
            await backend.reserve("r1", [usd("a", 1, limit=10**6)])
    finally:
        await backend.close()


async def test_settle_release_and_their_repeats(backend_factory: Factory) -> None:
    backend = backend_factory()
    try:
        await backend.reserve("r1", [usd("a", 60), tokens("t", 500)])
        settled = await backend.settle("r1", usd_nano=25, tokens=120, fallback=[], payload="rec-1")
        assert settled.status == "settled"
        assert {(c.counter, c.before, c.after) for c in settled.changes} == {
            ("a", 60, 25),
            ("t", 500, 120),
        }
        again = await backend.settle("r1", usd_nano=25, tokens=120, fallback=[], payload="rec-1")
        assert again.status == "duplicate" and again.changes == ()
        assert await backend.usage(["a", "t"]) == {"a": 25, "t": 120}
        assert await backend.release("r1") is False  # settled: nothing to give back

        await backend.reserve("r2", [usd("a", 50)])
        assert await backend.release("r2") is True
        assert await backend.release("r2") is False
        assert (await backend.usage(["a"]))["a"] == 25
        # a settle after release counts the real cost (the hold is already back)
        late = await backend.settle("r2", usd_nano=10, tokens=0, fallback=[], payload="")
        assert late.status == "late" and (await backend.usage(["a"]))["a"] == 35

        # an id the backend never saw (or forgot) counts on the fallback counters
        unknown = await backend.settle(
            "r-unknown", usd_nano=5, tokens=9, fallback=[usd("a", 0), tokens("t", 0)], payload="x"
        )
        assert unknown.status == "late"
        assert await backend.usage(["a", "t"]) == {"a": 40, "t": 129}

        assert sorted(await backend.pending()) == [("r-unknown", "x"), ("r1", "rec-1")]
        await backend.acknowledge("r1")
        await backend.acknowledge("r-unknown")
        assert await backend.pending() == []
    finally:
        await backend.close()


async def test_reservations_expire_after_their_ttl(backend_factory: Factory) -> None:
    backend = backend_factory(reservation_ttl_s=0.2, keep_s=30)
    try:
        await backend.reserve("crashed", [usd("a", 70)])
        await backend.reserve("alive", [usd("a", 20)])
        await backend.settle("alive", usd_nano=20, tokens=0, fallback=[], payload="")
        assert (await backend.usage(["a"]))["a"] == 90
        await asyncio.sleep(0.35)
        assert await backend.sweep() == 1
        assert (await backend.usage(["a"]))["a"] == 20
        assert await backend.sweep() == 0
        # the next reserve also sweeps on its own
        await backend.reserve("crashed-2", [usd("a", 70)])
        await asyncio.sleep(0.35)
        assert (await backend.reserve("next", [usd("a", 75)])).ok
        assert (await backend.usage(["a"]))["a"] == 95
    finally:
        await backend.close()


async def test_seed_starts_a_counter_only_once(backend_factory: Factory) -> None:
    backend = backend_factory()
    try:
        assert await backend.seed("a", 42, int(time.time()) + 3600) is True
        assert await backend.seed("a", 7) is False
        assert await backend.usage(["a", "never"]) == {"a": 42, "never": 0}
        assert await backend.usage([]) == {}
    finally:
        await backend.close()


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        InProcessBudgetBackend(reservation_ttl_s=0)
    assert caught.value.param == "reservation_ttl_s"
    with pytest.raises(ConfigError) as caught:
        InProcessBudgetBackend(reservation_ttl_s=10, keep_s=5)
    assert caught.value.param == "keep_s"
    with pytest.raises(ConfigError) as caught:
        RedisBudgetBackend(sweep_batch=0)
    assert caught.value.param == "sweep_batch"
    with pytest.raises(ConfigError) as caught:
        RedisBudgetBackend(url_env="GF_TEST_SURELY_UNSET_VARIABLE")
    assert caught.value.param == "url_env"


async def test_redis_keys_stay_under_the_prefix_and_finished_reservations_expire(
    redis_url: str, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GF_TEST_COST_REDIS", redis_url)
    backend = RedisBudgetBackend(
        url_env="GF_TEST_COST_REDIS", key_prefix=redis_namespace, reservation_ttl_s=5, keep_s=60
    )
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    unique = uuid.uuid4().hex
    counter, reservation = f"team|team:{unique}|d2030-01-01", f"res-{unique}"
    try:
        await backend.reserve(reservation, [Hold(counter, "usd", 1, 10, "hard", 2**31)])
        await backend.settle(reservation, usd_nano=1, tokens=0, fallback=[], payload="p")
        keys = [k async for k in client.scan_iter(match=f"*{unique}*")]
        assert len(keys) == 2 and all(k.startswith(redis_namespace) for k in keys)
        assert 0 < await client.pttl(f"{redis_namespace}r:{reservation}") <= 60_000
        assert await client.ttl(f"{redis_namespace}c:{counter}") > 0
        assert await client.zcard(f"{redis_namespace}exp") == 0
    finally:
        await client.aclose()
        await backend.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_redis_is_a_503_not_a_500() -> None:
    backend = RedisBudgetBackend(f"redis://127.0.0.1:{_closed_port()}/0", timeout_s=0.5)
    try:
        for call in (
            backend.reserve("r", [usd("a", 1)]),
            backend.settle("r", usd_nano=1, tokens=0, fallback=[], payload=""),
            backend.release("r"),
            backend.acknowledge("r"),
            backend.pending(),
            backend.usage(["a"]),
            backend.seed("a", 1),
            backend.sweep(),
        ):
            with pytest.raises(ServiceUnavailable) as caught:
                await call
            status, _, headers = to_http(caught.value)
            assert status == 503 and headers == {"retry-after": "1"}
    finally:
        await backend.close()


async def test_a_redis_that_never_answers_is_a_503_within_the_deadline() -> None:
    # a server that accepts and reads but never replies: each call is cut off at timeout_s
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = RedisBudgetBackend(f"redis://127.0.0.1:{port}/0", timeout_s=0.3)
    try:
        for call in (
            backend.reserve("r", [usd("a", 1)]),
            backend.settle("r", usd_nano=1, tokens=0, fallback=[], payload=""),
            backend.usage(["a"]),
        ):
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable):
                await call
            assert time.monotonic() - started < 3
    finally:
        await backend.close()
        server.close()
        await server.wait_closed()


async def test_redis_counters_keep_their_expiry_however_they_were_created(
    redis_url: str, redis_namespace: str
) -> None:
    # the scripts set a counter's expiry when they create it, and leave it alone afterwards
    backend = RedisBudgetBackend(redis_url, key_prefix=redis_namespace)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    unique = uuid.uuid4().hex
    held, late = f"team|{unique}|held", f"team|{unique}|late"
    expire_at = int(time.time()) + 3600
    try:
        for n in range(3):  # created by the first reserve, then only incremented
            await backend.reserve(f"h{n}-{unique}", [Hold(held, "usd", 5, 100, "hard", expire_at)])
            await backend.settle(f"h{n}-{unique}", usd_nano=3, tokens=0, fallback=[], payload="")
        # a settle with no reservation creates its counters from the fallback holds
        fallback = [Hold(late, "usd", 0, 0, "soft", expire_at)]
        await backend.settle(f"x-{unique}", usd_nano=7, tokens=0, fallback=fallback, payload="")
        for counter, value in ((held, "9"), (late, "7")):
            key = f"{redis_namespace}c:{counter}"
            assert await client.get(key) == value
            assert await client.expiretime(key) == expire_at
    finally:
        await client.aclose()
        await backend.close()


async def test_in_process_counters_end_with_their_window_and_reservations_are_forgotten() -> None:
    backend = InProcessBudgetBackend(reservation_ttl_s=100, keep_s=200)
    clock = [1_000_000.0]
    backend._clock = lambda: clock[0]
    day = Hold("b|team:a|d1", "usd", 50, 100, "hard", expire_at=1_000_060)
    await backend.reserve("r1", [day])
    clock[0] += 61  # the window's counter is dropped...
    assert await backend.usage(["b|team:a|d1"]) == {"b|team:a|d1": 0}
    settled = await backend.settle("r1", usd_nano=40, tokens=0, fallback=[], payload="")
    assert settled.status == "settled" and settled.changes == ()  # ...and stays dropped
    clock[0] += 201  # past keep_s: the finished reservation is forgotten
    assert await backend.sweep() == 0
    again = await backend.settle("r1", usd_nano=40, tokens=0, fallback=[day], payload="")
    assert again.status == "late"  # unknown now: counted on the fallback counters


async def test_counter_names_and_amounts_reach_the_scripts_intact(
    backend_factory: Factory,
) -> None:
    """Holds travel to Redis packed as one JSON argument (of strings): names with quotes,
    separators and non-ASCII text, and large amounts must come back unchanged."""
    backend = backend_factory()
    names = ['b|team:"q"|d2026', "b|user:caf\u00e9\\n|total", "b|key:[1,2]|m2026-01", "e|\u2603|x"]
    big = 10**15 + 1  # a million USD and one nano-USD
    try:
        holds = [usd(name, big, limit=10**16) for name in names]
        outcome = await backend.reserve("packed", holds)
        assert outcome.ok and [c.counter for c in outcome.changes] == names
        assert await backend.usage(names) == dict.fromkeys(names, big)
        settled = await backend.settle("packed", usd_nano=7, tokens=0, fallback=[], payload="")
        assert {(c.counter, c.after) for c in settled.changes} == {(n, 7) for n in names}
        # a reservation the backend never saw settles on the fallback holds, names intact
        late = await backend.settle(
            "unknown", usd_nano=big, tokens=0, fallback=[usd(n, 0) for n in names], payload=""
        )
        assert late.status == "late"
        assert await backend.usage(names) == dict.fromkeys(names, big + 7)
    finally:
        await backend.close()
