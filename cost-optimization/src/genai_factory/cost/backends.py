"""Where budget counters live, and the atomic operations on them: reserve, settle, release.

A counter is one number per (budget, scope, period window): nano-dollars or tokens used so far,
reservations included. A reservation holds an amount on several counters at once; it is checked
against every hard limit and applied to all counters or none. Settling replaces the held amount
with the real one, releasing gives it back, and a reservation nobody settles or releases within
its TTL is released by the next operation (a crashed caller does not leak budget).

Settling also parks the spend record in an *outbox* until the ledger has it; ``pending()`` lists
what a crash left there so :meth:`BudgetPolicyEngine.recover` can finish the job.

This module holds the contract and the in-process backend (one asyncio lock); the Redis backend
(Lua scripts, exact across processes and replicas) is in :mod:`genai_factory.cost.redis_backend`.

Example:
    >>> import asyncio
    >>> from genai_factory.cost.backends import Hold, InProcessBudgetBackend
    >>> backend = InProcessBudgetBackend()
    >>> hold = Hold("team-budget|team:a|total", "usd", amount=60, limit=100, mode="hard")
    >>> asyncio.run(backend.reserve("r1", [hold])).ok
    True
    >>> asyncio.run(backend.reserve("r2", [hold])).blocked
    'team-budget|team:a|total'
    >>> asyncio.run(backend.settle("r1", usd_nano=25, tokens=0, fallback=[], payload="")).status
    'settled'
    >>> asyncio.run(backend.usage(["team-budget|team:a|total"]))
    {'team-budget|team:a|total': 25}
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from genai_factory.shared.errors import ConfigError, Conflict

__all__ = [
    "BudgetBackend",
    "CounterChange",
    "Hold",
    "InProcessBudgetBackend",
    "Mode",
    "ReserveOutcome",
    "SettleOutcome",
    "Unit",
]

Unit = Literal["usd", "tokens"]
# hard: block when the limit would be exceeded; downgrade: never block, report being over;
# soft: never block (alerts only)
Mode = Literal["hard", "downgrade", "soft"]
SettleStatus = Literal["settled", "late", "duplicate"]

DEFAULT_RESERVATION_TTL_S = 300.0
# how long a finished reservation is remembered, so a repeated settle is recognised as one
DEFAULT_KEEP_S = 7 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Hold:
    """An amount to hold on one counter (nano-USD or tokens), and that counter's limit."""

    counter: str
    unit: Unit
    amount: int
    limit: int
    mode: Mode = "hard"
    expire_at: int = 0  # epoch seconds after which the counter may be dropped; 0 = never


@dataclass(frozen=True, slots=True)
class CounterChange:
    """A counter's value before and after an operation (for threshold alerts)."""

    counter: str
    before: int
    after: int


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    """``ok`` and the changes made, or the first counter whose hard limit blocked the hold."""

    ok: bool
    changes: tuple[CounterChange, ...] = ()
    blocked: str | None = None
    blocked_used: int = 0


@dataclass(frozen=True, slots=True)
class SettleOutcome:
    """``settled`` (the hold became the real amount), ``late`` (the hold had expired or been
    released, so the real amount was added), or ``duplicate`` (settled before: nothing changed)."""

    status: SettleStatus
    changes: tuple[CounterChange, ...] = ()


@runtime_checkable
class BudgetBackend(Protocol):
    """Atomic budget counters. Every method is safe to call concurrently."""

    async def reserve(self, reservation_id: str, holds: Sequence[Hold]) -> ReserveOutcome: ...

    async def settle(
        self,
        reservation_id: str,
        *,
        usd_nano: int,
        tokens: int,
        fallback: Sequence[Hold],
        payload: str,
    ) -> SettleOutcome: ...

    async def release(self, reservation_id: str) -> bool: ...

    async def acknowledge(self, reservation_id: str) -> None: ...

    async def pending(self) -> list[tuple[str, str]]: ...

    async def usage(self, counters: Sequence[str]) -> dict[str, int]: ...

    async def seed(self, counter: str, amount: int, expire_at: int = 0) -> bool: ...

    async def sweep(self) -> int: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _Reservation:
    holds: list[Hold]
    deadline: float
    state: Literal["held", "settled", "released", "expired"] = "held"
    forget_at: float = 0.0


@dataclass(slots=True)
class _State:
    counters: dict[str, int] = field(default_factory=dict)
    counter_expiry: dict[str, int] = field(default_factory=dict)
    reservations: dict[str, _Reservation] = field(default_factory=dict)
    deadlines: list[tuple[float, str]] = field(default_factory=list)  # a heap
    outbox: dict[str, str] = field(default_factory=dict)


def _check_ttl(reservation_ttl_s: float, keep_s: float) -> None:
    if not reservation_ttl_s > 0:
        raise ConfigError("'reservation_ttl_s' must be positive", param="reservation_ttl_s")
    if not keep_s >= reservation_ttl_s:
        raise ConfigError("'keep_s' must be at least 'reservation_ttl_s'", param="keep_s")


