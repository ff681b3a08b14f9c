"""Site calendar: Qingpu's two seasonal timetables, Wanzhou's single one, PRC holidays from chinesecalendar.

Dates are 2026, the last year chinesecalendar 1.11 has data for. Its 2026 National Day arrangement: Oct 1-7 off,
Sun Sep 20 and Sat Oct 10 are adjusted working days (调休上班).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from broker.calendar import (
    CalendarConfig,
    CalendarError,
    Hours,
    SiteCalendar,
    TimetableConfig,
    WallClockHours,
)
from runtime.clock import HALL_ZONE

SUMMER = TimetableConfig(name="夏令", start="07-01", end="09-30", sessions=["08:30-11:30", "13:30-17:00"])
NON_SUMMER = TimetableConfig(name="非夏令", start="10-01", end="06-30", sessions=["08:30-11:30", "13:00-17:00"])
QP = CalendarConfig(timetables=[SUMMER, NON_SUMMER])
WZ = CalendarConfig()  # the default timetable is Wanzhou's 09:00-12:00 / 13:30-17:30


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=HALL_ZONE)


def hours(h: float) -> float:
    return h * 3600


@pytest.fixture
def qp() -> SiteCalendar:
    return SiteCalendar(QP)


@pytest.fixture
def wz() -> SiteCalendar:
    return SiteCalendar(WZ)


# -- sessions and seasons ---------------------------------------------------------------------------------------


def test_qingpu_switches_to_the_summer_timetable_on_its_first_day(qp: SiteCalendar) -> None:
    june_30 = [(at(2026, 6, 30, 8, 30), at(2026, 6, 30, 11, 30)), (at(2026, 6, 30, 13), at(2026, 6, 30, 17))]
    assert qp.sessions_on(date(2026, 6, 30)) == june_30
    assert qp.sessions_on(date(2026, 7, 1))[1] == (at(2026, 7, 1, 13, 30), at(2026, 7, 1, 17))
    assert qp.sessions_on(date(2026, 9, 30))[1][0] == at(2026, 9, 30, 13, 30)
    assert qp.sessions_on(date(2026, 10, 8))[1][0] == at(2026, 10, 8, 13)


def test_wanzhou_default_sessions_are_in_the_site_zone(wz: SiteCalendar) -> None:
    sessions = wz.sessions_on(date(2026, 3, 11))
    assert sessions == [(at(2026, 3, 11, 9), at(2026, 3, 11, 12)), (at(2026, 3, 11, 13, 30), at(2026, 3, 11, 17, 30))]
    assert all(s.tzinfo == ZoneInfo("Asia/Shanghai") for pair in sessions for s in pair)


def test_no_sessions_on_a_weekend_or_a_statutory_holiday(wz: SiteCalendar) -> None:
    assert wz.sessions_on(date(2026, 3, 14)) == []  # Saturday
    assert wz.sessions_on(date(2026, 10, 5)) == []  # Monday of National Day week


def test_is_open_is_half_open_and_accepts_utc(qp: SiteCalendar) -> None:
    assert qp.is_open(at(2026, 3, 11, 8, 30))
    assert not qp.is_open(at(2026, 3, 11, 8, 29, 59))
    assert qp.is_open(at(2026, 3, 11, 11, 29, 59))
    assert not qp.is_open(at(2026, 3, 11, 11, 30))
    assert not qp.is_open(at(2026, 3, 11, 12, 30))
    # 00:30 UTC is 08:30 in Shanghai; 03:30 UTC is the lunch close.
    assert qp.is_open(datetime(2026, 3, 11, 0, 30, tzinfo=UTC))
    assert not qp.is_open(datetime(2026, 3, 11, 3, 30, tzinfo=UTC))


def test_lunch_is_closed_only_in_its_season(qp: SiteCalendar) -> None:
    assert qp.is_open(at(2026, 3, 11, 13, 15))  # non-summer afternoon opens 13:00
    assert not qp.is_open(at(2026, 7, 15, 13, 15))  # summer afternoon opens 13:30


# -- working days -----------------------------------------------------------------------------------------------


def test_2026_national_day_holiday_and_its_adjusted_working_days(qp: SiteCalendar) -> None:
    for d in range(1, 8):
        assert not qp.is_working_day(date(2026, 10, d)), f"Oct {d}"
    assert qp.is_working_day(date(2026, 9, 20))  # Sunday, 调休上班
    assert qp.is_working_day(date(2026, 10, 10))  # Saturday, 调休上班
    assert not qp.is_working_day(date(2026, 10, 11))  # an ordinary Sunday
    assert qp.sessions_on(date(2026, 10, 10))[0][0] == at(2026, 10, 10, 8, 30)


def test_without_national_holidays_only_workdays_count() -> None:
    cal = SiteCalendar(CalendarConfig(national_holidays=False))
    assert cal.is_working_day(date(2026, 10, 1))  # Thursday
    assert not cal.is_working_day(date(2026, 10, 10))  # Saturday


def test_site_lists_win_over_national_data_and_workdays() -> None:
    cal = SiteCalendar(
        CalendarConfig(
            holidays=[date(2026, 3, 18), date(2026, 10, 10)],  # a Wednesday; a national 调休 Saturday
            adjusted_workdays=[date(2026, 3, 21), date(2026, 10, 6)],  # a Saturday; a national holiday
        )
    )
    assert not cal.is_working_day(date(2026, 3, 18))
    assert not cal.is_working_day(date(2026, 10, 10))
    assert cal.is_working_day(date(2026, 3, 21))
    assert cal.is_working_day(date(2026, 10, 6))
    assert cal.open_seconds(at(2026, 3, 18), at(2026, 3, 19)) == 0
    assert cal.open_seconds(at(2026, 3, 21), at(2026, 3, 22)) == hours(7)


def test_seven_day_hall_still_closes_on_statutory_holidays() -> None:
    cal = SiteCalendar(CalendarConfig(workdays=[1, 2, 3, 4, 5, 6, 7]))
    assert cal.is_working_day(date(2026, 3, 15))  # Sunday
    assert not cal.is_working_day(date(2026, 10, 4))  # Sunday inside National Day


# -- open_seconds -----------------------------------------------------------------------------------------------


def test_open_seconds_skips_lunch(qp: SiteCalendar, wz: SiteCalendar) -> None:
    assert qp.open_seconds(at(2026, 3, 11, 11), at(2026, 3, 11, 13, 30)) == hours(1)  # 11:00-11:30 + 13:00-13:30
    assert qp.open_seconds(at(2026, 7, 15, 11), at(2026, 7, 15, 13, 30)) == hours(0.5)  # summer: lunch to 13:30
    assert wz.open_seconds(at(2026, 3, 11, 11), at(2026, 3, 11, 14)) == hours(1.5)


def test_open_seconds_skips_a_weekend(qp: SiteCalendar) -> None:
    # Friday 16:00-17:00, then Monday 08:30-09:00.
    assert qp.open_seconds(at(2026, 3, 13, 16), at(2026, 3, 16, 9)) == hours(1.5)


def test_open_seconds_skips_the_2026_national_day_holiday(qp: SiteCalendar) -> None:
    # Wed Sep 30 (last summer day) 16:00-17:00; Oct 1-7 closed; Thu Oct 8 08:30-09:00.
    assert qp.open_seconds(at(2026, 9, 30, 16), at(2026, 10, 8, 9)) == hours(1.5)
    # Fri Oct 9 16:00 to Mon Oct 12 09:00 includes the whole adjusted working Saturday (3 h + 4 h).
    assert qp.open_seconds(at(2026, 10, 9, 16), at(2026, 10, 12, 9)) == hours(1 + 7 + 0.5)


def test_open_seconds_over_a_month(wz: SiteCalendar) -> None:
    # March 2026 has 22 weekdays and no holidays; Wanzhou is open 7 h a day.
    assert wz.open_seconds(at(2026, 3, 1), at(2026, 4, 1)) == hours(22 * 7)


def test_open_seconds_is_zero_for_an_empty_or_reversed_span(qp: SiteCalendar) -> None:
    assert qp.open_seconds(at(2026, 3, 11, 10), at(2026, 3, 11, 10)) == 0
    assert qp.open_seconds(at(2026, 3, 11, 10), at(2026, 3, 11, 9)) == 0


def test_open_seconds_mixes_zones(qp: SiteCalendar) -> None:
    start = datetime(2026, 3, 11, 1, 0, tzinfo=UTC)  # 09:00 Shanghai
    assert qp.open_seconds(start, at(2026, 3, 11, 10)) == hours(1)


def test_open_seconds_counts_real_time_across_a_dst_change() -> None:
    # Berlin springs forward at 02:00 on 2026-03-29: a 01:00-04:00 session lasts two real hours.
    cfg = CalendarConfig(
        timezone="Europe/Berlin",
        workdays=[7],
        national_holidays=False,
        timetables=[TimetableConfig(name="night", start="01-01", end="12-31", sessions=["01:00-04:00"])],
    )
    cal = SiteCalendar(cfg)
    berlin = ZoneInfo("Europe/Berlin")
    assert cal.open_seconds(datetime(2026, 3, 29, tzinfo=berlin), datetime(2026, 3, 30, tzinfo=berlin)) == hours(2)
    assert cal.open_seconds(datetime(2026, 3, 22, tzinfo=berlin), datetime(2026, 3, 23, tzinfo=berlin)) == hours(3)


def test_a_month_long_span_is_cheap(wz: SiteCalendar) -> None:
    """The monthly SLA report calls open_seconds for every incident; a per-minute walk would take minutes here."""
    began = time.perf_counter()
    for i in range(2000):
        start = at(2026, 1, 1) + timedelta(minutes=97 * i)
        wz.open_seconds(start, start + timedelta(days=31))
    assert time.perf_counter() - began < 2.0


# -- add_open_time ----------------------------------------------------------------------------------------------


def test_add_open_time_skips_lunch(qp: SiteCalendar) -> None:
    assert qp.add_open_time(at(2026, 3, 11, 11, 25), 20 * 60) == at(2026, 3, 11, 13, 15)  # non-summer
    assert qp.add_open_time(at(2026, 7, 15, 11, 25), 20 * 60) == at(2026, 7, 15, 13, 45)  # summer


def test_add_open_time_rolls_friday_evening_to_monday(qp: SiteCalendar) -> None:
    assert qp.add_open_time(at(2026, 3, 13, 16, 50), 30 * 60) == at(2026, 3, 16, 8, 50)


def test_add_open_time_rolls_over_the_national_day_holiday(qp: SiteCalendar) -> None:
    assert qp.add_open_time(at(2026, 9, 30, 16, 50), 30 * 60) == at(2026, 10, 8, 8, 50)


def test_add_open_time_ending_on_a_close_stays_on_that_day(qp: SiteCalendar) -> None:
    assert qp.add_open_time(at(2026, 3, 13, 16, 30), 30 * 60) == at(2026, 3, 13, 17)


def test_add_open_time_from_a_closed_instant_starts_at_the_next_opening(qp: SiteCalendar) -> None:
    assert qp.add_open_time(at(2026, 3, 14, 10), 60) == at(2026, 3, 16, 8, 31)
    assert qp.add_open_time(at(2026, 3, 14, 10), 0) == at(2026, 3, 14, 10)


def test_add_open_time_answers_in_the_site_zone(qp: SiteCalendar) -> None:
    result = qp.add_open_time(datetime(2026, 3, 11, 3, 25, tzinfo=UTC), 20 * 60)  # 11:25 Shanghai
    assert result == at(2026, 3, 11, 13, 15)
    assert result.tzinfo == HALL_ZONE


def test_add_open_time_rejects_negative_seconds(qp: SiteCalendar) -> None:
    with pytest.raises(ValueError, match="seconds"):
        qp.add_open_time(at(2026, 3, 11, 10), -1)


def test_add_open_time_gives_up_when_the_hall_never_opens() -> None:
    # Only Mondays; declare every Monday of the next 400 days a holiday.
    mondays = [date(2026, 3, 16) + timedelta(weeks=w) for w in range(60)]
    cal = SiteCalendar(CalendarConfig(workdays=[1], national_holidays=False, holidays=mondays))
    with pytest.raises(CalendarError, match="no opening hours within a year"):
        cal.add_open_time(at(2026, 3, 14), 60)
    with pytest.raises(CalendarError, match="no opening hours within a year"):
        cal.next_open(at(2026, 3, 14))


@pytest.mark.parametrize("cfg", [QP, WZ], ids=["qingpu", "wanzhou"])
def test_add_open_time_and_open_seconds_are_inverse(cfg: CalendarConfig) -> None:
    cal = SiteCalendar(cfg)
    rng = random.Random(20261122)
    for _ in range(300):
        start = at(2026, 1, 1) + timedelta(seconds=rng.randrange(330 * 86_400), microseconds=rng.randrange(10**6))
        seconds = round(rng.uniform(0, hours(20)), 6)
        t = cal.add_open_time(start, seconds)
        assert t >= start
        assert cal.open_seconds(start, t) == pytest.approx(seconds, abs=1e-6), (start, seconds)
        if seconds >= 1e-6:  # earliest such instant: one microsecond earlier is short
            assert cal.open_seconds(start, t - timedelta(microseconds=1)) < seconds
        end = start + timedelta(seconds=rng.randrange(10 * 86_400))
        counted = cal.open_seconds(start, end)
        back = cal.add_open_time(start, counted)
        assert back <= end
        assert cal.open_seconds(back, end) == 0, (start, end)


# -- next_open and end_of_working_day ---------------------------------------------------------------------------


def test_next_open(qp: SiteCalendar) -> None:
    assert qp.next_open(at(2026, 3, 11, 10)) == at(2026, 3, 11, 10)
    assert qp.next_open(at(2026, 3, 11, 12)) == at(2026, 3, 11, 13)
    assert qp.next_open(at(2026, 3, 13, 17)) == at(2026, 3, 16, 8, 30)
    assert qp.next_open(at(2026, 9, 30, 18)) == at(2026, 10, 8, 8, 30)


def test_end_of_working_day_before_close_is_today(qp: SiteCalendar, wz: SiteCalendar) -> None:
    assert qp.end_of_working_day(at(2026, 3, 11, 7)) == at(2026, 3, 11, 17)
    assert qp.end_of_working_day(at(2026, 3, 11, 12)) == at(2026, 3, 11, 17)
    assert wz.end_of_working_day(at(2026, 3, 11, 16, 59)) == at(2026, 3, 11, 17, 30)


def test_end_of_working_day_after_close_rolls_to_the_next_working_day(qp: SiteCalendar) -> None:
    assert qp.end_of_working_day(at(2026, 3, 11, 17)) == at(2026, 3, 12, 17)
    assert qp.end_of_working_day(at(2026, 3, 11, 22)) == at(2026, 3, 12, 17)
    assert qp.end_of_working_day(at(2026, 3, 13, 18)) == at(2026, 3, 16, 17)


def test_end_of_working_day_on_a_saturday_is_monday(wz: SiteCalendar) -> None:
    assert wz.end_of_working_day(at(2026, 3, 14, 10)) == at(2026, 3, 16, 17, 30)


def test_end_of_working_day_on_a_holiday_eve_waits_out_the_holiday(qp: SiteCalendar) -> None:
    assert qp.end_of_working_day(at(2026, 9, 30, 17, 30)) == at(2026, 10, 8, 17)
    assert qp.end_of_working_day(at(2026, 10, 3, 10)) == at(2026, 10, 8, 17)
    # Friday Oct 9 after hours: the adjusted working Saturday is the next working day.
    assert qp.end_of_working_day(at(2026, 10, 9, 18)) == at(2026, 10, 10, 17)


# -- years chinesecalendar does not know ------------------------------------------------------------------------


def test_a_year_without_national_data_counts_weekdays_and_logs_it_by_default(
    qp: SiteCalendar, caplog: pytest.LogCaptureFixture
) -> None:
    """The package is published each winter for the next year: the SLA clock must not stop on 1 January."""
    with caplog.at_level("ERROR", logger="broker.calendar"):
        assert qp.is_working_day(date(2041, 3, 5))  # a Tuesday
        assert not qp.is_working_day(date(2041, 3, 9))  # a Saturday
    assert "no statutory-holiday data for 2041" in caplog.text
    assert qp.open_seconds(at(2041, 3, 5, 9), at(2041, 3, 5, 10)) == 3600


def test_a_year_without_national_data_asks_for_site_config_when_strict() -> None:
    qp = SiteCalendar(QP.model_copy(update={"missing_year": "error"}))
    with pytest.raises(CalendarError, match="2040") as err:
        qp.is_working_day(date(2040, 3, 5))
    assert isinstance(err.value, ValueError)
    assert "holidays" in str(err.value)
    assert "national_holidays=false" in str(err.value)
    with pytest.raises(CalendarError):
        qp.open_seconds(at(2040, 3, 5, 9), at(2040, 3, 5, 10))


def test_a_year_without_national_data_follows_the_site_lists_once_given() -> None:
    cal = SiteCalendar(CalendarConfig(holidays=[date(2040, 1, 1)], adjusted_workdays=[date(2040, 2, 4)]))
    assert not cal.is_working_day(date(2040, 1, 1))
    assert cal.is_working_day(date(2040, 2, 4))  # a Saturday
    assert cal.is_working_day(date(2040, 3, 5))  # an ordinary Monday
    assert not cal.is_working_day(date(2040, 3, 4))  # an ordinary Sunday


def test_a_year_without_national_data_is_fine_with_national_holidays_off() -> None:
    cal = SiteCalendar(CalendarConfig(national_holidays=False))
    assert cal.is_working_day(date(2040, 3, 5))


# -- inputs and configuration -----------------------------------------------------------------------------------


def test_naive_datetimes_are_rejected(qp: SiteCalendar) -> None:
    naive = datetime(2026, 3, 11, 10)
    for call in (
        lambda: qp.is_open(naive),
        lambda: qp.open_seconds(naive, at(2026, 3, 12)),
        lambda: qp.add_open_time(naive, 60),
        lambda: qp.next_open(naive),
        lambda: qp.end_of_working_day(naive),
        lambda: WallClockHours().open_seconds(naive, naive),
    ):
        with pytest.raises(ValueError, match="naive"):
            call()


@pytest.mark.parametrize(
    ("sessions", "message"),
    [
        (["8:30-11:30"], "not HH:MM-HH:MM"),
        (["08:30-11:30", "13:00-25:00"], "outside"),
        (["13:00-12:00"], "ends before it starts"),
        (["08:30-12:00", "11:30-17:00"], "starts before the previous one ends"),
        (["13:00-17:00", "08:30-11:30"], "starts before the previous one ends"),
        ([], "at least 1"),
    ],
)
def test_bad_sessions_name_the_field(sessions: list[str], message: str) -> None:
    with pytest.raises(ValidationError, match="sessions") as err:
        TimetableConfig(name="x", start="01-01", end="12-31", sessions=sessions)
    assert message in str(err.value)


def test_bad_month_day_names_the_field() -> None:
    with pytest.raises(ValidationError, match=r"(?s)start.*not a day of the year"):
        TimetableConfig(name="x", start="02-30", end="12-31", sessions=["09:00-12:00"])
    with pytest.raises(ValidationError, match=r"(?s)end.*not MM-DD"):
        TimetableConfig(name="x", start="01-01", end="1231", sessions=["09:00-12:00"])


def test_a_day_no_timetable_covers_is_named() -> None:
    early_summer = TimetableConfig(name="夏令", start="07-01", end="09-30", sessions=["08:30-11:30"])
    short = TimetableConfig(name="非夏令", start="10-01", end="06-29", sessions=["08:30-11:30"])
    with pytest.raises(ValidationError, match=r"06-30 not covered"):
        CalendarConfig(timetables=[early_summer, short])


def test_february_29_must_be_covered() -> None:
    table = TimetableConfig(name="x", start="03-01", end="02-28", sessions=["09:00-12:00"])
    with pytest.raises(ValidationError, match=r"02-29 not covered"):
        CalendarConfig(timetables=[table])


def test_a_day_two_timetables_cover_is_named() -> None:
    long = TimetableConfig(name="非夏令", start="10-01", end="07-02", sessions=["08:30-11:30"])
    with pytest.raises(ValidationError, match=r"07-01\.\.07-02 covered by 夏令, 非夏令"):
        CalendarConfig(timetables=[SUMMER, long])


def test_leap_day_uses_its_season() -> None:
    cal = SiteCalendar(CalendarConfig(timetables=[SUMMER, NON_SUMMER], national_holidays=False))
    assert cal.sessions_on(date(2028, 2, 29))[1][0] == datetime(2028, 2, 29, 13, tzinfo=HALL_ZONE)


def test_unknown_time_zone_is_named() -> None:
    with pytest.raises(ValidationError, match="Asia/Shangai"):
        CalendarConfig(timezone="Asia/Shangai")
    with pytest.raises(ValidationError, match="timezone"):
        CalendarConfig(timezone="../etc/passwd")


def test_a_day_both_holiday_and_adjusted_workday_is_an_error() -> None:
    with pytest.raises(ValidationError, match="2026-03-21 listed in both holidays and adjusted_workdays"):
        CalendarConfig(holidays=[date(2026, 3, 21)], adjusted_workdays=[date(2026, 3, 21)])


def test_workdays_must_be_iso_weekdays() -> None:
    with pytest.raises(ValidationError, match=r"(?s)workdays.*\[0\] are not ISO weekdays"):
        CalendarConfig(workdays=[0, 1])
    with pytest.raises(ValidationError, match="workdays"):
        CalendarConfig(workdays=[])


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="no_closing_day"):
        CalendarConfig.model_validate({"no_closing_day": True})


def test_config_reads_dates_from_toml_style_strings() -> None:
    cfg = CalendarConfig.model_validate({"holidays": ["2026-03-18"], "workdays": [1, 2, 3, 4, 5, 6]})
    cal = SiteCalendar(cfg)
    assert not cal.is_working_day(date(2026, 3, 18))
    assert cal.is_working_day(date(2026, 3, 14))  # Saturday


# -- the 24-hour kiosk ------------------------------------------------------------------------------------------


def test_wall_clock_hours_count_every_second() -> None:
    wall = WallClockHours()
    t = at(2026, 3, 14, 3)  # a Saturday night
    assert wall.is_open(t)
    assert wall.next_open(t) == t
    assert wall.open_seconds(t, t + timedelta(hours=5)) == hours(5)
    assert wall.open_seconds(t, t - timedelta(hours=5)) == 0
    assert wall.add_open_time(t, 90) == t + timedelta(seconds=90)


def test_wall_clock_hours_count_real_time_across_a_dst_change() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    wall = WallClockHours()
    before, after = datetime(2026, 3, 29, 1, tzinfo=berlin), datetime(2026, 3, 29, 4, tzinfo=berlin)
    assert wall.open_seconds(before, after) == hours(2)
    assert wall.add_open_time(before, hours(2)) == after
    assert wall.add_open_time(before, hours(2)).utcoffset() == timedelta(hours=2)


def test_both_calendars_are_hours(qp: SiteCalendar) -> None:
    assert isinstance(qp, Hours)
    assert isinstance(WallClockHours(), Hours)
    assert not isinstance(object(), Hours)


# -- holiday files ------------------------------------------------------------------------------------------------


def holiday_file(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding=encoding)
    return path


def test_holiday_files_give_a_year_chinesecalendar_does_not_know(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The 2041 arrangement, typed in from the State Council notice before the package has it."""
    path = holiday_file(
        tmp_path,
        "2041.csv",
        "# 2041 国务院办公厅通知\n2041-01-01,off,元旦\n\n2041-02-02,work,春节调休, 周六上班\n2041-02-04, OFF ,春节\n",
    )
    cal = SiteCalendar(CalendarConfig(holiday_files=[path], missing_year="error"))
    with caplog.at_level("ERROR", logger="broker.calendar"):
        assert not cal.is_working_day(date(2041, 1, 1))  # a Tuesday
        assert cal.is_working_day(date(2041, 2, 2))  # a Saturday
        assert not cal.is_working_day(date(2041, 2, 4))  # a Monday
        assert cal.is_working_day(date(2041, 3, 5))  # an ordinary Tuesday: the year follows workdays, no error
    assert caplog.text == ""


