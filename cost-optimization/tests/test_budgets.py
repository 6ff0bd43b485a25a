"""Soft, hard and downgrade budgets per request, key, user, team and org (in-process backend)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from genai_factory.cost.budgets import BudgetPolicyEngine
from genai_factory.cost.ledger import SQLiteSpendLedger
from genai_factory.cost.redis_backend import RedisBudgetBackend
from genai_factory.shared.contracts import BudgetPolicy
from genai_factory.shared.errors import (
    BudgetExceeded,
    ConfigError,
    ServiceUnavailable,
    ValidationError,
    to_http,
)
from genai_factory.shared.models import ChatCompletionRequest, CostRecord, Principal

from .conftest import record

Engine = Callable[..., BudgetPolicyEngine]


async def spend(
    engine: BudgetPolicyEngine,
    principal: Principal,
    request: ChatCompletionRequest,
    estimate: str,
    cost: str,
    request_id: str,
) -> None:
    reservation = await engine.reserve(principal, request, Decimal(estimate))
    await engine.settle(
        reservation, CostRecord(request_id=request_id, model=request.model, cost_usd=Decimal(cost))
    )


def test_the_engine_implements_the_shared_contract(make_engine: Engine) -> None:
    assert isinstance(make_engine([]), BudgetPolicy)


async def test_hard_limit_blocks_with_a_429_naming_the_budget(
    make_engine: Engine, make_chat: Any, alice: Principal, alerts: Any
) -> None:
    engine = make_engine([{"scope": "team", "period": "monthly", "limit_usd": "1.00"}])
    engine.add_alert_callback(alerts)
    await spend(engine, alice, make_chat(), "0.60", "0.60", "r1")
    with pytest.raises(BudgetExceeded) as caught:
        await engine.reserve(alice, make_chat(), Decimal("0.50"))
    status, body, _ = to_http(caught.value)
    assert status == 429
    assert body["error"]["type"] == "budget_exceeded"
    assert "team-monthly-usd" in caught.value.message and "team:research" in caught.value.message
    assert ("blocked", "team-monthly-usd") in alerts.kinds()
    # what still fits goes through: exactly up to the limit
    await spend(engine, alice, make_chat(), "0.40", "0.40", "r2")
    with pytest.raises(BudgetExceeded):
        await engine.reserve(alice, make_chat(), Decimal("0.000000001"))


async def test_soft_limit_alerts_once_when_crossed_and_logs(
    make_engine: Engine,
    make_chat: Any,
    alice: Principal,
    alerts: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(
        [{"scope": "user", "period": "daily", "limit_usd": "1", "soft_ratio": 0.5}]
    )
    engine.add_alert_callback(alerts)
    with caplog.at_level(logging.WARNING, logger="genai_factory.cost.budgets"):
        await spend(engine, alice, make_chat(), "0.30", "0.30", "r1")
        assert alerts.events == []
        await spend(engine, alice, make_chat(), "0.30", "0.30", "r2")  # 0.60 >= 0.50
        await spend(engine, alice, make_chat(), "0.10", "0.10", "r3")  # still over: no new alert
    assert alerts.kinds() == [("soft_limit", "user-daily-usd")]
    event = alerts.events[0]
    assert event.scope == "user:alice" and event.used == Decimal("0.6")
    assert event.limit == Decimal(1) and event.window.startswith("d")
    assert any("soft_limit" in r.getMessage() for r in caplog.records)


async def test_a_soft_only_budget_never_blocks_but_reports_reaching_the_limit(
    make_engine: Engine, make_chat: Any, alice: Principal, alerts: Any
) -> None:
    engine = make_engine([{"scope": "org", "limit_usd": "1", "hard": False, "soft_ratio": None}])
    engine.add_alert_callback(alerts)
    for i in range(3):
        await spend(engine, alice, make_chat(), "0.45", "0.45", f"r{i}")
    assert alerts.kinds() == [("limit_reached", "org-monthly-usd")]
    (usage,) = await engine.usage(alice)
    assert usage.used == Decimal("1.35") and usage.ratio == pytest.approx(1.35)


async def test_downgrade_instead_of_blocking(
    make_engine: Engine, make_chat: Any, alice: Principal, alerts: Any
) -> None:
    engine = make_engine(
        [
            {"scope": "key", "limit_usd": "1", "downgrade_to": "small", "soft_ratio": None},
            {"scope": "key", "name": "key-ceiling", "limit_usd": "2"},
        ]
    )
    engine.add_alert_callback(alerts)
    first = await engine.reserve(alice, make_chat(), Decimal("0.90"))
    assert first.downgrade_to is None
    second = await engine.reserve(alice, make_chat(), Decimal("0.90"))
    assert second.downgrade_to == "small"
    # 1.80 of the 2.00 ceiling also crosses that budget's default soft ratio (0.8)
    assert alerts.kinds() == [("downgraded", "key-monthly-usd"), ("soft_limit", "key-ceiling")]
    assert alerts.events[0].downgrade_to == "small"
    # a hard budget beside it still blocks
    with pytest.raises(BudgetExceeded, match="key-ceiling"):
        await engine.reserve(alice, make_chat(), Decimal("0.90"))


async def test_per_request_limits_on_tokens_and_money(
    make_engine: Engine, make_chat: Any, alice: Principal, alerts: Any
) -> None:
    engine = make_engine(
        [
            {"scope": "request", "limit_tokens": 1000},
            {"scope": "request", "limit_usd": "0.01", "downgrade_to": "small", "soft_ratio": 0.5},
        ]
    )
    engine.add_alert_callback(alerts)
    # estimated from the price table: ~7 prompt tokens + 100 output tokens on "big"
    ok = await engine.reserve(alice, make_chat(max_tokens=100), Decimal(0))
    assert ok.downgrade_to is None and Decimal("0.003") < ok.amount_usd < Decimal("0.004")
    cheap_enough = await engine.reserve(alice, make_chat(max_tokens=200), Decimal(0))
    assert cheap_enough.downgrade_to is None
    assert ("soft_limit", "request-each-usd") in alerts.kinds()
    downgraded = await engine.reserve(alice, make_chat(max_tokens=900), Decimal(0))
    assert downgraded.downgrade_to == "small"
    with pytest.raises(BudgetExceeded) as caught:
        await engine.reserve(alice, make_chat(max_tokens=2000), Decimal(0))
    assert caught.value.code == "request_budget_exceeded"
    assert "1000 tokens" in caught.value.message


async def test_token_budgets_count_estimated_then_real_tokens(
    make_engine: Engine, make_chat: Any, alice: Principal
) -> None:
    engine = make_engine([{"scope": "user", "period": "daily", "limit_tokens": 500}])
    reservation = await engine.reserve(alice, make_chat(max_tokens=300), Decimal("0.01"))
    (held,) = await engine.usage(alice)
    assert 300 < held.used < 320  # prompt estimate + max_tokens
    await engine.settle(
        reservation,
        CostRecord(request_id="t1", model="big", input_tokens=7, output_tokens=43),
    )
    (settled,) = await engine.usage(alice)
    assert settled.used == 50 and settled.unit == "tokens"
    with pytest.raises(BudgetExceeded, match="tokens"):
        await engine.reserve(alice, make_chat(max_tokens=460), Decimal("0.01"))


async def test_every_scope_of_the_principal_counts_and_ids_select(
    make_engine: Engine, make_chat: Any, alice: Principal
) -> None:
    engine = make_engine(
        [
            {"scope": "key", "limit_usd": "10"},
            {"scope": "user", "limit_usd": "10"},
            {"scope": "team", "id": "research", "limit_usd": "10"},
            {"scope": "team", "id": "sales", "limit_usd": "10"},
            {"scope": "org", "limit_usd": "10"},
        ]
    )
    reservation = await engine.reserve(alice, make_chat(), Decimal("1"))
    assert reservation.scopes == ("key:k-1", "user:alice", "team:research", "org:acme")
    used = {u.budget: u.used for u in await engine.usage(alice)}
    assert used == {
        "key-monthly-usd": 1,
        "user-monthly-usd": 1,
        "team=research-monthly-usd": 1,
        "org-monthly-usd": 1,
    }
    bob = Principal(subject="bob", team_id="sales")
    assert [u.budget for u in await engine.usage(bob)] == ["team=sales-monthly-usd"]
    assert [u.used for u in await engine.usage(bob)] == [0]


async def test_settle_adjusts_to_the_real_cost_and_records_it(
    make_engine: Engine, make_chat: Any, alice: Principal, ledger: SQLiteSpendLedger
) -> None:
    engine = make_engine([{"scope": "team", "limit_usd": "5"}])
    reservation = await engine.reserve(alice, make_chat(), Decimal("2"))
    assert (await engine.usage(alice))[0].used == 2
    # no cost on the record: priced from the table (cached tokens at the cached rate)
    call = CostRecord(
        request_id="req-9",
        model="big",
        input_tokens=1000,
        cached_input_tokens=400,
        output_tokens=100,
    )
    await engine.settle(reservation, call)
    expected = Decimal("0.0110")  # 600*10 + 400*5 + 100*30 per 1M
    assert (await engine.usage(alice))[0].used == expected
    (stored,) = await ledger.records()
    assert stored.cost_usd == expected and stored.team_id == "research" and stored.key_id == "k-1"
    assert await ledger.total("org:acme") == expected
    # settling again changes nothing
    await engine.settle(reservation, call)
    assert (await engine.usage(alice))[0].used == expected
    assert len(await ledger.records()) == 1


async def test_release_gives_the_hold_back(
    make_engine: Engine, make_chat: Any, alice: Principal, ledger: SQLiteSpendLedger
) -> None:
    engine = make_engine([{"scope": "team", "limit_usd": "1"}])
    reservation = await engine.reserve(alice, make_chat(), Decimal("0.9"))
    with pytest.raises(BudgetExceeded):
        await engine.reserve(alice, make_chat(), Decimal("0.2"))
    await engine.release(reservation)
    await engine.release(reservation)  # twice is harmless
    assert (await engine.usage(alice))[0].used == 0
    await engine.reserve(alice, make_chat(), Decimal("0.9"))
    assert await ledger.records() == []


async def test_unsettled_reservations_expire_and_late_settles_still_count(
    make_engine: Engine, make_chat: Any, alice: Principal
) -> None:
    engine = make_engine([{"scope": "team", "limit_usd": "1"}])
    clock = [1_750_000_000.0]
    engine._clock = lambda: clock[0]
    engine.backend._clock = lambda: clock[0]  # type: ignore[attr-defined]
    crashed = await engine.reserve(alice, make_chat(), Decimal("0.9"))
    clock[0] += 301  # past the default 300 s TTL
    assert await engine.sweep() == 1
    assert (await engine.usage(alice))[0].used == 0
    # the caller comes back after all: its real cost is counted, not its estimate
    await engine.settle(
        crashed, CostRecord(request_id="late", model="big", cost_usd=Decimal("0.3"))
    )
    assert (await engine.usage(alice))[0].used == Decimal("0.3")


async def test_each_call_counts_in_the_window_of_its_own_moment(
    make_engine: Engine, make_chat: Any, alice: Principal
) -> None:
    """Windows and counter keys are remembered between calls; a call after midnight (or back
    before it, on a clock that steps back) must still land in its own day's counter."""
    engine = make_engine([{"scope": "team", "period": "daily", "limit_usd": "1"}])
    midnight = 1_750_032_000.0  # 2025-06-16T00:00:00Z
    clock = [midnight - 0.5]
    engine._clock = lambda: clock[0]
    engine.backend._clock = lambda: clock[0]  # type: ignore[attr-defined]
    await engine.reserve(alice, make_chat(), Decimal("0.6"))
    [before] = await engine.usage(alice)
    assert (before.window, before.used) == ("d2025-06-15", Decimal("0.6"))
    clock[0] = midnight  # the first instant of the next day
    await engine.reserve(alice, make_chat(), Decimal("0.6"))  # the old day's 0.6 no longer counts
    [after] = await engine.usage(alice)
    assert (after.window, after.used) == ("d2025-06-16", Decimal("0.6"))
    clock[0] = midnight - 1e-6
    [back] = await engine.usage(alice)
    assert (back.window, back.used) == ("d2025-06-15", Decimal("0.6"))
    with pytest.raises(BudgetExceeded):  # 0.6 + 0.6 > 1 within that day
        await engine.reserve(alice, make_chat(), Decimal("0.6"))


