"""Exactness across processes: three real processes race one Redis budget; kill -9 loses nothing.

Each worker is ``python budget_worker.py`` with its own engine (Redis counters, one shared SQLite
ledger file), started for real and, where the test says so, killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis

from genai_factory.cost.budgets import BudgetPolicyEngine
from genai_factory.cost.ledger import SQLiteSpendLedger
from genai_factory.cost.prices import usd_to_nano
from genai_factory.cost.redis_backend import RedisBudgetBackend

WORKER = Path(__file__).with_name("budget_worker.py")
LIMIT = Decimal("1.00")


class Worker:
    """One budget_worker.py process and the lines it printed so far."""

    def __init__(self, config: dict[str, Any]) -> None:
        env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []

    def wait_for(self, prefix: str, timeout_s: float = 60.0) -> str:
        """Read lines until one starts with ``prefix``; fail with the worker's stderr if it dies."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise AssertionError(f"worker exited before '{prefix}': {stderr[-2000:]}")
            self.lines.append(line.strip())
            if line.startswith(prefix):
                return line.strip()
        raise AssertionError(f"worker printed no '{prefix}' within {timeout_s} s")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.stdout is not None
        self.lines += [line.strip() for line in self.process.stdout.read().splitlines()]
        self.close()

    def finish(self, timeout_s: float = 120.0) -> None:
        out, err = self.process.communicate(timeout=timeout_s)
        self.lines += out.splitlines()
        assert self.process.returncode == 0, err[-2000:]

    def close(self) -> None:
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()

    def ids(self, event: str) -> set[str]:
        return {line.split()[1] for line in self.lines if line.startswith(event + " ")}


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:  # never leave a process behind, whatever the test did
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=10)
        worker.close()


def config(redis_url: str, prefix: str, ledger: Path, worker: str, **extra: Any) -> dict[str, Any]:
    return {
        "redis_url": redis_url,
        "prefix": prefix,
        "ledger_path": str(ledger),
        "limit_usd": str(LIMIT),
        "worker": worker,
        "estimate_usd": "0.03",
        "mode": "race",
        "concurrency": 8,
        **extra,
    }


def team_counter(client: redis.Redis, prefix: str) -> int:
    keys = list(client.scan_iter(match=f"{prefix}c:team-total-usd|team:shared-team|total"))
    assert len(keys) == 1
    return int(client.get(keys[0]) or 0)


def check_state(
    redis_url: str, client: redis.Redis, prefix: str, ledger_path: Path
) -> tuple[Decimal, int]:
    """Counters equal the ledger, and nothing is held or waiting: no spend lost or counted twice."""

    async def read() -> tuple[Decimal, int]:
        engine = BudgetPolicyEngine(
            budgets=[{"scope": "team", "period": "total", "limit_usd": str(LIMIT)}],
            backend=RedisBudgetBackend(redis_url, key_prefix=prefix),
            ledger=SQLiteSpendLedger(ledger_path),
        )
        try:
            await engine.recover()
            await engine.sweep()
            usage = await engine.ledger.usage("team:shared-team")  # type: ignore[union-attr]
            assert await engine.backend.pending() == []
            return usage.cost_usd, usage.records
        finally:
            await engine.close()

    spent, records = asyncio.run(read())
    assert team_counter(client, prefix) == usd_to_nano(spent)
    assert client.zcard(f"{prefix}exp") == 0
    return spent, records


@pytest.mark.slow
@pytest.mark.parametrize("actual_ratio_min", [None, 0.5])
def test_three_processes_racing_one_budget_never_overshoot(
    redis_url: str,
    redis_namespace: str,
    tmp_path: Path,
    workers: list[Worker],
    actual_ratio_min: float | None,
) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    client = redis.Redis.from_url(redis_url)
    try:
        for name in ("w1", "w2", "w3"):
            workers.append(
                Worker(
                    config(
                        redis_url,
                        redis_namespace,
                        ledger_path,
                        name,
                        think_s=0.01,
                        actual_ratio_min=actual_ratio_min,
                        # small calls: ~100 fit, so the race lasts long enough for all three
                        estimate_usd="0.01",
                    )
                )
            )
        for worker in workers:
            worker.wait_for("ready")
        client.rpush(f"{redis_namespace}go", *["go"] * len(workers))  # all start at once
        for worker in workers:
            worker.finish()
        acked = set().union(*(w.ids("ack") for w in workers))
        blocked = set().union(*(w.ids("blocked") for w in workers))
        spent, records = check_state(redis_url, client, redis_namespace, ledger_path)
    finally:
        client.close()
    one_request = Decimal("0.01")
    assert records == len(acked)  # every acknowledged call is in the ledger, once
    assert spent <= LIMIT + one_request  # the promise; with estimates >= costs, never over at all
    assert spent <= LIMIT
    assert spent > LIMIT - one_request  # and the budget really was used up
    assert len(blocked) >= len(workers)  # every process ran into the limit
    # the processes really competed: each of them got some of the budget
    assert all(w.ids("ack") for w in workers)


