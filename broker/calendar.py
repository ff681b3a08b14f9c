"""A hall's opening hours, for the clocks that count only while the hall is open.

The model, in the order a day is decided:

1. Working day or not. A date in the site's ``holidays`` is closed and a date in its ``adjusted_workdays`` is open,
   whatever else says (``holiday_files``, editable CSVs such as one per year, add to both lists); then, with
   ``national_holidays`` on, the PRC statutory holidays (closed) and adjusted working days (调休上班, open) from the
   ``chinesecalendar`` package; then the regular ``workdays`` (ISO weekdays). For a year the package has no data
   for (it is published each winter for the next year), ``missing_year`` decides: ``weekdays`` (default) counts
   ordinary weekdays and logs an error once per year, because an SLA clock that stops on 1 January is worse than
   one that counts Spring Festival; ``error`` raises CalendarError, which asks for that year's days in the site
   lists.
2. Which timetable. Every calendar day (MM-DD, Feb 29 included) belongs to exactly one seasonal timetable, such as
   Qingpu's 夏令 / 非夏令; the seeds give the two timetables but not the switch dates (requirements §10 G1), so the
   site sets them.
3. The sessions. A working day is open during its timetable's sessions, half-open ``[start, end)``, in the site's
   wall-clock zone. Lunch is closed; Wanzhou's 20-minute 工间休息 is not, since service continues (§1.2).

``SiteCalendar`` answers "is it open", "how much opening time lies between two instants" and "when has this much
opening time passed" for the kiosk SLA clock (a 30-minute remote-restore target counts opening minutes only) and for
the on-site dispatch deadline, "by the end of the working day, rolling to the next working day after hours" (§10 G6).
``WallClockHours`` is the same interface for 24-hour kiosks, where every second counts.

Instants go in aware, in any zone; they come out in the site zone. Arithmetic runs on UTC, because subtracting two
datetimes that share a zoneinfo ignores a DST change between them.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import chinese_calendar
from pydantic import Field, field_validator, model_validator

from config.base import Section

log = logging.getLogger(__name__)
_warned_years: set[int] = set()

# A wrapping timetable (10-01 .. 06-30) and the Feb 29 check need a leap year to lay the days on.
_LEAP_YEAR = 2000
_YEAR_DAYS: tuple[tuple[int, int], ...] = tuple(
    (d.month, d.day) for d in (date(_LEAP_YEAR, 1, 1) + timedelta(days=i) for i in range(366))
)
# Looking further ahead than this for opening hours means the configuration closes the hall for good.
_HORIZON_DAYS = 400
_SESSION = re.compile(r"(\d{2}):(\d{2})-(\d{2}):(\d{2})")
_MONTH_DAY = re.compile(r"(\d{2})-(\d{2})")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")

Interval = tuple[datetime, datetime]


class CalendarError(ValueError):
    """The calendar cannot answer for this date; the message says what to configure."""


class TimetableConfig(Section):
    name: str = Field(min_length=1, description="Label shown in reports, e.g. 夏令 / 非夏令")
    start: str = Field(description="First day it applies, MM-DD (inclusive)")
    end: str = Field(description="Last day it applies, MM-DD (inclusive); before start means it wraps the year end")
    sessions: list[str] = Field(
        min_length=1, description="Opening sessions of a working day, HH:MM-HH:MM, in order and not overlapping"
    )

    @field_validator("start", "end")
    @classmethod
    def _month_day(cls, value: str) -> str:
        _parse_month_day(value)
        return value

    @field_validator("sessions")
    @classmethod
    def _sessions(cls, value: list[str]) -> list[str]:
        parsed = [_parse_session(s) for s in value]
        for (_, prev_end), (start, _), text in zip(parsed, parsed[1:], value[1:], strict=False):
            if start < prev_end:
                raise ValueError(f"session {text!r} starts before the previous one ends; list sessions in order")
        return value

    def parsed_sessions(self) -> tuple[tuple[time, time], ...]:
        return tuple(_parse_session(s) for s in self.sessions)

    def covers(self, month_day: tuple[int, int]) -> bool:
        first, last = _parse_month_day(self.start), _parse_month_day(self.end)
        if first <= last:
            return first <= month_day <= last
        return month_day >= first or month_day <= last


def _default_timetables() -> list[TimetableConfig]:
    return [TimetableConfig(name="全年", start="01-01", end="12-31", sessions=["09:00-12:00", "13:30-17:30"])]


class CalendarConfig(Section):
    timezone: str = Field(default="Asia/Shanghai", description="IANA zone the sessions are wall-clock times in")
    workdays: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 4, 5],
        min_length=1,
        description="Regular working days as ISO weekdays (1 = Monday .. 7 = Sunday)",
    )
    national_holidays: bool = Field(
        default=True,
        description="Close on PRC statutory holidays and open on adjusted working days (调休上班), per chinesecalendar",
    )
    missing_year: Literal["weekdays", "error"] = Field(
        default="weekdays",
        description="A year chinesecalendar has no data for: count ordinary weekdays (logged), or raise",
    )
    holidays: list[date] = Field(
        default_factory=list,
        description="Site-declared closed days; they win over everything else. Listing any day of a year that"
        " chinesecalendar has no data for also makes that year follow workdays and these lists",
    )
    adjusted_workdays: list[date] = Field(
        default_factory=list, description="Site-declared extra working days, e.g. a weekend 调休 day; win like holidays"
    )
    holiday_files: list[Path] = Field(
        default_factory=list,
        description="Editable files, e.g. one per year, of lines YYYY-MM-DD,off|work[,name] ('#' starts a comment):"
        " off days join holidays, work days join adjusted_workdays. Relative paths are from the working directory;"
        " the files are read when the config loads",
    )
    timetables: list[TimetableConfig] = Field(
        default_factory=_default_timetables,
        min_length=1,
        description="Seasonal timetables; together they cover every day of the year exactly once",
    )

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Asia/Shanghai'") from None
        return value

    @field_validator("workdays")
    @classmethod
    def _weekdays(cls, value: list[int]) -> list[int]:
        bad = [d for d in value if not 1 <= d <= 7]
        if bad:
            raise ValueError(f"{bad} are not ISO weekdays (1 = Monday .. 7 = Sunday)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CalendarConfig:
        both = sorted(set(self.holidays) & set(self.adjusted_workdays))
        if both:
            days = ", ".join(d.isoformat() for d in both)
            raise ValueError(f"{days} listed in both holidays and adjusted_workdays")
        site_days(self)
        problems = _coverage_problems(self.timetables)
        if problems:
            raise ValueError("timetables must cover every day of the year exactly once: " + "; ".join(problems))
        return self


@runtime_checkable
class Hours(Protocol):
    """What an SLA clock needs from "the hours that count"; SiteCalendar and WallClockHours both are one."""

    def is_open(self, t: datetime) -> bool: ...

    def open_seconds(self, start: datetime, end: datetime) -> float: ...

    def add_open_time(self, start: datetime, seconds: float) -> datetime: ...

    def next_open(self, t: datetime) -> datetime: ...


class SiteCalendar:
    """Opening hours of one site. Per-day sessions are cached, so a month-long span costs about 31 lookups."""

    def __init__(self, cfg: CalendarConfig) -> None:
        self.cfg = cfg
        self.zone = ZoneInfo(cfg.timezone)
        self._workdays = frozenset(cfg.workdays)
        self._holidays, self._adjusted = site_days(cfg)
        self._site_years = frozenset(d.year for d in self._holidays | self._adjusted)
        by_day: dict[tuple[int, int], tuple[tuple[time, time], ...]] = {}
        for table in cfg.timetables:
            sessions = table.parsed_sessions()
            by_day.update((md, sessions) for md in _YEAR_DAYS if table.covers(md))
        self._timetable = by_day
        # Bounded: a report over years of incidents must not grow it without limit.
        self._day = lru_cache(maxsize=2048)(self._compute_day)

    def is_working_day(self, day: date) -> bool:
        if day in self._holidays:
            return False
        if day in self._adjusted:
            return True
        if self.cfg.national_holidays:
            national = self._national(day)
            if national is not None:
                return national
        return day.isoweekday() in self._workdays

    def sessions_on(self, day: date) -> list[tuple[datetime, datetime]]:
        return [(s.astimezone(self.zone), e.astimezone(self.zone)) for s, e in self._day(day)]

    def is_open(self, t: datetime) -> bool:
        t = _utc(t)
        return any(s <= t < e for s, e in self._day(self._local_date(t)))

    def open_seconds(self, start: datetime, end: datetime) -> float:
        start, end = _utc(start), _utc(end)
        if end <= start:
            return 0.0
        total = timedelta()
        for day in _days(self._local_date(start), self._local_date(end)):
            for s, e in self._day(day):
                if e > start and s < end:
                    total += min(e, end) - max(s, start)
        return total.total_seconds()

    def add_open_time(self, start: datetime, seconds: float) -> datetime:
        """The instant the SLA clock started at ``start`` has counted ``seconds``: the earliest t with
        open_seconds(start, t) == seconds, so a deadline that falls exactly on a close stays on that day."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        t0 = _utc(start)
        remaining = timedelta(seconds=seconds)
        if remaining <= timedelta():
            return t0.astimezone(self.zone)
        opened = False
        for s, e in self._intervals_from(t0):
            opened = True
            if remaining <= e - s:
                return (s + remaining).astimezone(self.zone)
            remaining -= e - s
        if not opened:
            raise CalendarError(
                f"no opening hours within a year after {start.isoformat()}; check workdays and holidays"
            )
        raise CalendarError(
            f"{seconds} s of opening time do not fit within {_HORIZON_DAYS} days after {start.isoformat()}"
        )

    def next_open(self, t: datetime) -> datetime:
        """``t`` if open, else the start of the next session."""
        first = next(self._intervals_from(_utc(t)), None)
        if first is None:
            raise CalendarError(f"no opening hours within a year after {t.isoformat()}; check workdays and holidays")
        return first[0].astimezone(self.zone)

    def end_of_working_day(self, t: datetime) -> datetime:
        """Deadline for an on-site visit raised at ``t``: today's close, or the next working day's once closed."""
        t = _utc(t)
        first = self._local_date(t)
        for day in _days(first, first + timedelta(days=_HORIZON_DAYS)):
            sessions = self._day(day)
            if sessions and t < sessions[-1][1]:
                return sessions[-1][1].astimezone(self.zone)
        raise CalendarError(f"no working day within a year after {first}; check workdays and holidays")

    def _intervals_from(self, t: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Opening intervals from ``t`` on (the first one clipped to start at ``t``), within the horizon."""
        first = self._local_date(t)
        for day in _days(first, first + timedelta(days=_HORIZON_DAYS)):
            for s, e in self._day(day):
                if e > t:
                    yield max(s, t), e

    def _compute_day(self, day: date) -> tuple[Interval, ...]:
        """The day's sessions as UTC instants; () when closed."""
        if not self.is_working_day(day):
            return ()
        out: list[Interval] = []
        for start, end in self._timetable[(day.month, day.day)]:
            s = datetime.combine(day, start, tzinfo=self.zone).astimezone(UTC)
            e = datetime.combine(day, end, tzinfo=self.zone).astimezone(UTC)
            if e > s:  # a session inside a DST jump can shrink to nothing
                out.append((s, e))
        return tuple(out)

    def _national(self, day: date) -> bool | None:
        """True on an adjusted working day, False on a statutory holiday, None on an ordinary day."""
        try:
            is_holiday, name = chinese_calendar.get_holiday_detail(day)
        except NotImplementedError as exc:
            if day.year in self._site_years:
                return None
            if self.cfg.missing_year == "weekdays":
                if day.year not in _warned_years:
                    _warned_years.add(day.year)
                    log.error(
                        "no statutory-holiday data for %d: counting ordinary weekdays as working days; list %d's"
                        " holidays and adjusted working days in the site calendar, or upgrade chinesecalendar",
                        day.year,
                        day.year,
                    )
                return None
            raise CalendarError(
                f"no statutory-holiday data for {day.year} ({exc}); list {day.year}'s holidays and adjusted"
                " working days in the site config (calendar holidays / adjusted_workdays), set"
                " national_holidays=false, or upgrade the chinesecalendar package"
            ) from None
        if name is None:  # the package names only days of a holiday arrangement
            return None
        return not is_holiday

    def _local_date(self, t: datetime) -> date:
        return t.astimezone(self.zone).date()


class WallClockHours:
    """The 24-hour kiosk's calendar: always open, so opening time is elapsed real time (answers in the input's zone)."""

    def is_open(self, t: datetime) -> bool:
        _utc(t)
        return True

    def open_seconds(self, start: datetime, end: datetime) -> float:
        return max((_utc(end) - _utc(start)).total_seconds(), 0.0)

    def add_open_time(self, start: datetime, seconds: float) -> datetime:
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"seconds must be finite and >= 0, got {seconds}")
        return (_utc(start) + timedelta(seconds=seconds)).astimezone(start.tzinfo)

    def next_open(self, t: datetime) -> datetime:
        _utc(t)
        return t


