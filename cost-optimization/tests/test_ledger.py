"""The spend ledger (SpendLedger contract) on SQLite and on real PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from genai_factory.cost.ledger import (
    _ROWS_PER_STATEMENT,
    PostgresSpendLedger,
    SQLiteSpendLedger,
    parse_scope,
)
from genai_factory.shared.contracts import SpendLedger
from genai_factory.shared.errors import ConfigError, ServiceUnavailable, ValidationError
from genai_factory.shared.models import CostRecord

JAN = datetime(2025, 1, 15, 12, tzinfo=UTC).timestamp()
FEB = datetime(2025, 2, 1, tzinfo=UTC).timestamp()


def call(request_id: str, cost: str, when: float, **fields: Any) -> CostRecord:
    return CostRecord(
        request_id=request_id,
        model=fields.pop("model", "big"),
        cost_usd=Decimal(cost),
        timestamp=datetime.fromtimestamp(when, UTC),
        **fields,
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def any_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    if request.param == "sqlite":
        ledger: Any = SQLiteSpendLedger(tmp_path / "spend.sqlite3")
    else:
        ledger = PostgresSpendLedger(request.getfixturevalue("postgres_schema_dsn"))
    yield ledger
    await ledger.close()


async def test_records_once_and_sums_exactly_by_scope_and_time(any_ledger: Any) -> None:
    assert isinstance(any_ledger, SpendLedger)
    records = [
        call("a", "0.000000000001", JAN, team_id="t1", org_id="o", user_id="u1", key_id="k1"),
        call("b", "1.100000000000", JAN + 60, team_id="t1", org_id="o", subject="s1"),
        call(
            "c",
            "2.5",
            FEB + 1,
            team_id="t2",
            org_id="o",
            model="small",
            provider="p",
            input_tokens=30,
            output_tokens=12,
            cached_input_tokens=10,
            tags={"app": "x"},
            cache_hit=True,
            route="/v1/chat/completions",
            deployment="d",
        ),
    ]
    for record in records:
        await any_ledger.record(record)
    assert await any_ledger.record_if_new(records[0]) is False  # same request id: ignored
    assert await any_ledger.total("all") == Decimal("3.600000000001")
    assert await any_ledger.total("team:t1") == Decimal("1.100000000001")
    assert await any_ledger.total("org:o", since_epoch_s=FEB) == Decimal("2.5")
    assert await any_ledger.total("user:u1") == Decimal("0.000000000001")
    assert await any_ledger.total("key:k1") == Decimal("0.000000000001")
    assert await any_ledger.total("subject:s1") == Decimal("1.1")
    assert await any_ledger.total("model:small") == Decimal("2.5")
    assert await any_ledger.total("team:nobody") == 0
    usage = await any_ledger.usage("provider:p", JAN, FEB + 2)
    assert (usage.input_tokens, usage.output_tokens, usage.tokens, usage.records) == (30, 12, 42, 1)
    january = await any_ledger.usage("org:o", until_epoch_s=FEB)
    assert january.records == 2
    stored = await any_ledger.records("org:o")
    assert [r.request_id for r in stored] == ["a", "b", "c"]
    assert stored[2] == records[2]  # every field survives the round trip
    assert [r.request_id for r in await any_ledger.records(since_epoch_s=FEB)] == ["c"]
    assert len(await any_ledger.records(limit=1)) == 1


@pytest.mark.parametrize("scope", ["", "team", "team:", "planet:x", "org-o"])
async def test_bad_scopes_and_bounds_are_validation_errors(any_ledger: Any, scope: str) -> None:
    with pytest.raises(ValidationError) as caught:
        await any_ledger.total(scope)
    assert caught.value.param == "scope"
    with pytest.raises(ValidationError):
        await any_ledger.total("all", since_epoch_s=float("nan"))


def test_scope_parsing() -> None:
    assert parse_scope("all") == (None, None) and parse_scope("*") == (None, None)
    assert parse_scope("team:a:b") == ("team_id", "a:b")


async def test_sqlite_commits_are_fsynced_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "folder" / "spend.sqlite3"
    ledger = SQLiteSpendLedger(path)
    await ledger.record(call("a", "1", JAN))
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM cost_records").fetchone()[0] == 1
    finally:
        conn.close()
    assert ledger._connection().execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    await ledger.close()


async def test_two_ledgers_on_one_file_share_records(tmp_path: Path) -> None:
    first, second = SQLiteSpendLedger(tmp_path / "s.db"), SQLiteSpendLedger(tmp_path / "s.db")
    await first.record(call("a", "1", JAN))
    await second.record(call("a", "1", JAN))
    await second.record(call("b", "2", JAN))
    assert await first.total("all") == 3
    await first.close()
    await second.close()


async def test_sqlite_sums_past_the_integer_range_exactly(tmp_path: Path) -> None:
    ledger = SQLiteSpendLedger(tmp_path / "big.db")
    # 9.2 million USD overflows a 64-bit count of pico-dollars; the sum falls back to Decimal
    for i in range(3):
        await ledger.record(call(f"r{i}", "4000000.000000000001", JAN))
    assert await ledger.total("all") == Decimal("12000000.000000000003")
    await ledger.close()


def test_ledger_config_errors_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as caught:
        SQLiteSpendLedger("x.db", busy_timeout_s=0)
    assert caught.value.param == "busy_timeout_s"
    with pytest.raises(ConfigError) as caught:
        PostgresSpendLedger()
    assert caught.value.param == "dsn"
    with pytest.raises(ConfigError) as caught:
        PostgresSpendLedger("postgresql://x", table="costs; DROP TABLE users")
    assert caught.value.param == "table"
    monkeypatch.delenv("GF_TEST_NO_SUCH_DSN", raising=False)
    with pytest.raises(ConfigError) as caught:
        PostgresSpendLedger(dsn_env="GF_TEST_NO_SUCH_DSN")
    assert caught.value.param == "dsn_env"


async def test_postgres_ledger_reads_its_dsn_from_the_environment(
    postgres_schema_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GF_TEST_COST_LEDGER_DSN", postgres_schema_dsn)
    ledger = PostgresSpendLedger(dsn_env="GF_TEST_COST_LEDGER_DSN", table="spend")
    await ledger.record(call("a", "0.5", JAN, org_id="o"))
    assert await ledger.total("org:o") == Decimal("0.5")
    await ledger.close()
    await ledger.close()  # closing twice is harmless


async def test_an_unreachable_database_is_a_503_without_the_dsn() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ledger = PostgresSpendLedger(
        f"postgresql://secret-user:hunter2@127.0.0.1:{port}/x", connect_timeout_s=1
    )
    for attempt in (ledger.record(call("a", "1", JAN)), ledger.total("all"), ledger.records()):
        with pytest.raises(ServiceUnavailable) as caught:
            await attempt
        assert "hunter2" not in str(caught.value) and caught.value.status == 503


async def test_a_batch_larger_than_one_statement_is_stored_once(tmp_path: Path) -> None:
    """The SQLite ledger inserts many rows per statement; a batch spanning several statements,
    with repeats inside it and of stored rows, keeps one row per request id."""
    ledger = SQLiteSpendLedger(tmp_path / "ledger.sqlite3")
    try:
        size = 3 * _ROWS_PER_STATEMENT + 5
        batch = [call(f"r{i}", "0.01", JAN + i, team_id="t1") for i in range(size)]
        assert await ledger.record_many(batch[:10]) == 10
        assert await ledger.record_many([*batch, *batch[:3]]) == size - 10
        assert await ledger.total("team:t1") == Decimal("0.01") * size
        stored = await ledger.records("team:t1", limit=10 * size)
        assert sorted(r.request_id for r in stored) == sorted(f"r{i}" for i in range(size))
    finally:
        await ledger.close()


async def test_record_many_writes_a_batch_once(any_ledger: Any) -> None:
    assert await any_ledger.record_many([]) == 0
    batch = [call(f"m{i}", "0.25", JAN + i, team_id="t1") for i in range(4)]
    assert await any_ledger.record_many(batch) == 4
    # a batch that repeats records (a recovery after a crash) adds only the new ones
    assert await any_ledger.record_many([*batch[2:], call("m9", "1", JAN, team_id="t1")]) == 1
    assert await any_ledger.total("team:t1") == Decimal("2.00")
    assert [r.request_id for r in await any_ledger.records("team:t1")] == [
        "m0",
        "m9",
        "m1",
        "m2",
        "m3",
    ]


async def test_a_large_batch_is_built_in_slices_that_let_other_tasks_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # rows are built on the event loop a slice at a time (a worker thread holding the GIL for
    # the whole batch would stall the loop): another task runs part-way through, and every
    # record lands
    import genai_factory.cost.ledger as ledger_module

    built = 0
    real = ledger_module._insert_row

    def counting(record: CostRecord) -> tuple[Any, ...]:
        nonlocal built
        built += 1
        return real(record)

    monkeypatch.setattr(ledger_module, "_insert_row", counting)
    ledger = SQLiteSpendLedger(tmp_path / "ledger.db")
    batch = [call(f"s{i}", "0.01", JAN + i, team_id="t1") for i in range(100)]
    seen: list[int] = []

    async def other() -> None:
        seen.append(built)

    stored, _ = await asyncio.gather(ledger.record_many(batch), other())
    assert stored == 100 and built == 100
    assert seen and 0 < seen[0] < 100
    assert await ledger.total("team:t1") == Decimal("1.00")
    await ledger.close()
