"""Attendance reports as the window management section (窗口管理科) files them (requirements §1.8, §7.4, §11.6).

- daily: the day's exceptions, each with what happened, why, whether proof is in and any terminal fault (日检查);
- weekly: counts per staff member (周考勤, NS 003:104);
- monthly: per dispatching unit and staff member, with the month's late/early aggregation turned into half days of
  absence (WZ 002:10: 按月通报 to each resident unit, 002:11);
- terminal faults: which attendance terminal was down when, and which staff-days that excused (SJ E.1.3, 001:1040),
  for hall management and the IT section.

Tables are built language-neutral (verdicts, yes/no and column keys stay codes); the writers put them into
Chinese or English: CSV in UTF-8 with a BOM so Excel reads the Chinese, XLSX with a title row, a bold header,
column widths and the header frozen, numbers kept as numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Literal

from broker.attendance.labels import Labels, labels
from broker.attendance.model import NEEDS_PROOF, FaultWindow, StaffDay, Verdict
from broker.attendance.monthly import MonthSummary, month_summary
from broker.attendance.policy import MonthlyRule
from broker.attendance.roster import StaffMember
from broker.attendance.verdicts import is_excused
from broker.audit.heads import MonthHeads
from broker.reports.sheets import Col, Fmt, Sheet, heads_footer, sheet_texts, with_heads, write_workbook
from broker.reports.sheets import write_csv as write_sheets_csv

Kind = Literal["text", "int", "days", "date", "time", "yes_no", "mark"]  # mark: "是" or blank


@dataclass(frozen=True, slots=True)
class Word:
    """A cell the writer translates, such as 小计."""

    key: str


@dataclass(frozen=True, slots=True)
class Note:
    """Words with a date the writer translates, such as "2026-11-16 入职, 此前不考勤": (label key, day) parts."""

    parts: tuple[tuple[str, date], ...]


Value = str | int | float | date | datetime | Verdict | Word | Note | bool | None
# Column kinds as the shared sheet writer reads them: days show the precision their data needs (a quarter day
# 0.25, never 0.3), so the rows visibly add up to the subtotals.
_SHEET_FMT: dict[Kind, Fmt] = {"int": "int", "days": "decimal", "date": "date", "time": "time"}
# Not attendance exceptions: nothing to review. Everything else is listed, excused days included, so the
# reviewer sees who was away and why.
# 在岗 / 待签退 (the day not over) are quiet unless the sign-in was already late; 未到岗 is listed.
_QUIET = frozenset({Verdict.ON_TIME, Verdict.REST_DAY, Verdict.EXEMPT_DUTY, Verdict.ON_DUTY, Verdict.AWAITING_OUT})
_PERSON = ("unit", "window", "staff_id", "name")


@dataclass(frozen=True, slots=True)
class Column:
    key: str  # label key: the header in the chosen language
    kind: Kind = "text"


@dataclass(frozen=True, slots=True)
class Row:
    values: tuple[Value, ...]
    total: bool = False  # a unit's subtotal or the grand total: bold
    flag: bool = False  # something the reader must act on: highlighted


@dataclass(frozen=True, slots=True)
class Table:
    what: str  # label key of the sheet and title, e.g. "monthly"
    period: str  # "2026-11", "2026-11-05", "2026-11-02 ~ 2026-11-08"
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    site_name: str = ""


def _person(m: StaffMember | None, staff_id: str) -> tuple[Value, ...]:
    return (m.unit, m.window, staff_id, m.name) if m is not None else ("", "", staff_id, "")


def _index(members: Iterable[StaffMember]) -> dict[str, StaffMember]:
    return {m.staff_id: m for m in members}


def _order(staff_id: str, people: dict[str, StaffMember]) -> tuple[str, str, str]:
    m = people.get(staff_id)
    return (m.unit, m.window, staff_id) if m is not None else ("", "", staff_id)


# -- daily and detail --------------------------------------------------------------------------------------
def daily_exceptions(
    days: Iterable[StaffDay],
    members: Iterable[StaffMember],
    day: date,
    *,
    faults: Sequence[FaultWindow] = (),
    zone: tzinfo | None = None,
    site_name: str = "",
) -> Table:
    """The day's exceptions (考勤异常日报): late, early, missing, absent, away, a terminal fault, an untrusted clock."""
    table = exception_details(days, members, day, day, faults=faults, zone=zone, site_name=site_name)
    columns = tuple(c for c in table.columns if c.key != "day")
    rows = tuple(Row(r.values[1:], flag=r.flag) for r in table.rows)
    return Table("daily", day.isoformat(), columns, rows, site_name)