class InProcessBudgetBackend:
    """Budget counters in this process's memory, made atomic by one asyncio lock.

    Exact for every task of one process. Counters start from the ledger when the engine seeds
    them, so a restart does not reset a month's spend; several processes need the Redis backend.
    """

    # The outbox is this process's memory: kill -9 loses it, so the engine writes the ledger
    # before settle returns.
    durable_outbox = False

    def __init__(
        self, reservation_ttl_s: float = DEFAULT_RESERVATION_TTL_S, keep_s: float = DEFAULT_KEEP_S
    ) -> None:
        _check_ttl(reservation_ttl_s, keep_s)
        self.reservation_ttl_s = reservation_ttl_s
        self.keep_s = keep_s
        self._lock = asyncio.Lock()
        self._state = _State()
        self._clock: Callable[[], float] = time.time

    # ------------------------------------------------------------------ helpers (lock held)

    def _value(self, counter: str, now: float) -> int:
        expiry = self._state.counter_expiry.get(counter, 0)
        if expiry and now >= expiry:
            self._state.counters.pop(counter, None)
            self._state.counter_expiry.pop(counter, None)
        return self._state.counters.get(counter, 0)

    def _alive(self, counter: str, now: float) -> bool:
        self._value(counter, now)  # drops the counter when its window is over
        return counter in self._state.counters

    def _add(self, hold: Hold, amount: int, now: float) -> CounterChange:
        before = self._value(hold.counter, now)
        self._state.counters[hold.counter] = before + amount
        if hold.expire_at:
            self._state.counter_expiry[hold.counter] = hold.expire_at
        return CounterChange(hold.counter, before, before + amount)

    def _give_back(self, reservation: _Reservation, now: float) -> None:
        for hold in reservation.holds:
            if self._alive(hold.counter, now):  # a dropped window stays dropped
                self._add(hold, -hold.amount, now)

    def _expire(self, now: float) -> int:
        released = 0
        state = self._state
        while state.deadlines and state.deadlines[0][0] <= now:
            _, reservation_id = heapq.heappop(state.deadlines)
            reservation = state.reservations.get(reservation_id)
            if reservation is None:
                continue
            if reservation.state == "held" and reservation.deadline <= now:
                self._give_back(reservation, now)
                reservation.state = "expired"
                reservation.forget_at = now + self.keep_s
                heapq.heappush(state.deadlines, (reservation.forget_at, reservation_id))
                released += 1
            elif reservation.state != "held" and reservation.forget_at <= now:
                del state.reservations[reservation_id]
        return released

    def _finish(
        self, reservation_id: str, reservation: _Reservation, state: str, now: float
    ) -> None:
        reservation.state = state  # type: ignore[assignment]
        reservation.forget_at = now + self.keep_s
        heapq.heappush(self._state.deadlines, (reservation.forget_at, reservation_id))

    # ------------------------------------------------------------------ the contract

    async def reserve(self, reservation_id: str, holds: Sequence[Hold]) -> ReserveOutcome:
        async with self._lock:
            now = self._clock()
            self._expire(now)
            if reservation_id in self._state.reservations:
                raise Conflict(
                    f"reservation id {reservation_id!r} is already in use", param="reservation_id"
                )
            for hold in holds:
                used = self._value(hold.counter, now)
                if hold.mode == "hard" and (used >= hold.limit or used + hold.amount > hold.limit):
                    return ReserveOutcome(False, blocked=hold.counter, blocked_used=used)
            changes = tuple(self._add(hold, hold.amount, now) for hold in holds)
            reservation = _Reservation(list(holds), now + self.reservation_ttl_s)
            self._state.reservations[reservation_id] = reservation
            heapq.heappush(self._state.deadlines, (reservation.deadline, reservation_id))
            return ReserveOutcome(True, changes)

    async def settle(
        self,
        reservation_id: str,
        *,
        usd_nano: int,
        tokens: int,
        fallback: Sequence[Hold],
        payload: str,
    ) -> SettleOutcome:
        async with self._lock:
            now = self._clock()
            self._expire(now)
            reservation = self._state.reservations.get(reservation_id)
            if reservation is not None and reservation.state == "settled":
                return SettleOutcome("duplicate")
            actual = {"usd": usd_nano, "tokens": tokens}
            changes: list[CounterChange] = []
            if reservation is None:
                status: SettleStatus = "late"
                reservation = _Reservation(list(fallback), now)
                self._state.reservations[reservation_id] = reservation
                for hold in fallback:
                    changes.append(self._add(hold, actual[hold.unit], now))
            else:
                status = "settled" if reservation.state == "held" else "late"
                for hold in reservation.holds:
                    if status == "settled" and not self._alive(hold.counter, now):
                        continue  # its window is over and dropped
                    held = hold.amount if status == "settled" else 0
                    changes.append(self._add(hold, actual[hold.unit] - held, now))
            self._finish(reservation_id, reservation, "settled", now)
            if payload:
                self._state.outbox[reservation_id] = payload
            return SettleOutcome(status, tuple(changes))

    async def release(self, reservation_id: str) -> bool:
        async with self._lock:
            now = self._clock()
            self._expire(now)
            reservation = self._state.reservations.get(reservation_id)
            if reservation is None or reservation.state != "held":
                return False
            self._give_back(reservation, now)
            self._finish(reservation_id, reservation, "released", now)
            return True

    async def acknowledge(self, reservation_id: str) -> None:
        async with self._lock:
            self._state.outbox.pop(reservation_id, None)

    async def acknowledge_many(self, reservation_ids: Sequence[str]) -> None:
        async with self._lock:
            for reservation_id in reservation_ids:
                self._state.outbox.pop(reservation_id, None)

    async def pending(self) -> list[tuple[str, str]]:
        async with self._lock:
            return list(self._state.outbox.items())

    async def usage(self, counters: Sequence[str]) -> dict[str, int]:
        async with self._lock:
            now = self._clock()
            self._expire(now)
            return {counter: self._value(counter, now) for counter in counters}

    async def seed(self, counter: str, amount: int, expire_at: int = 0) -> bool:
        async with self._lock:
            if self._alive(counter, self._clock()):
                return False
            self._state.counters[counter] = amount
            if expire_at:
                self._state.counter_expiry[counter] = expire_at
            return True

    async def sweep(self) -> int:
        async with self._lock:
            return self._expire(self._clock())

    async def close(self) -> None:
        return None
