from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from genai_factory.cost.backends import BudgetBackend, InProcessBudgetBackend
from genai_factory.cost.budgets import BudgetEvent, BudgetPolicyEngine
from genai_factory.cost.ledger import SQLiteSpendLedger
from genai_factory.cost.redis_backend import RedisBudgetBackend
from genai_factory.shared.models import ChatCompletionRequest, CostRecord, Principal

PRICES = {
    "big": {"input": "10", "output": "30", "cached_input": "5"},
    "small": {"input": "0.15", "output": "0.60"},
}


def chat(
    model: str = "big", text: str = "hello there", max_tokens: int | None = 100
) -> ChatCompletionRequest:
    return ChatCompletionRequest(
        model=model, max_tokens=max_tokens, messages=[{"role": "user", "content": text}]
    )


def record(request_id: str, cost: str, **fields: Any) -> CostRecord:
    return CostRecord(
        request_id=request_id, model=fields.pop("model", "big"), cost_usd=Decimal(cost), **fields
    )


ALICE = Principal(subject="alice", user_id="alice", team_id="research", org_id="acme", key_id="k-1")


@pytest.fixture
def make_chat() -> Callable[..., ChatCompletionRequest]:
    return chat


@pytest.fixture
def make_record() -> Callable[..., CostRecord]:
    return record


@pytest.fixture
def alice() -> Principal:
    return ALICE


@pytest.fixture
def alerts() -> Alerts:
    return Alerts()


@pytest.fixture
def ledger(tmp_path: Path) -> SQLiteSpendLedger:
    return SQLiteSpendLedger(tmp_path / "ledger.sqlite3")


@pytest.fixture(params=["in-process", "redis"])
def backend_factory(
    request: pytest.FixtureRequest,
) -> Callable[..., BudgetBackend]:
    """Each backend, built by the same call (Redis ones isolated under the test's namespace)."""
    if request.param == "in-process":
        return lambda **kw: InProcessBudgetBackend(**kw)
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_namespace")
    return lambda **kw: RedisBudgetBackend(url, key_prefix=prefix, **kw)


class Alerts:
    """An async alert callback that remembers every event."""

    def __init__(self) -> None:
        self.events: list[BudgetEvent] = []

    async def __call__(self, event: BudgetEvent) -> None:
        self.events.append(event)

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.kind, e.budget) for e in self.events]


@pytest.fixture
async def make_engine(
    ledger: SQLiteSpendLedger,
) -> AsyncIterator[Callable[..., BudgetPolicyEngine]]:
    engines: list[BudgetPolicyEngine] = []

    def build(budgets: list[dict[str, Any]], **kw: Any) -> BudgetPolicyEngine:
        kw.setdefault("ledger", ledger)
        kw.setdefault("prices", PRICES)
        engine = BudgetPolicyEngine(budgets=budgets, **kw)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        await engine.backend.close()
    await ledger.close()