async def test_concurrent_reservations_in_one_process_never_overshoot(
    make_engine: Engine, make_chat: Any, alice: Principal, ledger: SQLiteSpendLedger
) -> None:
    engine = make_engine([{"scope": "team", "limit_usd": "1"}])

    async def attempt(i: int) -> bool:
        try:
            reservation = await engine.reserve(alice, make_chat(), Decimal("0.07"))
        except BudgetExceeded:
            return False
        await asyncio.sleep(0)
        await engine.settle(
            reservation, CostRecord(request_id=f"c{i}", model="big", cost_usd=Decimal("0.07"))
        )
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(40)))
    assert sum(results) == 14  # floor(1 / 0.07)
    assert await ledger.total("team:research") == Decimal("0.98")


async def test_a_restart_keeps_the_period_spend_from_the_ledger(
    make_engine: Engine, make_chat: Any, alice: Principal, ledger: SQLiteSpendLedger
) -> None:
    budgets = [{"scope": "team", "limit_usd": "1"}, {"scope": "team", "limit_tokens": 100}]
    first = make_engine(budgets)
    reservation = await first.reserve(alice, make_chat(max_tokens=10), Decimal("0.7"))
    await first.settle(
        reservation,
        CostRecord(
            request_id="before-restart", model="big", cost_usd=Decimal("0.7"), output_tokens=60
        ),
    )
    # an older month's spend does not count in this month's window
    await ledger.record(
        CostRecord(
            request_id="last-year",
            model="big",
            team_id="research",
            cost_usd=Decimal("5"),
            timestamp=datetime(2020, 1, 1, tzinfo=UTC),
        )
    )
    second = make_engine(budgets)  # a new process: empty in-process counters
    used = {u.unit: u.used for u in await second.usage(alice)}
    assert used == {"usd": Decimal("0.7"), "tokens": 60}
    with pytest.raises(BudgetExceeded):
        await second.reserve(alice, make_chat(max_tokens=10), Decimal("0.5"))


