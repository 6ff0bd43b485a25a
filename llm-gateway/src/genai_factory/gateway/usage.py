"""Usage and spend: per-token prices to cost, and in-memory counters (the SpendLedger contract).

Every answered request becomes a :class:`~genai_factory.shared.models.CostRecord`; the built-in
:class:`UsageLedger` keeps running totals per scope (``org:acme``, ``team:x``, ``user:u``,
``key:k``, ``model:m``, ``deployment:d``) and a bounded window of recent records for "since"
queries. A persistent ledger (SQLite/PostgreSQL, cost-optimization module) plugs into the same
contract.

Example:
    >>> import asyncio
    >>> from decimal import Decimal
    >>> from genai_factory.shared.models import CostRecord
    >>> ledger = UsageLedger()
    >>> asyncio.run(ledger.record(CostRecord(request_id="r1", model="m", org_id="acme",
    ...     input_tokens=10, output_tokens=5, cost_usd=Decimal("0.002"))))
    >>> asyncio.run(ledger.total("org:acme")), ledger.counters("model:m")["output_tokens"]
    (Decimal('0.002'), 5)
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any

from genai_factory.shared.models import CostRecord

__all__ = ["UsageLedger", "cost_of"]

_PER_TOKEN = Decimal(1) / Decimal(1_000_000)
_ZERO = Decimal(0).quantize(Decimal("1e-12"))


def cost_of(
    input_cost_per_mtok: float, output_cost_per_mtok: float, prompt: int, completion: int
) -> Decimal:
    """USD for ``prompt`` + ``completion`` tokens at per-million-token prices."""
    if not input_cost_per_mtok and not output_cost_per_mtok:  # a free (local) deployment
        return _ZERO
    total = Decimal(str(input_cost_per_mtok)) * prompt + Decimal(str(output_cost_per_mtok)) * (
        completion
    )
    return (total * _PER_TOKEN).quantize(Decimal("1e-12"))


def scopes_of(record: CostRecord) -> list[str]:
    pairs = (
        ("org", record.org_id),
        ("team", record.team_id),
        ("user", record.user_id),
        ("key", record.key_id),
        ("model", record.model),
        ("deployment", record.deployment),
    )
    return ["all"] + [f"{name}:{value}" for name, value in pairs if value]


class UsageLedger:
    """Running totals per scope, in memory.

    Args:
        keep_records: how many recent records to keep for ``total(scope, since)``.
    """

    def __init__(self, keep_records: int = 10_000) -> None:
        self.keep_records = keep_records
        self._records: deque[CostRecord] = deque(maxlen=keep_records)
        self._totals: dict[str, dict[str, Any]] = {}

    async def record(self, record: CostRecord) -> None:
        self._records.append(record)
        for scope in scopes_of(record):
            totals = self._totals.setdefault(
                scope,
                {
                    "requests": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_hits": 0,
                    "cost_usd": Decimal(0),
                },
            )
            totals["requests"] += 1
            totals["input_tokens"] += record.input_tokens
            totals["output_tokens"] += record.output_tokens
            totals["cache_hits"] += int(record.cache_hit)
            totals["cost_usd"] += record.cost_usd

    async def total(self, scope: str, since_epoch_s: float | None = None) -> Decimal:
        if since_epoch_s is None:
            totals = self._totals.get(scope)
            return Decimal(0) if totals is None else Decimal(totals["cost_usd"])
        return sum(
            (
                r.cost_usd
                for r in self._records
                if r.timestamp.timestamp() >= since_epoch_s and scope in scopes_of(r)
            ),
            Decimal(0),
        )

    def counters(self, scope: str) -> dict[str, Any]:
        """Requests, tokens, cache hits and cost for ``scope`` (zeros when unseen)."""
        totals = self._totals.get(scope)
        if totals is None:
            return {
                "requests": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cache_hits": 0,
                "cost_usd": Decimal(0),
            }
        return dict(totals)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        return {
            scope: {**totals, "cost_usd": str(totals["cost_usd"])}
            for scope, totals in self._totals.items()
        }
