"""Rate limiting: token bucket and sliding window, requests and tokens, per key/user/team/org.

The in-process limiters here implement the shared ``RateLimiter`` contract (``acquire(key,
cost)``); :mod:`genai_factory.gateway.redis_ratelimit` has the same two algorithms as atomic Lua
scripts for gateways running as several replicas. :class:`RateLimitRule` ties a limiter to a
scope (whose key: the API key, user, team, org, or everyone) and a unit (requests or tokens);
:class:`Admission` applies every rule to a request and answers 429 with Retry-After and the
``x-ratelimit-*`` headers.

Example:
    >>> import asyncio
    >>> limiter = SlidingWindowLimiter(limit=2, window_s=60)
    >>> async def three():
    ...     return [(await limiter.acquire("k")).allowed for _ in range(3)]
    >>> asyncio.run(three())
    [True, True, False]
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from genai_factory.shared.contracts import RateDecision, RateLimiter
from genai_factory.shared.errors import RateLimited
from genai_factory.shared.models import Principal

__all__ = [
    "Admission",
    "RateLimitExceeded",
    "RateLimitRule",
    "SlidingWindowLimiter",
    "TokenBucketLimiter",
    "rate_limit_headers",
]

Scope = Literal["key", "user", "team", "org", "global"]
Unit = Literal["requests", "tokens"]
V = TypeVar("V")


class _BoundedKeys(Generic[V]):
    """Per-key state with the least recently used keys dropped beyond ``max_keys``."""

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._items: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.max_keys:
            self._items.popitem(last=False)


class TokenBucketLimiter:
    """``limit`` units per ``period_s``, refilled continuously, bursts up to ``limit``.

    Args:
        limit: the bucket size and the refill per period.
        period_s: the refill period (60 for per-minute limits).
        max_keys: keys kept in memory (least recently used dropped: they start full again).
        clock: a monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        limit: int,
        period_s: float = 60.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 1 or period_s <= 0:
            raise ValueError("limit must be >= 1 and period_s > 0")
        self.limit = limit
        self.period_s = period_s
        self.max_keys = max_keys
        self._clock = clock
        self._rate = limit / period_s
        self._buckets: _BoundedKeys[list[float]] = _BoundedKeys(max_keys)

    async def acquire(self, key: str, cost: int = 1) -> RateDecision:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = [float(self.limit), now]
            self._buckets.put(key, bucket)
        tokens = min(float(self.limit), bucket[0] + (now - bucket[1]) * self._rate)
        bucket[1] = now
        allowed = tokens >= cost
        if allowed:
            tokens -= cost
        bucket[0] = tokens
        return RateDecision(
            allowed=allowed,
            limit=self.limit,
            remaining=max(0, math.floor(tokens)),
            reset_after_s=(self.limit - tokens) / self._rate,
            retry_after_s=None if allowed else (cost - tokens) / self._rate,
            scope=key,
        )


class _Window:
    """One key's counts: ``[slot, units]`` oldest first, and their running total."""

    __slots__ = ("slots", "total")

    def __init__(self) -> None:
        self.slots: deque[list[int]] = deque()
        self.total = 0


