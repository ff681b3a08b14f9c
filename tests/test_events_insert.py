"""The events insert's own SQLite time text (broker/store/events_insert.py) is exactly what the column type writes:
readers compare stored times as text, so one differing digit would misorder them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.store.events_insert import column_sqlite_text, sqlite_utc_text
from protocol.bounds import TIME_MAX, TIME_MIN

ZONES = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


# A property of correctness, not of speed: on a shared machine under a parallel suite, drawing the inputs has
# taken long enough to fail Hypothesis's too_slow health check.
@settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.datetimes(min_value=TIME_MIN.replace(tzinfo=None), max_value=TIME_MAX.replace(tzinfo=None)), ZONES)
def test_the_text_is_the_column_types_for_any_storable_time_in_any_zone(naive: datetime, zone: timezone) -> None:
    value = naive.replace(tzinfo=UTC).astimezone(zone)  # the same instant, told in another zone
    assert sqlite_utc_text(value) == column_sqlite_text(value)


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 7, 8, 0, tzinfo=timezone(timedelta(hours=8))),  # a zero fraction keeps its 6 digits
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime.fromisoformat("2026-12-07T12:00:00.5+08:00"),
    ],
)
def test_the_text_of_edge_times(value: datetime) -> None:
    assert sqlite_utc_text(value) == column_sqlite_text(value)
    assert len(sqlite_utc_text(value)) == len("2026-12-07 00:00:00.000000")


def test_a_naive_time_is_refused_as_the_column_type_refuses_it() -> None:
    naive = datetime(2026, 12, 7, 8, 0)
    with pytest.raises(ValueError, match="naive"):
        sqlite_utc_text(naive)
    with pytest.raises(ValueError, match="naive"):
        column_sqlite_text(naive)
