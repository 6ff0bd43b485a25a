"""A circuit breaker per deployment: closed, open, half-open with a bounded number of probes.

Closed lets every call through and counts consecutive failures; at ``failure_threshold`` it
opens and refuses calls for ``cooldown_s``; then it lets ``half_open_probes`` calls through at
once: one success closes it, one failure opens it again for another cooldown.

Example:
    >>> now = [0.0]
    >>> breaker = CircuitBreaker(failure_threshold=2, cooldown_s=10, clock=lambda: now[0])
    >>> breaker.record_failure(); breaker.record_failure(); breaker.state
    'open'
    >>> breaker.try_acquire()
    False
    >>> now[0] = 10.0
    >>> breaker.state, breaker.try_acquire(), breaker.try_acquire()
    ('half_open', True, False)
    >>> breaker.record_success(); breaker.state
    'closed'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Counts a deployment's failures and keeps traffic off it while it is broken.

    Args:
        failure_threshold: consecutive failures that open the breaker.
        cooldown_s: how long it stays open before probing.
        half_open_probes: calls let through at once while half-open.
        clock: a monotonic clock in seconds (tests pass their own).
    """

    def __init__(
        self,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        half_open_probes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or half_open_probes < 1 or cooldown_s < 0:
            raise ValueError("failure_threshold and half_open_probes >= 1, cooldown_s >= 0")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.half_open_probes = half_open_probes
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self.times_opened = 0

    def to_params(self) -> dict[str, Any]:
        return {
            "failure_threshold": self.failure_threshold,
            "cooldown_s": self.cooldown_s,
            "half_open_probes": self.half_open_probes,
        }

    @property
    def state(self) -> BreakerState:
        if self._state == "open" and self._clock() - self._opened_at >= self.cooldown_s:
            self._state, self._probes = "half_open", 0
        return self._state

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when it would now)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def available(self) -> bool:
        """Would a call be let through now? (Does not take a probe slot.)"""
        state = self.state
        return state == "closed" or (state == "half_open" and self._probes < self.half_open_probes)

    def try_acquire(self) -> bool:
        """Let a call through (taking a probe slot when half-open), or refuse it."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and self._probes < self.half_open_probes:
            self._probes += 1
            return True
        return False

    def record_success(self) -> None:
        self._state, self._failures, self._probes = "closed", 0, 0

    def record_failure(self) -> None:
        state = self.state
        self._failures += 1
        if state == "half_open" or self._failures >= self.failure_threshold:
            self._open()

    def release(self) -> None:
        """A call ended without a verdict (e.g. the client went away): free its probe slot."""
        if self._state == "half_open" and self._probes > 0:
            self._probes -= 1

    def _open(self) -> None:
        self._state, self._opened_at, self._probes = "open", self._clock(), 0
        self.times_opened += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "consecutive_failures": self._failures,
            "times_opened": self.times_opened,
            "retry_in_s": round(self.retry_in_s(), 3),
        }