def exception_details(
    days: Iterable[StaffDay],
    members: Iterable[StaffMember],
    first: date,
    last: date,
    *,
    faults: Sequence[FaultWindow] = (),
    zone: tzinfo | None = None,
    site_name: str = "",
) -> Table:
    """Every staff-day of [first, last] that is not plainly normal, by day then unit, window and staff id.
    ``faults`` (with the site ``zone``) fill the terminal-fault column with the terminals down that day."""
    people = _index(members)
    chosen = [
        d for d in days if first <= d.day <= last and (d.verdict not in _QUIET or d.untrusted or d.locked or d.late_min)
    ]
    chosen.sort(key=lambda d: (d.day, *_order(d.staff_id, people)))
    rows = tuple(_detail_row(d, people.get(d.staff_id), faults, zone) for d in chosen)
    return Table("details", _period(first, last), _DETAIL_COLUMNS, rows, site_name)


_DETAIL_COLUMNS = (
    Column("day", "date"),
    *(Column(k) for k in _PERSON),
    Column("verdict"),
    Column("reason"),
    Column("proof", "yes_no"),
    Column("device_fault"),
    Column("untrusted", "mark"),
    Column("locked", "mark"),
)


def _detail_row(d: StaffDay, m: StaffMember | None, faults: Sequence[FaultWindow], zone: tzinfo | None) -> Row:
    values = (d.day, *_person(m, d.staff_id), d.verdict, reason_text(d), _proof(d), _faults_text(faults, d.day, zone))
    return Row((*values, d.untrusted, d.locked), flag=d.verdict in NEEDS_PROOF and not is_excused(d))


def reason_text(d: StaffDay) -> str:
    """The reason a reviewer reads: the verdict's, then its notes (proof filed, the leave taken); the dashboard
    shows this same text (broker/api/routes.py)."""
    return "; ".join([d.reason, *d.notes]) if d.notes else d.reason


def _proof(d: StaffDay) -> bool | None:
    """Proof is asked for late/early/missing/absent (QP 000:30-31); filed in time, it excuses the day."""
    return is_excused(d) if d.verdict in NEEDS_PROOF else None


def _faults_text(faults: Sequence[FaultWindow], day: date, zone: tzinfo | None) -> str:
    return "" if zone is None else _spans(_faults_on(faults, day, zone), zone)


def _spans(faults: Iterable[FaultWindow], zone: tzinfo) -> str:
    return "; ".join(_span_text(f, zone) for f in faults)


def _faults_on(faults: Sequence[FaultWindow], day: date, zone: tzinfo) -> list[FaultWindow]:
    start = datetime.combine(day, time(), zone)
    end = start + timedelta(days=1)
    return [f for f in faults if f.start < end and f.end > start]


def _span_text(f: FaultWindow, zone: tzinfo) -> str:
    s, e = f.start.astimezone(zone), f.end.astimezone(zone)
    until = e.strftime("%H:%M") if e.date() == s.date() else e.strftime("%m-%d %H:%M")
    return f"{f.device} {s:%m-%d %H:%M}-{until}"


# -- weekly and monthly --------------------------------------------------------------------------------------
def weekly_summary(
    days: Iterable[StaffDay], members: Iterable[StaffMember], first: date, last: date, *, site_name: str = ""
) -> Table:
    """Counts per staff member over [first, last] (周考勤): no monthly aggregation, that is the month's."""
    chosen = [d for d in days if first <= d.day <= last]
    people = _index(members)
    sums = month_summary(chosen, None)
    expected = _count(chosen, lambda d: d.verdict not in (Verdict.REST_DAY, Verdict.EXEMPT_DUTY))
    pending = _count(chosen, lambda d: d.verdict in NEEDS_PROOF and not is_excused(d) and not d.locked)
    rows = []
    for staff_id in sorted(sums, key=lambda s: _order(s, people)):
        s = sums[staff_id]
        counts = (expected[staff_id], s.worked_days, s.late, s.early, s.missing, s.absent_days, s.leave_days)
        values = (*_person(people.get(staff_id), staff_id), *counts, s.device_fault, pending[staff_id], s.abnormal)
        rows.append(Row(values, flag=pending[staff_id] > 0))
    return Table("weekly", _period(first, last), _WEEK_COLUMNS, tuple(rows), site_name)