async def test_callback_failures_are_logged_not_raised(
    make_engine: Engine, make_chat: Any, alice: Principal, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine([{"scope": "team", "limit_usd": "1", "soft_ratio": 0.1}])

    async def broken(event: Any) -> None:
        raise RuntimeError("pager down")

    engine.add_alert_callback(broken)
    with caplog.at_level(logging.ERROR, logger="genai_factory.cost.budgets"):
        await engine.reserve(alice, make_chat(), Decimal("0.5"))
    assert any("pager down" in r.getMessage() for r in caplog.records)
    engine.remove_alert_callback(broken)


@pytest.mark.parametrize("bad", [Decimal(-1), Decimal("NaN"), 0.5])
async def test_a_bad_estimate_is_a_validation_error(
    make_engine: Engine, make_chat: Any, alice: Principal, bad: Any
) -> None:
    engine = make_engine([])
    with pytest.raises(ValidationError) as caught:
        await engine.reserve(alice, make_chat(), bad)
    assert caught.value.param == "estimate_usd"


async def test_without_a_ledger_nothing_is_recorded(
    make_engine: Engine, make_chat: Any, alice: Principal
) -> None:
    engine = make_engine([{"scope": "team", "limit_usd": "1"}], ledger=None, record_spend=False)
    assert engine.ledger is None
    await spend(engine, alice, make_chat(), "0.5", "0.25", "x")
    assert (await engine.usage(alice))[0].used == Decimal("0.25")
    assert await engine.recover() == 0
    assert await engine.backend.pending() == []


class FlakyLedger(SQLiteSpendLedger):
    """A ledger whose database is down for the first ``failures`` writes."""

    def __init__(self, path: Any, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    async def record(self, record: CostRecord) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ServiceUnavailable("spend ledger database unavailable")
        await super().record(record)


async def test_a_ledger_outage_during_settle_is_recovered_later(
    make_engine: Engine, make_chat: Any, alice: Principal, tmp_path: Any
) -> None:
    flaky = FlakyLedger(tmp_path / "flaky.sqlite3", failures=1)
    engine = make_engine([{"scope": "team", "limit_usd": "1"}], ledger=flaky)
    assert engine.estimate(make_chat()).model == "big"
    reservation = await engine.reserve(alice, make_chat(), Decimal("0.5"))
    with pytest.raises(ServiceUnavailable):
        await engine.settle(
            reservation, CostRecord(request_id="r1", model="big", cost_usd=Decimal("0.2"))
        )
    # the counters already have the real cost; the record waits in the outbox
    assert (await engine.usage(alice))[0].used == Decimal("0.2")
    assert len(await engine.backend.pending()) == 1
    assert await engine.recover() == 1
    assert await engine.recover() == 0
    assert await flaky.total("team:research") == Decimal("0.2")
    await flaky.close()


async def test_soft_hard_and_downgrade_behave_the_same_on_every_backend(
    make_engine: Engine, make_chat: Any, alice: Principal, alerts: Any, backend_factory: Any
) -> None:
    engine = make_engine(
        [
            {"scope": "team", "limit_usd": "1", "soft_ratio": 0.5},
            {"scope": "user", "limit_tokens": 10_000, "downgrade_to": "small", "soft_ratio": None},
            {"scope": "org", "limit_usd": "3", "hard": False, "soft_ratio": None},
        ],
        backend=backend_factory(),
    )
    engine.add_alert_callback(alerts)
    first = await engine.reserve(alice, make_chat(max_tokens=9000), Decimal("0.6"))
    await engine.settle(
        first,
        CostRecord(request_id="b1", model="big", cost_usd=Decimal("0.6"), output_tokens=8500),
    )
    second = await engine.reserve(alice, make_chat(max_tokens=2000), Decimal("0.3"))
    assert second.downgrade_to == "small"  # 8,500 settled + 2,007 held tokens > 10,000
    with pytest.raises(BudgetExceeded, match="team-monthly-usd"):
        await engine.reserve(alice, make_chat(), Decimal("0.2"))
    await engine.settle(
        second, CostRecord(request_id="b2", model="small", cost_usd=Decimal("0.1"), output_tokens=5)
    )
    assert alerts.kinds() == [
        ("soft_limit", "team-monthly-usd"),
        ("downgraded", "user-monthly-tokens"),
        ("blocked", "team-monthly-usd"),
    ]
    used = {u.budget: u.used for u in await engine.usage(alice)}
    assert used == {
        "team-monthly-usd": Decimal("0.7"),
        "user-monthly-tokens": 8505,
        "org-monthly-usd": Decimal("0.7"),
    }


# ---------------------------------------------------------------------- deferred ledger writes


class _CountingLedger(SQLiteSpendLedger):
    """A SQLite ledger that remembers each batch it was given, and can fail the first N."""

    def __init__(self, path: Path, fail: int = 0) -> None:
        super().__init__(path)
        self.batches: list[int] = []
        self.fail = fail

    async def record_many(self, records: Sequence[CostRecord]) -> int:
        if self.fail:
            self.fail -= 1
            raise ServiceUnavailable("ledger down")
        self.batches.append(len(records))
        return await super().record_many(records)


class _PlainLedger:
    """Only the SpendLedger contract's ``record``: the engine must not need more."""

    def __init__(self) -> None:
        self.records: dict[str, CostRecord] = {}

    async def record(self, record: CostRecord) -> None:
        self.records.setdefault(record.request_id, record)


async def test_with_redis_the_ledger_is_written_after_settle_returns_in_batches(
    redis_url: str, redis_namespace: str, tmp_path: Path, make_chat: Any, alice: Principal
) -> None:
    ledger = _CountingLedger(tmp_path / "deferred.sqlite3")
    engine = BudgetPolicyEngine(
        budgets=[{"scope": "team", "period": "total", "limit_usd": "100"}],
        backend=RedisBudgetBackend(redis_url, key_prefix=redis_namespace),
        ledger=ledger,
    )
    assert engine._deferred  # auto: Redis keeps the outbox outside this process

    async def one(i: int) -> None:
        reservation = await engine.reserve(alice, make_chat(), Decimal("0.02"))
        await engine.settle(reservation, record(f"d-{i}", "0.01"))

    await asyncio.gather(*(one(i) for i in range(40)))
    # settle has returned for all 40: each record is in the ledger or still in the outbox
    pending = {rid for rid, _ in await engine.backend.pending()}
    stored = {r.request_id for r in await ledger.records()}
    assert len(stored) + len(pending) >= 40
    await engine.flush()
    assert await engine.backend.pending() == []
    assert await ledger.total("team:research") == Decimal("0.40")
    assert len(await ledger.records()) == 40
    assert sum(ledger.batches) == 40
    assert len(ledger.batches) < 40  # settles that queued up during a write shared one commit
    await engine.close()


async def test_a_failed_deferred_write_is_retried_from_the_outbox(
    redis_url: str, redis_namespace: str, tmp_path: Path, make_chat: Any, alice: Principal
) -> None:
    ledger = _CountingLedger(tmp_path / "flaky.sqlite3", fail=1)
    engine = BudgetPolicyEngine(
        budgets=[{"scope": "team", "period": "total", "limit_usd": "100"}],
        backend=RedisBudgetBackend(redis_url, key_prefix=redis_namespace),
        ledger=ledger,
        ledger_write="deferred",
        flush_batch=1,
    )
    reservation = await engine.reserve(alice, make_chat(), Decimal("0.02"))
    await engine.settle(reservation, record("f-1", "0.015"))  # the write fails in the background
    await engine.flush()  # the retry (through recover) writes it
    assert await ledger.total("team:research") == Decimal("0.015")
    assert await engine.backend.pending() == []
    await engine.close()


async def test_flush_and_a_full_batch_do_not_wait_out_the_interval(
    redis_url: str, redis_namespace: str, tmp_path: Path, make_chat: Any, alice: Principal
) -> None:
    ledger = _CountingLedger(tmp_path / "prompt.sqlite3")
    engine = BudgetPolicyEngine(
        budgets=[{"scope": "team", "period": "total", "limit_usd": "100"}],
        backend=RedisBudgetBackend(redis_url, key_prefix=redis_namespace),
        ledger=ledger,
        ledger_write="deferred",
        flush_batch=3,
        flush_interval_s=60,  # the longest allowed: a write that waited for it fails the test
    )

    async def settle(name: str) -> None:
        reservation = await engine.reserve(alice, make_chat(), Decimal("0.02"))
        await engine.settle(reservation, record(name, "0.01"))

    await settle("w-0")  # one record: the flusher waits for more
    await asyncio.wait_for(engine.flush(), timeout=5)  # flush() wakes it
    assert ledger.batches == [1]
    for i in range(1, 4):  # three records fill a batch: written without flush()
        await settle(f"w-{i}")
    for _ in range(100):
        if sum(ledger.batches) == 4:
            break
        await asyncio.sleep(0.05)
    assert ledger.batches == [1, 3]
    assert await engine.backend.pending() == []
    await asyncio.wait_for(engine.close(), timeout=5)


async def test_close_writes_what_is_queued_even_with_a_plain_ledger(
    redis_url: str, redis_namespace: str, make_chat: Any, alice: Principal
) -> None:
    plain = _PlainLedger()
    engine = BudgetPolicyEngine(
        budgets=[{"scope": "team", "period": "total", "limit_usd": "100"}],
        backend=RedisBudgetBackend(redis_url, key_prefix=redis_namespace),
        ledger=plain,  # type: ignore[arg-type]
    )
    for i in range(3):
        reservation = await engine.reserve(alice, make_chat(), Decimal("0.02"))
        await engine.settle(reservation, record(f"p-{i}", "0.01"))
    await engine.close()
    assert sorted(plain.records) == ["p-0", "p-1", "p-2"]


async def test_sync_ledger_writes_finish_before_settle_returns(
    redis_url: str, redis_namespace: str, tmp_path: Path, make_chat: Any, alice: Principal
) -> None:
    ledger = SQLiteSpendLedger(tmp_path / "sync.sqlite3")
    engine = BudgetPolicyEngine(
        budgets=[{"scope": "team", "period": "total", "limit_usd": "100"}],
        backend=RedisBudgetBackend(redis_url, key_prefix=redis_namespace),
        ledger=ledger,
        ledger_write="sync",
    )
    reservation = await engine.reserve(alice, make_chat(), Decimal("0.02"))
    await engine.settle(reservation, record("s-1", "0.01"))
    assert [r.request_id for r in await ledger.records()] == ["s-1"]
    assert await engine.backend.pending() == []
    await engine.close()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"ledger_write": "later"}, "ledger_write"),
        ({"flush_batch": 0}, "flush_batch"),
        ({"flush_interval_s": -1}, "flush_interval_s"),
        ({"ledger_write": "deferred"}, "ledger_write"),  # in-process outbox dies with us
    ],
)
def test_ledger_write_settings_are_checked(params: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        BudgetPolicyEngine(budgets=[], record_spend=False, **params)
    assert caught.value.param == field
