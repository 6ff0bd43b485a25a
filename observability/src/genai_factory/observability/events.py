"""Typed events (anomalies, drift) and the bus that delivers them to async handlers.

Example:
    >>> import asyncio
    >>> bus = EventBus()
    >>> seen = []
    >>> async def on_drift(event: DriftEvent) -> None:
    ...     seen.append(event.signal)
    >>> bus.subscribe(on_drift, DriftEvent)
    >>> asyncio.run(bus.publish(DriftEvent(monitor="m", signal="length", statistic="psi",
    ...                                    value=0.4, threshold=0.2)))
    1
    >>> seen
    ['length']
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = ["AnomalyEvent", "DriftEvent", "Event", "EventBus", "EventHandler"]

_log = logging.getLogger("genai_factory.observability.events")


@dataclass(frozen=True, slots=True)
class AnomalyEvent:
    """A point far from its series' robust baseline (``score`` in robust standard deviations)."""

    series: str
    value: float
    baseline: float
    scale: float
    score: float
    direction: Literal["high", "low"]
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    seasonal_hour: int | None = None


@dataclass(frozen=True, slots=True)
class DriftEvent:
    """Recent outputs differ from the baseline window by ``statistic`` beyond ``threshold``."""

    monitor: str
    signal: Literal["length", "refusal_rate", "embedding"]
    statistic: Literal["psi", "rate_delta", "cosine_shift"]
    value: float
    threshold: float
    baseline_size: int = 0
    window_size: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


Event = AnomalyEvent | DriftEvent
EventHandler = Callable[[Any], Awaitable[None]]


class EventBus:
    """Delivers each event to the handlers subscribed to its type, concurrently.

    A failing handler is logged and does not stop the others or the publisher.
    """

    def __init__(self) -> None:
        self._handlers: list[tuple[EventHandler, tuple[type, ...]]] = []

    def subscribe(self, handler: EventHandler, *kinds: type) -> None:
        """Call ``handler`` for events of ``kinds`` (every event type when none are given)."""
        self._handlers.append((handler, kinds or (AnomalyEvent, DriftEvent)))

    def unsubscribe(self, handler: EventHandler) -> None:
        self._handlers = [(h, k) for h, k in self._handlers if h is not handler]

    async def publish(self, event: Event) -> int:
        """Deliver ``event``; returns how many handlers received it without error."""
        targets = [handler for handler, kinds in self._handlers if isinstance(event, kinds)]
        results = await asyncio.gather(*(h(event) for h in targets), return_exceptions=True)
        ok = 0
        for handler, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                _log.warning(
                    "event handler %s failed: %s", getattr(handler, "__name__", handler), result
                )
            else:
                ok += 1
        return ok