_WEEK_KEYS = ["expected_days", "worked_days", "late", "early", "missing", "absent_days", "leave_days"]
_WEEK_KEYS += ["device_fault_days", "pending", "abnormal"]
_DAYS = frozenset({"absent_days", "rule_days", "leave_days"})
_WEEK_COLUMNS = (*(Column(k) for k in _PERSON), *(Column(k, "days" if k in _DAYS else "int") for k in _WEEK_KEYS))


def _count(days: Iterable[StaffDay], test: Callable[[StaffDay], bool]) -> defaultdict[str, int]:
    out: defaultdict[str, int] = defaultdict(int)
    for d in days:
        out[d.staff_id] += test(d)
    return out


_MONTH_KEYS = ["worked_days", "late", "early", "missing", "absent_days", "rule_days", "leave_days"]
_MONTH_KEYS += ["device_fault_days", "abnormal"]
_MONTH_COLUMNS = (*(Column(k) for k in _PERSON), *(Column(k, "days" if k in _DAYS else "int") for k in _MONTH_KEYS))
# Last: why a person's month is shorter (joined, left, or the hall went live during it), in words.
_MONTH_COLUMNS += (Column("judged_note"),)


def monthly_by_unit(
    days: Iterable[StaffDay],
    members: Iterable[StaffMember],
    rule: MonthlyRule | None,
    month: str,
    *,
    site_name: str = "",
    judged_from: date | None = None,
) -> Table:
    """The month's bulletin per dispatching unit (按月通报, WZ 002:11): a row per staff member, a subtotal per unit
    and a total. 旷工(天) includes the half days the monthly rule adds (WZ 002:10), shown again on their own.
    A hall that went live during the month (``judged_from``) says so in the period: "2026-11 (2026-11-07 ~)",
    since the days before it were not judged (nobody is absent before the system existed)."""
    chosen = [d for d in days if d.day.strftime("%Y-%m") == month]
    people = _index(members)
    sums = month_summary(chosen, rule)
    by_unit: defaultdict[str, list[str]] = defaultdict(list)
    for staff_id in sorted(sums, key=lambda s: _order(s, people)):
        by_unit[_order(staff_id, people)[0]].append(staff_id)
    notes = _judged_notes(chosen, people, month)
    rows: list[Row] = []
    for unit, staff_ids in by_unit.items():
        lines = [_month_numbers(sums[s]) for s in staff_ids]
        for staff_id, numbers in zip(staff_ids, lines, strict=True):
            values = (*_person(people.get(staff_id), staff_id), *numbers, notes.get(staff_id, ""))
            rows.append(Row(values, flag=_bad(numbers)))
        rows.append(Row((unit, Word("subtotal"), "", "", *_sum(lines), ""), total=True))
    everyone = [_month_numbers(s) for s in sums.values()]
    rows.append(Row((Word("total"), "", "", "", *_sum(everyone), ""), total=True))
    went_live_during = judged_from is not None and judged_from > date.fromisoformat(f"{month}-01")
    period = f"{month} ({judged_from} ~)" if went_live_during else month
    return Table("monthly", period, _MONTH_COLUMNS, tuple(rows), site_name)


def _judged_notes(days: list[StaffDay], people: dict[str, StaffMember], month: str) -> dict[str, Note]:
    """Each person judged on part of the month only, and why: days before their 入职日期 or the hall's go-live, and
    after their 离职日期, got no verdict (nobody is absent before they or the system existed), which the signed
    bulletin must say beside the figures it does not count."""
    first_of_month = date.fromisoformat(f"{month}-01")
    spans: dict[str, tuple[date, date]] = {}
    for d in days:
        lo, hi = spans.get(d.staff_id, (d.day, d.day))
        spans[d.staff_id] = (min(lo, d.day), max(hi, d.day))
    notes: dict[str, Note] = {}
    for staff_id, (lo, hi) in spans.items():
        m = people.get(staff_id)
        joined = m is not None and m.start_date == lo
        start = ("joined_note" if joined else "live_note", lo) if lo > first_of_month else None
        left = m is not None and m.end_date is not None and m.end_date == hi < _last_of_month(first_of_month)
        end = ("left_note", hi) if left else None
        if start or end:
            notes[staff_id] = Note(tuple(x for x in (start, end) if x is not None))
    return notes


