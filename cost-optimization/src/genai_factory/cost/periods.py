"""Budget periods: calendar windows in UTC that every timestamp falls into exactly once.

``daily`` runs from 00:00 UTC to the next 00:00 UTC, ``monthly`` from the first of the month to
the first of the next, ``total`` forever. A window's ``key`` names it in counters and ledgers.

Example:
    >>> from datetime import UTC, datetime
    >>> from genai_factory.cost.periods import period_window
    >>> w = period_window("monthly", datetime(2025, 2, 14, 23, 59, tzinfo=UTC))
    >>> w.key, w.start.isoformat(), w.end.isoformat()
    ('m2025-02', '2025-02-01T00:00:00+00:00', '2025-03-01T00:00:00+00:00')
    >>> period_window("daily", 0.0).key
    'd1970-01-01'
    >>> period_window("total", 1e9).end is None
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal, get_args

__all__ = ["PERIODS", "Period", "PeriodWindow", "period_window"]

Period = Literal["daily", "monthly", "total"]
PERIODS: tuple[Period, ...] = get_args(Period)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class PeriodWindow:
    """One window of a period: ``start <= t < end`` (``end`` is None for ``total``)."""

    period: Period
    key: str
    start: datetime
    end: datetime | None

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment and (self.end is None or moment < self.end)

    @property
    def start_epoch_s(self) -> float:
        return (self.start - _EPOCH).total_seconds()

    @property
    def end_epoch_s(self) -> float | None:
        return None if self.end is None else (self.end - _EPOCH).total_seconds()


def _as_utc(moment: datetime | float) -> datetime:
    if isinstance(moment, datetime):
        if moment.tzinfo is None:
            raise ValueError("a naive datetime has no time zone; pass an aware one (UTC)")
        return moment.astimezone(UTC)
    if not math.isfinite(moment):
        raise ValueError(f"not a timestamp: {moment!r}")
    # floor to whole microseconds (exactly, via Decimal) so the moment never lands in a later
    # window than the float says; timedelta arithmetic also handles negative epochs
    micros = math.floor(Decimal(moment) * 1_000_000)
    return _EPOCH + timedelta(microseconds=micros)


def period_window(period: Period, moment: datetime | float) -> PeriodWindow:
    """The window of ``period`` that ``moment`` (an aware datetime or epoch seconds) falls in."""
    when = _as_utc(moment)
    if period == "daily":
        start = datetime(when.year, when.month, when.day, tzinfo=UTC)
        try:
            end: datetime | None = start + timedelta(days=1)
        except OverflowError:  # 9999-12-31, the last day a datetime can hold
            end = None
        return PeriodWindow(
            period, f"d{start.year:04d}-{start.month:02d}-{start.day:02d}", start, end
        )
    if period == "monthly":
        start = datetime(when.year, when.month, 1, tzinfo=UTC)
        if when.month == 12:
            end = None if when.year == 9999 else datetime(when.year + 1, 1, 1, tzinfo=UTC)
        else:
            end = datetime(when.year, when.month + 1, 1, tzinfo=UTC)
        return PeriodWindow(period, f"m{start.year:04d}-{start.month:02d}", start, end)
    if period == "total":
        return PeriodWindow(period, "total", datetime.min.replace(tzinfo=UTC), None)
    raise ValueError(f"unknown period {period!r}; expected one of {', '.join(PERIODS)}")