@pytest.mark.slow
def test_kill_between_reserve_and_settle_leaks_nothing(
    redis_url: str, redis_namespace: str, tmp_path: Path, workers: list[Worker]
) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    client = redis.Redis.from_url(redis_url)
    try:
        worker = Worker(
            config(
                redis_url,
                redis_namespace,
                ledger_path,
                "w1",
                mode="hang-after-reserve",
                estimate_usd="0.9",
                ttl_s=1.0,
            )
        )
        workers.append(worker)
        worker.wait_for("ready")
        client.rpush(f"{redis_namespace}go", "go")
        worker.wait_for("reserved")
        assert team_counter(client, redis_namespace) == usd_to_nano(Decimal("0.9"))  # held
        worker.kill()
        time.sleep(1.2)  # past the reservation's TTL
        spent, records = check_state(redis_url, client, redis_namespace, ledger_path)
        assert (spent, records) == (0, 0)
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("ledger_write", ["sync", "deferred"])
def test_kill_mid_settle_keeps_the_spend_and_counts_it_once(
    redis_url: str,
    redis_namespace: str,
    tmp_path: Path,
    workers: list[Worker],
    ledger_write: str,
) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    client = redis.Redis.from_url(redis_url)
    try:
        worker = Worker(
            config(
                redis_url,
                redis_namespace,
                ledger_path,
                "w1",
                mode="hang-mid-settle",
                estimate_usd="0.4",
                ledger_write=ledger_write,
            )
        )
        workers.append(worker)
        worker.wait_for("ready")
        client.rpush(f"{redis_namespace}go", "go")
        # counters settled (with deferred writes the caller was already told); no ledger write
        worker.wait_for("settling")
        worker.kill()
        assert client.hlen(f"{redis_namespace}outbox") == 1
        spent, records = check_state(redis_url, client, redis_namespace, ledger_path)  # recovers
        assert (spent, records) == (Decimal("0.4"), 1)
        # recovering again (another replica, a restart) changes nothing
        assert check_state(redis_url, client, redis_namespace, ledger_path) == (Decimal("0.4"), 1)
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.parametrize("ledger_write", ["sync", "deferred"])
def test_kill_at_a_random_moment_loses_no_acknowledged_spend(
    redis_url: str,
    redis_namespace: str,
    tmp_path: Path,
    workers: list[Worker],
    ledger_write: str,
) -> None:
    ledger_path = tmp_path / "ledger.sqlite3"
    client = redis.Redis.from_url(redis_url)
    try:
        worker = Worker(
            config(
                redis_url,
                redis_namespace,
                ledger_path,
                "w1",
                mode="loop",
                estimate_usd="0.001",
                actual_ratio_min=0.5,
                ttl_s=1.0,
                ledger_write=ledger_write,
            )
        )
        workers.append(worker)
        worker.wait_for("ready")
        client.rpush(f"{redis_namespace}go", "go")
        for _ in range(15):
            worker.wait_for("ack")
        time.sleep(random.uniform(0.0, 0.05))
        worker.kill()
        acked = worker.ids("ack")
        time.sleep(1.2)  # let a reservation caught between reserve and settle expire
        spent, records = check_state(redis_url, client, redis_namespace, ledger_path)
    finally:
        client.close()

    async def stored_ids() -> set[str]:
        ledger = SQLiteSpendLedger(ledger_path)
        try:
            return {r.request_id for r in await ledger.records()}
        finally:
            await ledger.close()

    in_ledger = asyncio.run(stored_ids())
    assert acked <= in_ledger  # nothing acknowledged is lost
    assert len(in_ledger) - len(acked) <= 1  # at most the call in flight, recovered from the outbox
    assert records == len(in_ledger) and spent > 0