def _last_of_month(first: date) -> date:
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)


def _month_numbers(s: MonthSummary) -> tuple[int | float, ...]:
    numbers = (s.worked_days, s.late, s.early, s.missing, s.absent_days, s.rule_absent_days, s.leave_days)
    return (*numbers, s.device_fault, s.abnormal)


def _bad(numbers: tuple[int | float, ...]) -> bool:
    absent, abnormal = numbers[_MONTH_KEYS.index("absent_days")], numbers[_MONTH_KEYS.index("abnormal")]
    return absent > 0 or abnormal > 0


def _sum(lines: list[tuple[int | float, ...]]) -> tuple[int | float, ...]:
    return tuple(sum(col) for col in zip(*lines, strict=True)) if lines else (0,) * len(_MONTH_KEYS)


# -- terminal faults ---------------------------------------------------------------------------------------
def device_fault_report(
    days: Iterable[StaffDay],
    faults: Sequence[FaultWindow],
    members: Iterable[StaffMember],
    *,
    zone: tzinfo,
    period: str = "",
    site_name: str = "",
) -> list[Table]:
    """SJ E.1.3 (001:1040): each terminal outage with the staff-days it excused, then those staff-days."""
    people = _index(members)
    excused = sorted(
        (d for d in days if d.verdict is Verdict.DEVICE_FAULT), key=lambda d: (d.day, *_order(d.staff_id, people))
    )
    per_fault: defaultdict[int, list[StaffDay]] = defaultdict(list)
    for d in excused:
        for f in _excusing(d, faults, zone):
            per_fault[id(f)].append(d)
    return [
        _fault_table(faults, per_fault, people, zone, period, site_name),
        _fault_days_table(excused, faults, people, zone, period, site_name),
    ]


def _excusing(d: StaffDay, faults: Sequence[FaultWindow], zone: tzinfo) -> list[FaultWindow]:
    """The outages of the day that the verdict names (staff may punch at any terminal, so the engine names the one
    that was down when the punch was due); all of the day's outages if it names none."""
    that_day = _faults_on(faults, d.day, zone)
    named = [f for f in that_day if f.device in d.reason]
    return named or that_day


def _fault_table(
    faults: Sequence[FaultWindow],
    per_fault: dict[int, list[StaffDay]],
    people: dict[str, StaffMember],
    zone: tzinfo,
    period: str,
    site_name: str,
) -> Table:
    rows = []
    for f in sorted(faults, key=lambda f: (f.start, f.device)):
        hit = per_fault.get(id(f), [])
        who = "、".join(dict.fromkeys(_who(d.staff_id, people) for d in hit))
        minutes = round((f.end - f.start).total_seconds() / 60)
        values = (f.device, f.start.astimezone(zone), f.end.astimezone(zone), minutes, f.reason, len(hit), who)
        rows.append(Row(values, flag=bool(hit)))
    return Table("faults", period, _FAULT_COLUMNS, tuple(rows), site_name)


_FAULT_COLUMNS = (
    Column("device"),
    Column("start", "time"),
    Column("end", "time"),
    Column("minutes", "int"),
    Column("fault_reason"),
    Column("excused", "int"),
    Column("excused_staff"),
)


def _fault_days_table(
    excused: list[StaffDay],
    faults: Sequence[FaultWindow],
    people: dict[str, StaffMember],
    zone: tzinfo,
    period: str,
    site_name: str,
) -> Table:
    columns = (Column("day", "date"), *(Column(k) for k in _PERSON), Column("fault_span"), Column("reason"))

    def row(d: StaffDay) -> Row:
        spans = _spans(_excusing(d, faults, zone), zone)
        return Row((d.day, *_person(people.get(d.staff_id), d.staff_id), spans, reason_text(d)))

    rows = [row(d) for d in excused]
    return Table("fault_days", period, columns, tuple(rows), site_name)


def _who(staff_id: str, people: dict[str, StaffMember]) -> str:
    m = people.get(staff_id)
    return f"{m.name}({staff_id})" if m is not None and m.name else staff_id


def _period(first: date, last: date) -> str:
    if first == last:
        return first.isoformat()
    return f"{first.isoformat()} ~ {last.isoformat()}"