def test_holiday_files_win_over_national_data_and_merge_with_the_lists(tmp_path: Path) -> None:
    bom = holiday_file(tmp_path, "2026.csv", "2026-10-10,off,本中心不调休\n", encoding="utf-8-sig")  # saved by Excel
    other = holiday_file(tmp_path, "2026-extra.csv", "2026-10-06,work\n2026-03-18,off\n")
    cfg = CalendarConfig(
        holiday_files=[bom, other], holidays=[date(2026, 3, 18)], adjusted_workdays=[date(2026, 3, 21)]
    )
    cal = SiteCalendar(cfg)
    assert not cal.is_working_day(date(2026, 10, 10))  # national 调休上班, closed by the file
    assert cal.is_working_day(date(2026, 10, 6))  # a national holiday, opened by the file
    assert not cal.is_working_day(date(2026, 3, 18)) and cal.is_working_day(date(2026, 3, 21))


def test_holiday_files_are_read_from_toml_style_strings(tmp_path: Path) -> None:
    path = holiday_file(tmp_path, "2026.csv", "2026-03-18,off\n")
    cal = SiteCalendar(CalendarConfig.model_validate({"holiday_files": [str(path)]}))
    assert not cal.is_working_day(date(2026, 3, 18))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-03-18,off\n2026-3-19,off\n", r"2026\.csv:2: '2026-3-19,off' is not YYYY-MM-DD,off\|work"),
        ("# header\n2026-03-18,closed\n", r"2026\.csv:2: '2026-03-18,closed' is not"),
        ("2026-03-18\n", r"2026\.csv:1: "),
        ("2026-02-30,off\n", r"2026\.csv:1: 2026-02-30 is not a date"),
        ("2026-03-18,off\n2026-03-18,work\n", r"2026\.csv:2: 2026-03-18 is 'work' here but 'off' in .*2026\.csv:1"),
    ],
)
def test_a_bad_holiday_file_line_is_named(tmp_path: Path, text: str, message: str) -> None:
    path = holiday_file(tmp_path, "2026.csv", text)
    with pytest.raises(ValidationError, match=message) as err:
        CalendarConfig(holiday_files=[path])
    assert str(tmp_path) in str(err.value)


def test_a_holiday_file_contradicting_the_site_lists_names_both(tmp_path: Path) -> None:
    path = holiday_file(tmp_path, "2026.csv", "2026-03-21,off\n")
    with pytest.raises(ValidationError, match=r"2026\.csv:1: 2026-03-21 is 'off' here but 'work' in adjusted_workdays"):
        CalendarConfig(holiday_files=[path], adjusted_workdays=[date(2026, 3, 21)])


def test_a_missing_holiday_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"cannot read holiday file .*2027\.csv"):
        CalendarConfig(holiday_files=[tmp_path / "2027.csv"])