class SlidingWindowLimiter:
    """At most ``limit`` units in any ``window_s``, counted in ``slots`` sub-windows.

    The window slides one slot at a time, so it is exact to ``window_s / slots``; the Redis
    version counts the same way, so both backends admit the same requests. A running total per
    key makes each decision cost O(slots expired), not O(slots).
    """

    def __init__(
        self,
        limit: int,
        window_s: float = 60.0,
        slots: int = 60,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if limit < 1 or window_s <= 0 or slots < 1:
            raise ValueError("limit and slots must be >= 1 and window_s > 0")
        self.limit = limit
        self.window_s = window_s
        self.slots = slots
        self.max_keys = max_keys
        self._clock = clock
        self._slot_s = window_s / slots
        self._windows: _BoundedKeys[_Window] = _BoundedKeys(max_keys)

    async def acquire(self, key: str, cost: int = 1) -> RateDecision:
        now = self._clock()
        current = math.floor(now / self._slot_s)
        oldest = current - self.slots + 1
        window = self._windows.get(key)
        if window is None:
            window = _Window()
            self._windows.put(key, window)
        counts = window.slots
        while counts and counts[0][0] < oldest:
            window.total -= counts.popleft()[1]
        used = window.total
        allowed = used + cost <= self.limit
        if allowed:
            if counts and counts[-1][0] >= current:  # this slot (or a clock that stepped back)
                counts[-1][1] += cost
            else:
                counts.append([current, cost])
            window.total += cost
            used += cost
        return RateDecision(
            allowed=allowed,
            limit=self.limit,
            remaining=max(0, self.limit - used),
            reset_after_s=self._expiry(counts[0][0] if counts else current, now),
            retry_after_s=None if allowed else self._retry_after(counts, used, cost, now),
            scope=key,
        )

    def _expiry(self, slot: int, now: float) -> float:
        return max(0.0, (slot + self.slots) * self._slot_s - now)

    def _retry_after(self, counts: deque[list[int]], used: int, cost: int, now: float) -> float:
        if cost > self.limit:
            return self.window_s
        freed = 0
        for slot, units in counts:  # oldest first
            freed += units
            if used - freed + cost <= self.limit:
                return self._expiry(slot, now)
        return self.window_s


@dataclass(frozen=True, slots=True)
class RateLimitRule:
    """One limit: whose (``scope``), what (``unit``) and the limiter that counts it."""

    scope: Scope
    unit: Unit
    limiter: RateLimiter

    def key_for(self, principal: Principal) -> str | None:
        """The counter key for ``principal`` (None: this rule does not apply to it)."""
        if self.scope == "global":
            value: str | None = "all"
        elif self.scope == "key":
            value = principal.key_id or principal.subject
        elif self.scope == "user":
            value = principal.user_id
        elif self.scope == "team":
            value = principal.team_id
        else:
            value = principal.org_id
        return None if value is None else f"{self.scope}:{value}:{self.unit}"


def rate_limit_headers(decisions: Sequence[tuple[Unit, RateDecision]]) -> dict[str, str]:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``: the tightest rule per unit."""
    headers: dict[str, str] = {}
    for unit in ("requests", "tokens"):
        mine = [d for u, d in decisions if u == unit]
        if not mine:
            continue
        tightest = min(mine, key=lambda d: (d.remaining, -d.reset_after_s))
        headers[f"x-ratelimit-limit-{unit}"] = str(tightest.limit)
        headers[f"x-ratelimit-remaining-{unit}"] = str(tightest.remaining)
        headers[f"x-ratelimit-reset-{unit}"] = f"{tightest.reset_after_s:.3f}s"
    return headers


class RateLimitExceeded(RateLimited):
    """429 carrying the ``x-ratelimit-*`` headers of the decision that refused the request."""

    def __init__(
        self, message: str, *, retry_after: float | None, decisions: list[tuple[Unit, RateDecision]]
    ) -> None:
        super().__init__(message, retry_after=retry_after, code="rate_limit_exceeded")
        self.decisions = decisions

    def headers(self) -> dict[str, str]:
        return {**rate_limit_headers(self.decisions), **super().headers()}


class Admission:
    """Applies every rate-limit rule to a request; raises RateLimitExceeded on the first refusal.

    Token rules are charged the request's token estimate up front: the prompt estimate plus the
    request's output cap (or a default cap), so a request never runs past its admission.
    """

    def __init__(self, rules: Sequence[RateLimitRule]) -> None:
        self.rules = list(rules)

    async def admit(self, principal: Principal, tokens: int) -> list[tuple[Unit, RateDecision]]:
        decisions: list[tuple[Unit, RateDecision]] = []
        for rule in self.rules:
            key = rule.key_for(principal)
            if key is None:
                continue
            decision = await rule.limiter.acquire(key, 1 if rule.unit == "requests" else tokens)
            decisions.append((rule.unit, decision))
            if not decision.allowed:
                raise RateLimitExceeded(
                    f"rate limit exceeded: {rule.unit} per {rule.scope}",
                    retry_after=decision.retry_after_s,
                    decisions=decisions,
                )
        return decisions
