"""A separate process that spends against a shared budget (Redis counters, SQLite ledger).

Started by test_multiprocess.py as ``python budget_worker.py '<json config>'``. It prints one line
per event, flushed at once, so the test can kill it at a known point:

- ``ready``: engine built; it then waits for a token on the Redis list ``<prefix>go``;
- ``reserved <request id>``: a reservation is held;
- ``settling <request id>``: the counters are settled, the ledger write is about to happen (with
  deferred ledger writes it comes after ``ack``);
- ``ack <request id>``: ``settle`` returned (the spend is acknowledged);
- ``blocked <request id>``: BudgetExceeded;
- ``done <json summary>``.

Modes: ``race`` (waves of concurrent calls until a whole wave is blocked), ``loop`` (one call
after another, forever), ``hang-after-reserve`` and ``hang-mid-settle`` (stop at that point).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import redis.asyncio as aioredis

from genai_factory.cost.budgets import BudgetPolicyEngine
from genai_factory.cost.ledger import SQLiteSpendLedger
from genai_factory.cost.redis_backend import RedisBudgetBackend
from genai_factory.shared.errors import BudgetExceeded
from genai_factory.shared.models import ChatCompletionRequest, CostRecord, Principal

REQUEST = ChatCompletionRequest(
    model="m", max_tokens=16, messages=[{"role": "user", "content": "count to three"}]
)


def say(*parts: str) -> None:
    print(*parts, flush=True)


class HangingLedger(SQLiteSpendLedger):
    """Stops for good right before the ledger write: the moment between counters and ledger."""

    async def record(self, record: CostRecord) -> None:
        say("settling", record.request_id)
        await asyncio.sleep(3600)

    async def record_many(self, records: Sequence[CostRecord]) -> int:  # deferred writes
        for record in records:
            say("settling", record.request_id)
        await asyncio.sleep(3600)
        return 0


async def one_call(
    engine: BudgetPolicyEngine, principal: Principal, request_id: str, config: dict[str, Any]
) -> bool:
    estimate = Decimal(config["estimate_usd"])
    try:
        reservation = await engine.reserve(principal, REQUEST, estimate)
    except BudgetExceeded:
        say("blocked", request_id)
        return False
    say("reserved", request_id)
    if config["mode"] == "hang-after-reserve":
        await asyncio.sleep(3600)
    await asyncio.sleep(random.uniform(0, config.get("think_s", 0.0)))  # the "model call"
    if config.get("actual_ratio_min") is not None:
        ratio = Decimal(str(round(random.uniform(config["actual_ratio_min"], 1.0), 3)))
        cost = (estimate * ratio).quantize(Decimal("0.000001"))
    else:
        cost = estimate
    record = CostRecord(
        request_id=request_id, model="m", input_tokens=10, output_tokens=5, cost_usd=cost
    )
    await engine.settle(reservation, record)
    say("ack", request_id)
    return True


async def main(config: dict[str, Any]) -> None:
    ledger_class = HangingLedger if config["mode"] == "hang-mid-settle" else SQLiteSpendLedger
    engine = BudgetPolicyEngine(
        budgets=[{"scope": "team", "period": "total", "limit_usd": config["limit_usd"]}],
        backend=RedisBudgetBackend(
            config["redis_url"],
            key_prefix=config["prefix"],
            reservation_ttl_s=config.get("ttl_s", 30.0),
            keep_s=60.0,
        ),
        ledger=ledger_class(config["ledger_path"]),
        ledger_write=config.get("ledger_write", "auto"),
    )
    principal = Principal(subject=config["worker"], team_id="shared-team")
    client = aioredis.Redis.from_url(config["redis_url"])
    # warm up (outbox recovery, counter seeding, script loading) so the race starts even
    await engine.recover()
    await engine.usage(principal)
    say("ready")
    await client.blpop([config["prefix"] + "go"], timeout=60)  # type: ignore[arg-type]
    await client.aclose()
    worker = config["worker"]
    calls = 0
    if config["mode"] == "race":
        while True:
            ids = [f"{worker}-{calls + i}" for i in range(config["concurrency"])]
            calls += len(ids)
            results = await asyncio.gather(*(one_call(engine, principal, i, config) for i in ids))
            if not any(results):
                break
    else:
        while config["mode"] == "loop" or calls == 0:
            await one_call(engine, principal, f"{worker}-{calls}", config)
            calls += 1
    await engine.close()
    say("done", json.dumps({"calls": calls}))


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
