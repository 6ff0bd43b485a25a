"""Period bucketing: every moment falls in exactly one calendar window (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genai_factory.cost.periods import PERIODS, period_window

moments = st.datetimes(
    min_value=datetime(1, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59, 999999),
    timezones=st.just(UTC),
)
offsets = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
)


@given(moment=moments, period=st.sampled_from(["daily", "monthly"]))
def test_each_moment_lies_in_its_window_and_windows_tile_time(
    moment: datetime, period: str
) -> None:
    window = period_window(period, moment)  # type: ignore[arg-type]
    assert window.contains(moment)
    assert window.start <= moment
    assert window.end is None or moment < window.end
    # the window's own start maps to the same window: its key names it uniquely
    assert period_window(period, window.start) == window  # type: ignore[arg-type]
    # the instant before the start is in the previous window, the end starts the next one
    if window.start > datetime(1, 1, 2, tzinfo=UTC):
        before = period_window(period, window.start - timedelta(microseconds=1))  # type: ignore[arg-type]
        assert before.end == window.start and before.key < window.key
    if window.end is not None:
        after = period_window(period, window.end)  # type: ignore[arg-type]
        assert after.start == window.end and after.key > window.key


@given(moment=moments, tz=offsets)
def test_windows_are_utc_whatever_zone_the_moment_is_written_in(
    moment: datetime, tz: timezone
) -> None:
    try:
        local = moment.astimezone(tz)
    except OverflowError:
        return
    for period in PERIODS:
        assert period_window(period, local) == period_window(period, moment)


@given(epoch_s=st.floats(min_value=-62_135_596_800, max_value=253_402_300_799, allow_nan=False))
def test_epoch_seconds_map_to_exactly_one_window(epoch_s: float) -> None:
    for period in ("daily", "monthly"):
        window = period_window(period, epoch_s)  # type: ignore[arg-type]
        assert window.start_epoch_s <= epoch_s
        assert window.end_epoch_s is None or epoch_s < window.end_epoch_s


def test_known_windows_and_bad_input() -> None:
    leap = period_window("daily", datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC))
    assert leap.key == "d2024-02-29" and leap.end == datetime(2024, 3, 1, tzinfo=UTC)
    december = period_window("monthly", datetime(2024, 12, 31, 12, tzinfo=UTC))
    assert december.end == datetime(2025, 1, 1, tzinfo=UTC)
    assert (
        period_window("total", 0).key == "total" and period_window("total", 0).end_epoch_s is None
    )
    assert period_window("daily", -0.5).key == "d1969-12-31"
    last_day = datetime(9999, 12, 31, 12, tzinfo=UTC)  # the last window a datetime can end
    assert period_window("daily", last_day).end is None
    assert period_window("monthly", last_day).end is None
    with pytest.raises(ValueError, match="naive"):
        period_window("daily", datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="not a timestamp"):
        period_window("daily", float("inf"))
    with pytest.raises(ValueError, match="unknown period"):
        period_window("weekly", 0)  # type: ignore[arg-type]