def site_days(cfg: CalendarConfig) -> tuple[frozenset[date], frozenset[date]]:
    """The site's closed days and extra working days: its two lists plus its holiday files. A day closed in one
    place and open in another is a CalendarError naming both places."""
    places: dict[date, tuple[str, str]] = {d: ("off", "holidays") for d in cfg.holidays}
    places.update((d, ("work", "adjusted_workdays")) for d in cfg.adjusted_workdays)
    for path in cfg.holiday_files:
        for line, day, kind in read_holiday_file(path):
            where = f"{path}:{line}"
            known = places.setdefault(day, (kind, where))
            if known[0] != kind:
                raise CalendarError(f"{where}: {day} is {kind!r} here but {known[0]!r} in {known[1]}")
    closed = frozenset(d for d, (kind, _) in places.items() if kind == "off")
    return closed, frozenset(places) - closed


def read_holiday_file(path: Path) -> list[tuple[int, date, str]]:
    """(line number, day, "off" | "work") for each line of ``YYYY-MM-DD,off|work[,name]``; blank lines and lines
    starting with '#' are skipped. Errors name the file and the line."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a file saved by Excel starts with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        raise CalendarError(f"cannot read holiday file {path}: {exc}") from None
    rows: list[tuple[int, date, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",", 2)]
        kind = fields[1].lower() if len(fields) > 1 else ""
        if kind not in ("off", "work") or _ISO_DATE.fullmatch(fields[0]) is None:
            raise CalendarError(f"{path}:{number}: {raw!r} is not YYYY-MM-DD,off|work[,name]")
        try:
            rows.append((number, date.fromisoformat(fields[0]), kind))
        except ValueError:
            raise CalendarError(f"{path}:{number}: {fields[0]} is not a date") from None
    return rows


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t.isoformat()}: pass an aware one (e.g. clock.now())")
    return t.astimezone(UTC)


def _days(first: date, last: date) -> Iterator[date]:
    day = first
    while day <= last:
        yield day
        day += timedelta(days=1)


def _parse_session(text: str) -> tuple[time, time]:
    m = _SESSION.fullmatch(text)
    if m is None:
        raise ValueError(f"session {text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    try:
        start, end = time(h1, m1), time(h2, m2)
    except ValueError:
        raise ValueError(f"session {text!r} has a time outside 00:00..23:59") from None
    if start >= end:
        raise ValueError(f"session {text!r} ends before it starts; sessions cannot cross midnight")
    return start, end


def _parse_month_day(text: str) -> tuple[int, int]:
    m = _MONTH_DAY.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not MM-DD")
    month, day = int(m.group(1)), int(m.group(2))
    try:
        date(_LEAP_YEAR, month, day)
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the year") from None
    return month, day


def _coverage_problems(timetables: list[TimetableConfig]) -> list[str]:
    """Runs of days covered by no timetable or by several, as "06-30 not covered" / "07-01..07-03 covered by ..."."""
    owners = [tuple(t.name for t in timetables if t.covers(md)) for md in _YEAR_DAYS]
    problems: list[str] = []
    i = 0
    while i < len(_YEAR_DAYS):
        j = i
        while j + 1 < len(_YEAR_DAYS) and owners[j + 1] == owners[i]:
            j += 1
        if len(owners[i]) != 1:
            span = _md(_YEAR_DAYS[i]) if i == j else f"{_md(_YEAR_DAYS[i])}..{_md(_YEAR_DAYS[j])}"
            problems.append(f"{span} not covered" if not owners[i] else f"{span} covered by {', '.join(owners[i])}")
        i = j + 1
    return problems


def _md(month_day: tuple[int, int]) -> str:
    return f"{month_day[0]:02d}-{month_day[1]:02d}"