# -- writers -------------------------------------------------------------------------------------------------
def write_csv(table: Table, path: Path, lang: str = "zh-CN", heads: MonthHeads | None = None) -> None:
    """One table: a title line, the header, the rows (UTF-8 with a BOM, so Excel opens the Chinese right); a
    month's report then the month's chain heads after a blank line, as the SLA CSV ends. The shared sheet writer
    writes it, so each figure reads as the workbook shows it (a 0.25-day penalty 0.25, never 0.2)."""
    w = labels(lang)
    write_sheets_csv(path, [_sheet(table, w)], footer=heads_footer(heads, lang))


def write_xlsx(tables: Sequence[Table], path: Path, lang: str = "zh-CN", heads: MonthHeads | None = None) -> None:
    """One sheet per table, named after it (broker/reports/sheets.py writes them); with a month's ``heads``, a
    summary sheet last: the monthly bulletin's totals and the chain heads (broker/audit/heads.py)."""
    w = labels(lang)
    sheets = [_sheet(table, w) for table in tables]
    if heads is not None:
        monthly = next((t for t in tables if t.what == "monthly"), None)
        sheets.append(with_heads(_summary(monthly, heads.month, w), heads, lang))
    write_workbook(path, sheets)


def _summary(monthly: Table | None, month: str, w: Labels) -> Sheet:
    """The bulletin's 合计 row as item/value rows (the figures it already shows), headed by the staff count."""
    items: list[tuple[str, Value, Col]] = []
    if monthly is not None and monthly.rows:
        staff = sum(not r.total for r in monthly.rows)
        numbers = slice(len(_PERSON), len(_PERSON) + len(_MONTH_KEYS))  # the note column has no total
        figures = zip(monthly.columns[numbers], monthly.rows[-1].values[numbers], strict=True)
        items = [(w["staff_count"], staff, Col("", "int"))]
        items += [(w[c.key], v, Col("", _SHEET_FMT.get(c.kind, "text"))) for c, v in figures]
    site, period = (monthly.site_name, monthly.period) if monthly is not None else ("", month)
    return Sheet(
        name=w["summary"],
        title=w.title(site, period, "summary"),
        columns=(Col(w["item"]), Col(w["value"])),
        rows=tuple((label, _excel(v, "text", w)) for label, v, _ in items),
        row_cols=tuple((Col(w["item"]), col) for _, _, col in items),
    )


def headers(table: Table, w: Labels) -> list[str]:
    return [w[c.key] for c in table.columns]


def text_rows(table: Table, w: Labels) -> list[list[str]]:
    """Every row as the CSV and the workbook show it: each column at the precision its data needs."""
    return sheet_texts(_sheet(table, w))


def text_row(table: Table, row: Row, w: Labels) -> list[str]:
    """One row of ``table`` as shown (its columns' precision comes from the whole table)."""
    return text_rows(table, w)[table.rows.index(row)]


def _text(value: Value, kind: Kind, w: Labels) -> str:
    if value is None:
        return ""
    if isinstance(value, Verdict):
        return w.verdict(value)
    if isinstance(value, Word):
        return w[value.key]
    if isinstance(value, Note):
        return w["note_sep"].join(w[key].format(day=day.isoformat()) for key, day in value.parts)
    if isinstance(value, bool):
        return w.yes_no(value) if kind != "mark" else w["yes"] if value else ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return f"{value:.1f}".removesuffix(".0")
    return str(value)


def _excel(value: Value, kind: Kind, w: Labels) -> str | int | float | date | datetime | None:
    if isinstance(value, datetime):  # Excel has no time zones: the site's wall clock, as the hall reads it
        return value.replace(tzinfo=None)
    if isinstance(value, int | float | date) and not isinstance(value, bool):
        return value
    return _text(value, kind, w) or None


def _sheet(table: Table, w: Labels) -> Sheet:
    return Sheet(
        name=w[table.what],
        title=w.title(table.site_name, table.period, table.what),
        columns=tuple(Col(w[c.key], _SHEET_FMT.get(c.kind, "text")) for c in table.columns),
        rows=tuple(
            tuple(_excel(v, c.kind, w) for v, c in zip(row.values, table.columns, strict=True)) for row in table.rows
        ),
        flagged=frozenset(i for i, row in enumerate(table.rows) if row.flag),
        bold=frozenset(i for i, row in enumerate(table.rows) if row.total),
    )
