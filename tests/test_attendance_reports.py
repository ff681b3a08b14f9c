"""Attendance reports on both stores: verdicts recomputed from the raw punches (a punch that arrives days late
counts, an unsynchronised clock is read at the receive time and flagged, a locked day keeps its verdict), the
monthly bulletin with Wanzhou's 4-late half day, the terminal-fault report, and the XLSX / CSV / CLI outputs."""

from __future__ import annotations

import asyncio
import csv
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import openpyxl
import pytest
import sqlalchemy as sa

from broker.attendance.labels import labels
from broker.attendance.model import StaffDay, Verdict
from broker.attendance.policy import MonthlyRule, PunchPolicy
from broker.attendance.reports import (
    Table,
    daily_exceptions,
    device_fault_report,
    exception_details,
    monthly_by_unit,
    text_row,
    weekly_summary,
    write_csv,
    write_xlsx,
)
from broker.attendance.service import Period, load_period, load_punches, staff_days
from broker.calendar import CalendarConfig, SiteCalendar, TimetableConfig
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import attendance_exceptions, attendance_locks, devices, events, presence_history, staff
from tests.support.procs import write_toml

SITE = "wz"
NAME = "万州区政务服务中心"
ZONE = ZoneInfo("Asia/Shanghai")
TERMINAL = "att-01"
WANZHOU = CalendarConfig(
    timezone="Asia/Shanghai",
    timetables=[TimetableConfig(name="全年", start="01-01", end="12-31", sessions=["09:00-12:00", "13:30-17:30"])],
)
LIVE = date(2026, 10, 1)  # the hall went live before the month the tests look at
SITES = Sites({SITE: SiteConfig(name=NAME, calendar=WANZHOU, go_live=LIVE)})
AFTER = datetime(2026, 12, 5, 12, 0, tzinfo=ZONE)  # "now" for a finished November
MARKET, SOCIAL = "区市场监管局", "区人力社保局"
PEOPLE = [("A01", "张三", MARKET, "3号窗口"), ("B02", "李四", MARKET, "4号窗口"), ("C03", "王五", SOCIAL, "7号窗口")]


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=ZONE)


def nov(day: int) -> date:
    return date(2026, 11, day)


# -- rows ---------------------------------------------------------------------------------------------------
_seq = [0]


def punch(
    staff_id: str, ts: datetime, *, received: datetime | None = None, synced: bool = True, method: str = "face"
) -> dict[str, Any]:
    _seq[0] += 1
    return {
        "site": SITE,
        "device": TERMINAL,
        "id": str(uuid4()),
        "type": "attendance.punch",
        "seq": _seq[0],
        "boot_id": "boot-1",
        "ts": ts,
        "clock_synced": synced,
        "replayed": False,
        "received_at": received or ts + timedelta(seconds=2),
        "data": json.dumps({"staff_id": staff_id, "method": method, "direction": "unknown", "offline": False}),
    }


def person(staff_id: str, name: str, unit: str, window: str) -> dict[str, Any]:
    return {"site": SITE, "staff_id": staff_id, "name": name, "unit": unit, "window": window, "post": "A",
            "start_date": date(2026, 1, 1), "end_date": None, "updated_at": at(1, 0, month=1)}  # fmt: skip


def exception(staff_id: str, kind: str, start: datetime, end: datetime, filed: datetime, reason: str) -> dict[str, Any]:
    return {"id": str(uuid4()), "site": SITE, "staff_id": staff_id, "kind": kind, "start": start, "end": end,
            "minutes": 0, "filed_at": filed, "filed_by": "window-leader", "reason": reason, "approved": True,
            "late": False}  # fmt: skip


def lock(staff_id: str, day: date, verdict: Verdict, reason: str) -> dict[str, Any]:
    return {"site": SITE, "staff_id": staff_id, "day": day, "verdict": verdict.value, "reason": reason,
            "locked_at": at(day.day, 18) + timedelta(days=3)}  # fmt: skip


async def insert(store: Store, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    if rows:
        async with store.engine.begin() as conn:
            await conn.execute(table.insert(), rows)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    await insert(s, staff, [person(*p) for p in PEOPLE])
    await insert(s, devices, [{"key": f"{SITE}/{TERMINAL}", "site": SITE, "device": TERMINAL, "role": "attendance",
                               "first_seen": at(1, 0, month=10)}])  # fmt: skip
    yield s
    await s.close()


async def day_of(store: Store, staff_id: str, day: date, now: datetime) -> StaffDay:
    days = await staff_days(store, SITES, SITE, day, day, now=now)
    return next(d for d in days if d.staff_id == staff_id)


# -- recomputed from the raw punches ---------------------------------------------------------------------------
async def test_a_punch_arriving_days_late_turns_missing_in_into_on_time(store: Store) -> None:
    await insert(store, events, [punch("A01", at(3, 17, 40))])
    before = await day_of(store, "A01", nov(3), now=at(4, 9))
    assert before.verdict is Verdict.MISSING_IN

    # The terminal was offline: its sign-in of 3 November reaches the centre on the 6th.
    await insert(store, events, [punch("A01", at(3, 8, 50), received=at(6, 10))])
    after = await day_of(store, "A01", nov(3), now=at(6, 10, 5))
    assert after.verdict is Verdict.ON_TIME, after.reason
    assert not after.untrusted and len(after.punches) == 2


async def test_an_unsynchronised_punch_counts_at_its_receive_time_and_is_flagged(store: Store) -> None:
    await insert(
        store,
        events,
        [
            # A terminal with a flat clock battery stamps 1970: only the receive time can place the punch.
            punch("A01", datetime(1970, 1, 1, 0, 3, tzinfo=UTC), received=at(3, 8, 55), synced=False),
            punch("A01", at(3, 17, 40)),
            # A drifting clock says 08:50, the centre received it at 09:12: the receive time decides.
            punch("B02", at(3, 8, 50), received=at(3, 9, 12), synced=False),
            punch("B02", at(3, 17, 40)),
        ],
    )
    a, b = await day_of(store, "A01", nov(3), AFTER), await day_of(store, "B02", nov(3), AFTER)
    assert (a.verdict, a.untrusted) == (Verdict.ON_TIME, True), a.reason
    assert (b.verdict, b.late_min, b.untrusted) == (Verdict.LATE, 12, True), b.reason
    async with store.engine.connect() as conn:
        loaded = await load_punches(conn, SITE, at(3, 0), at(4, 0), PunchPolicy())
    first = loaded["A01"][0]
    assert (first.at, first.trusted) == (at(3, 8, 55), False)


async def test_the_centre_clock_decides_when_the_site_says_so(store: Store) -> None:
    await insert(store, events, [punch("A01", at(3, 8, 58), received=at(3, 9, 4))])
    async with store.engine.connect() as conn:
        device = await load_punches(conn, SITE, at(3, 0), at(4, 0), PunchPolicy())
        centre = await load_punches(conn, SITE, at(3, 0), at(4, 0), PunchPolicy(authoritative="centre"))
    assert device["A01"][0].at == at(3, 8, 58)
    assert centre["A01"][0].at == at(3, 9, 4)


async def test_a_locked_day_keeps_its_frozen_verdict_when_the_missing_punch_arrives(store: Store) -> None:
    await insert(store, events, [punch("A01", at(3, 17, 40)), punch("B02", at(3, 17, 40))])
    await insert(store, attendance_locks, [lock("A01", nov(3), Verdict.MISSING_IN, "未签到, 逾期未补证明")])
    late = [punch(s, at(3, 8, 50), received=at(9, 10)) for s in ("A01", "B02")]
    await insert(store, events, late)

    locked, free = await day_of(store, "A01", nov(3), AFTER), await day_of(store, "B02", nov(3), AFTER)
    assert (locked.verdict, locked.locked, locked.reason) == (Verdict.MISSING_IN, True, "未签到, 逾期未补证明")
    assert any("正常" in n for n in locked.notes)  # what the punches say now is kept beside it
    assert (free.verdict, free.locked) == (Verdict.ON_TIME, False)


async def test_days_before_joining_after_leaving_and_after_now_are_not_judged(store: Store) -> None:
    await insert(store, staff, [person("D04", "赵六", SOCIAL, "8号窗口") | {"start_date": nov(4), "end_date": nov(5)}])
    days = await staff_days(store, SITES, SITE, nov(2), nov(30), now=at(10, 12))
    assert sorted(d.day for d in days if d.staff_id == "D04") == [nov(4), nov(5)]
    assert max(d.day for d in days) == nov(10)


async def test_a_site_without_an_attendance_rule_judges_nobody(store: Store) -> None:
    await insert(store, events, [punch("A01", at(3, 17, 40))])
    off = Sites({SITE: SiteConfig(name=NAME, calendar=WANZHOU, go_live=LIVE, attendance=PunchPolicy(enabled=False))})
    assert await staff_days(store, off, SITE, nov(2), nov(6), now=AFTER) == []
    assert len(await staff_days(store, SITES, SITE, nov(2), nov(6), now=AFTER)) == 3 * 5


# -- a month at Wanzhou ---------------------------------------------------------------------------------------
@dataclass
class Month:
    """Every November working day 08:50 in / 17:40 out, except what ``special`` changes (A01 4 lates, B02 3 lates
    and one with proof, C03 2 lates + 2 early leaves and a day away, a terminal down on the 25th)."""

    punches: list[dict[str, Any]] = field(default_factory=list)

    def day(
        self, staff_id: str, d: int, inn: tuple[int, int] | None = (8, 50), out: tuple[int, int] | None = (17, 40)
    ) -> None:
        self.punches += [punch(staff_id, at(d, *t)) for t in (inn, out) if t is not None]


SPECIAL: dict[tuple[str, int], tuple[tuple[int, int] | None, tuple[int, int] | None]] = {
    **{("A01", d): ((9, 10), (17, 40)) for d in (2, 3, 4, 5)},  # 4 lates: half a day of absence (WZ 002:10)
    ("A01", 24): ((8, 50), None),  # no sign-out, locked as 非正常考勤
    ("A01", 25): (None, (17, 40)),  # the terminal was down when they came in
    **{("B02", d): ((9, 5), (17, 40)) for d in (9, 10, 11)},  # 3 lates: under the rule
    ("B02", 16): ((9, 20), (17, 40)),  # late with proof filed in time: not counted
    ("B02", 20): (None, None),  # a day of leave
    ("B02", 25): (None, (17, 40)),
    **{("C03", d): ((9, 2), (17, 40)) for d in (2, 3)},  # 2 lates + 2 early leaves = 4: half a day
    **{("C03", d): ((8, 50), (17, 0)) for d in (4, 5)},
    ("C03", 12): (None, None),  # away without leave: 旷工
}


@pytest.fixture
async def november(store: Store) -> Period:
    cal = SiteCalendar(WANZHOU)
    month = Month()
    for staff_id, *_ in PEOPLE:
        for d in range(1, 31):
            if cal.is_working_day(nov(d)):
                month.day(staff_id, d, *SPECIAL.get((staff_id, d), ((8, 50), (17, 40))))
    await insert(store, events, month.punches)
    await insert(store, attendance_exceptions, [
        exception("B02", "evidence", at(16, 9), at(16, 9, 20), at(16, 12), "区局业务会议延误, 附会议通知"),
        exception("B02", "leave", at(20, 9), at(20, 17, 30), at(18, 10), "病假, 附病历"),
    ])  # fmt: skip
    await insert(store, attendance_locks, [lock("A01", nov(24), Verdict.MISSING_OUT, "未签退, 逾期未补证明")])
    key = f"{SITE}/{TERMINAL}"
    await insert(store, presence_history, [
        {"key": key, "state": "offline", "session": 1, "at": at(25, 8), "reason": "will"},
        {"key": key, "state": "online", "session": 2, "at": at(25, 10, 30), "reason": "birth"},
    ])  # fmt: skip
    return await load_period(store, SITES, SITE, nov(1), nov(30), now=AFTER)


def rows_by_staff(table: Table, lang: str = "zh-CN") -> dict[str, list[str]]:
    w = labels(lang)
    return {r.values[2]: text_row(table, r, w) for r in table.rows if isinstance(r.values[2], str) and r.values[2]}


async def test_monthly_bulletin_counts_per_unit_with_the_four_late_half_day(november: Period) -> None:
    table = monthly_by_unit(november.days, november.members, MonthlyRule(), "2026-11", site_name=NAME)
    rows = rows_by_staff(table)
    # worked, late, early, missing, absent (days, rule included), of which the rule, leave, terminal fault, abnormal;
    # a days column shows one decimal throughout once a half day is in it, as the workbook does; the last: a note
    # for a person judged on part of the month only
    assert rows["A01"][4:] == ["21", "4", "0", "1", "0.5", "0.5", "0", "1", "1", ""]
    assert rows["B02"][4:] == ["20", "3", "0", "0", "0.0", "0.0", "1", "1", "0", ""]
    assert rows["C03"][4:] == ["20", "2", "2", "0", "1.5", "0.5", "0", "0", "0", ""]
    texts = [text_row(table, r, labels("zh-CN")) for r in table.rows if r.total]
    assert [MARKET, "小计", "", "", "41", "7", "0", "1", "0.5", "0.5", "1", "2", "1", ""] in texts
    assert texts[-1] == ["合计", "", "", "", "61", "9", "2", "1", "2.0", "1.0", "1", "2", "1", ""]
    without_rule = rows_by_staff(monthly_by_unit(november.days, november.members, None, "2026-11"))
    assert without_rule["A01"][8] == "0" and without_rule["C03"][8] == "1"


async def test_daily_exceptions_show_what_the_window_section_reviews(november: Period) -> None:
    w = labels("zh-CN")

    def daily(d: int) -> dict[str, list[str]]:
        table = daily_exceptions(november.days, november.members, nov(d), faults=november.faults, zone=ZONE)
        return {str(r.values[2]): text_row(table, r, w) for r in table.rows}

    assert list(daily(16)) == ["B02"]
    unit, window, _, name, verdict, reason, proof, fault, untrusted, locked = daily(16)["B02"]
    assert (unit, window, name, verdict, proof) == (MARKET, "4号窗口", "李四", "迟到", "是")
    assert (fault, untrusted, locked) == ("", "", "")
    assert "09:20 签到" in reason and "已提交证明" in reason
    assert daily(24)["A01"][4:7] == ["未签退", "未签退, 逾期未补证明", "否"] and daily(24)["A01"][9] == "是"
    assert daily(12)["C03"][4] == "旷工" and daily(20)["B02"][4] == "请假"
    on_25 = daily(25)
    assert sorted(on_25) == ["A01", "B02"]
    assert {r[4] for r in on_25.values()} == {"考勤设备故障"}
    assert on_25["A01"][7] == f"{TERMINAL} 11-25 08:00-10:30"
    assert daily(17) == {}


async def test_weekly_summary_counts_each_person_and_what_still_needs_proof(november: Period) -> None:
    table = weekly_summary(november.days, november.members, nov(9), nov(15))
    rows = rows_by_staff(table)
    # expected, worked, late, early, missing, absent, leave, terminal fault, proof pending, abnormal
    assert rows["B02"][4:] == ["5", "5", "3", "0", "0", "0", "0", "0", "3", "0"]
    assert rows["C03"][4:] == ["5", "4", "0", "0", "0", "1", "0", "0", "1", "0"]
    assert rows["A01"][4:] == ["5", "5", "0", "0", "0", "0", "0", "0", "0", "0"]


async def test_fault_report_lists_the_terminal_outage_and_the_staff_days_it_excused(november: Period) -> None:
    outages, excused = device_fault_report(november.days, november.faults, november.members, zone=ZONE)
    w = labels("zh-CN")
    assert len(outages.rows) == 1
    device, start, end, minutes, why, count, who = text_row(outages, outages.rows[0], w)
    assert (device, start, end, minutes, count) == (TERMINAL, "2026-11-25 08:00", "2026-11-25 10:30", "150", "2")
    assert who == "张三(A01)、李四(B02)" and "离线" in why
    assert [text_row(excused, r, w)[:5] for r in excused.rows] == [
        ["2026-11-25", MARKET, "3号窗口", "A01", "张三"],
        ["2026-11-25", MARKET, "4号窗口", "B02", "李四"],
    ]


# -- files ---------------------------------------------------------------------------------------------------
async def test_xlsx_reopened_has_the_sheets_chinese_headers_and_numbers(november: Period, tmp_path: Path) -> None:
    monthly = monthly_by_unit(november.days, november.members, MonthlyRule(), "2026-11", site_name=NAME)
    details = exception_details(november.days, november.members, nov(1), nov(30), site_name=NAME)
    faults = device_fault_report(november.days, november.faults, november.members, zone=ZONE, period="2026-11")
    path = tmp_path / "november.xlsx"
    write_xlsx([monthly, details, *faults], path)

    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["月度考勤通报", "考勤异常明细", "考勤设备故障", "设备故障免责明细"]
    ws = book["月度考勤通报"]
    assert ws["A1"].value == f"{NAME} 2026-11 月度考勤通报"
    header = [c.value for c in ws[2]]
    assert header == ["单位", "窗口", "工号", "姓名", "出勤天数", "迟到次数", "早退次数", "未签到/未签退", "旷工(天)",
                      "其中迟到早退累计折算(天)", "请假(天)", "设备故障(人日)", "非正常考勤", "考勤期说明"]  # fmt: skip
    assert ws.freeze_panes == "A3" and ws["A2"].font.bold
    a01 = next(r for r in ws.iter_rows(min_row=3) if r[2].value == "A01")
    assert a01[8].value == 0.5 and a01[8].number_format == "0.0" and a01[5].value == 4
    assert book["考勤设备故障"]["B3"].value == datetime(2026, 11, 25, 8, 0)  # site wall clock, no zone
    assert ws.column_dimensions["J"].width > 20  # the widest header fits

    write_xlsx([monthly], path, lang="en")
    english = openpyxl.load_workbook(path)
    assert english.sheetnames == ["Monthly attendance"] and english.active["F2"].value == "Late"


async def test_csv_reread_with_utf8_sig_matches_the_table(november: Period, tmp_path: Path) -> None:
    monthly = monthly_by_unit(november.days, november.members, MonthlyRule(), "2026-11", site_name=NAME)
    path = tmp_path / "november.csv"
    write_csv(monthly, path)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # Excel opens it as UTF-8
    with path.open(encoding="utf-8-sig", newline="") as f:
        title, header, *rows = list(csv.reader(f))
    w = labels("zh-CN")
    assert title == [f"{NAME} 2026-11 月度考勤通报"] and header[4] == "出勤天数"
    assert rows == [text_row(monthly, r, w) for r in monthly.rows]
    assert ["区市场监管局", "3号窗口", "A01", "张三", "21", "4", "0", "1", "0.5", "0.5", "0", "1", "1", ""] in rows


# Days columns as the monthly rule makes them: (case, absence per person, what a reader sees in the CSV).
DAYS_CASES = [
    ("WZ002:10 half day for 4 lates", (0.5, 0.0, 0.5), ("0.5", "0.0", "0.5", "1.0")),
    ("WZ002:10 with absent_days = 0.25 (a site's rule)", (0.25, 1.0, 0.5), ("0.25", "1.00", "0.50", "1.75")),
    ("QP000:43 whole days of 旷工 only", (1, 2, 0), ("1", "2", "0", "3")),
]


@pytest.mark.parametrize(("case", "absent", "shown"), DAYS_CASES, ids=[c[0] for c in DAYS_CASES])
def test_the_csv_shows_each_days_figure_as_the_workbook_does_so_the_rows_add_up(
    case: str, absent: tuple[float, ...], shown: tuple[str, ...], tmp_path: Path
) -> None:
    """GIVEN a bulletin whose 旷工(天) column holds the monthly rule's penalties and their total WHEN written as
    CSV and as XLSX THEN the CSV shows each figure at the precision the workbook's column shows (a 0.25-day
    penalty reads 0.25, not 0.2), so the rows visibly add up to the total in both files (issue 17 item 8).
    The CSV had its own writer, which printed one decimal: 0.25 read 0.2 and 1.00 read 1."""
    from broker.attendance.reports import Column, Row, Word

    columns = (Column("staff_id"), Column("late", "int"), Column("absent_days", "days"))
    rows = [Row((f"S{i}", 4, v)) for i, v in enumerate(absent)]
    table = Table("monthly", "2026-11", columns, (*rows, Row((Word("total"), 12, sum(absent)), total=True)), NAME)
    write_csv(table, tmp_path / "m.csv")
    write_xlsx([table], tmp_path / "m.xlsx")

    with (tmp_path / "m.csv").open(encoding="utf-8-sig", newline="") as f:
        _title, _header, *lines = list(csv.reader(f))
    assert tuple(line[2] for line in lines) == shown, case
    ws = openpyxl.load_workbook(tmp_path / "m.xlsx")["月度考勤通报"]
    cells = [ws.cell(r, 3) for r in range(3, 3 + len(lines))]
    (decimals,) = {len(c.number_format) - 2 if c.number_format.startswith("0.") else 0 for c in cells}
    assert tuple(f"{c.value:.{decimals}f}" for c in cells) == shown, "the workbook shows the same"
    assert sum(float(s) for s in shown[:-1]) == pytest.approx(float(shown[-1])), "the rows add up as shown"


def test_cli_prints_the_day_and_writes_the_month_and_fault_files(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"

    async def seed() -> None:
        s = await Store.open(url)
        await insert(s, staff, [person(*PEOPLE[0])])
        await insert(s, events, [punch("A01", at(3, 9, 10)), punch("A01", at(3, 17, 40))])
        await s.close()

    asyncio.run(seed())
    cfg = write_toml(
        tmp_path / "centre.toml", {"instance": "cli"}, {"store": {"url": url}, f"sites.{SITE}": {"name": NAME}}
    )

    def hallfleet(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "hallfleet.cli", "attendance", *args, "--config", str(cfg)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)

    day = hallfleet("day", SITE, "2026-11-03")
    assert day.returncode == 0, day.stderr
    assert "A01\t张三\t迟到" in day.stdout and "09:10 签到" in day.stdout
    month = hallfleet("month", SITE, "2026-11", "--out", str(tmp_path / "m.xlsx"))
    assert month.returncode == 0, month.stderr
    sheets = openpyxl.load_workbook(tmp_path / "m.xlsx").sheetnames
    assert sheets == ["月度考勤通报", "考勤异常明细", "疑似代打卡核查", "汇总"]  # 汇总: the chain heads
    faults = hallfleet("faults", SITE, "2026-11", "--out", str(tmp_path / "f.csv"), "--lang", "en")
    assert faults.returncode == 0, faults.stderr
    assert "Terminal" in (tmp_path / "f.csv").read_text(encoding="utf-8-sig")
    bad = hallfleet("month", SITE, "2026-13", "--out", str(tmp_path / "m.pdf"))
    assert bad.returncode == 2 and "--out must end in .csv or .xlsx" in bad.stderr


# -- a hall that goes live mid-month ----------------------------------------------------------------------------
async def test_a_hall_live_from_the_5th_judges_reports_and_locks_nothing_before(store: Store, tmp_path: Path) -> None:
    """Nobody is absent before the system existed: the month's bulletin of a hall live from Thu 2026-11-05 has no
    absence for the 2nd-4th, says where judging starts, and the lock job (no fixed look-back) writes nothing
    before it. WZ002:10 (旷工), QP000:43 (locking)."""
    from broker.attendance.locking import lock_due

    live = Sites({SITE: SiteConfig(name=NAME, calendar=WANZHOU, go_live=nov(5))})
    days = [nov(d) for d in range(5, 31) if nov(d).weekday() < 5]  # no statutory holiday in November 2026
    rows = [punch(s, at(d.day, 8, 50)) for d in days for s in ("A01", "B02")]
    rows += [punch(s, at(d.day, 17, 40)) for d in days for s in ("A01", "B02")]
    await insert(store, events, rows)  # C03 never punches: absent from the 5th on, not before

    p = await load_period(store, live, SITE, nov(1), nov(30), now=AFTER)
    assert p.judged_from == nov(5) and min(d.day for d in p.days) == nov(5)
    table = monthly_by_unit(p.days, p.members, None, "2026-11", site_name=NAME, judged_from=p.judged_from)
    assert table.period == "2026-11 (2026-11-05 ~)"
    absent = {r.values[2]: r.values[8] for r in table.rows if r.values[2] in ("A01", "B02", "C03")}
    assert absent == {"A01": 0, "B02": 0, "C03": len(days)}, "C03 absent on the working days from the 5th only"
    path = tmp_path / "month.xlsx"
    write_xlsx([table], path)
    title = openpyxl.load_workbook(path).worksheets[0].cell(1, 1).value
    assert title is not None and "2026-11 (2026-11-05 ~)" in title

    async def compute(site: str, first: date, last: date) -> list[StaffDay]:
        return await staff_days(store, live, site, first, last, now=AFTER)

    await lock_due(store, live, AFTER, compute)
    locked = await store.fetch(sa.select(attendance_locks))
    assert locked == [], "A01, B02 on time; C03 not back since the 5th, so the absences stay open (QP 000:40)"
    # Without go_live the first stored punch decides: the same month starts on the 5th too.
    derived = await load_period(store, SITES_WITHOUT_GO_LIVE, SITE, nov(1), nov(30), now=AFTER)
    assert derived.judged_from == nov(5)


SITES_WITHOUT_GO_LIVE = Sites({SITE: SiteConfig(name=NAME, calendar=WANZHOU)})


# (case, go-live, D04's 入职日期, D04's 离职日期, the note on D04's row, D04's 旷工 days). D04 never punches.
JOINED, LEFT, LIVE_5 = "2026-11-16 入职, 此前不考勤", "2026-11-20 离职, 此后不考勤", "2026-11-05 系统上线, 此前不考勤"
JAN = date(2026, 1, 1)
PART_MONTH_CASES = [
    ("hall live all month, joined Mon 11-16 (WZ002:10 旷工 only once employed)", LIVE, nov(16), None, JOINED, 11),
    ("hall live from Thu 11-05 (go_live), joined before it", nov(5), JAN, None, LIVE_5, 18),
    ("joined after go-live: the later day counts", nov(5), nov(16), None, JOINED, 11),
    ("left Fri 11-20: no verdict after it", LIVE, JAN, nov(20), LEFT, 15),
    ("joined 11-16 and left 11-20", LIVE, nov(16), nov(20), f"{JOINED}; {LEFT}", 5),
    ("employed the whole month: no note", LIVE, JAN, None, "", 21),
    ("left on the month's last day: the whole month", LIVE, JAN, nov(30), "", 21),
]


@pytest.mark.parametrize(
    ("case", "live", "joined", "left", "note", "absent"), PART_MONTH_CASES, ids=[c[0] for c in PART_MONTH_CASES]
)
async def test_the_bulletin_says_why_a_persons_month_is_short(
    store: Store, tmp_path: Path, case: str, live: date, joined: date, left: date | None, note: str, absent: int
) -> None:
    """Nobody is absent before the system or the person existed (issue 17 item 5): days before the hall's go-live
    or the person's 入职日期, and after their 离职日期, get no verdict, and the signed bulletin says so on the
    person's row instead of leaving a reader to wonder why their 旷工 is short. November 2026 has 21 working
    days in Wanzhou's calendar (no statutory holiday, WZ002:8)."""
    row = person("D04", "赵六", SOCIAL, "8号窗口") | {"start_date": joined, "end_date": left}
    await insert(store, staff, [row])
    sites = Sites({SITE: SiteConfig(name=NAME, calendar=WANZHOU, go_live=live)})
    p = await load_period(store, sites, SITE, nov(1), nov(30), now=AFTER)
    table = monthly_by_unit(p.days, p.members, None, "2026-11", site_name=NAME, judged_from=p.judged_from)
    d04 = rows_by_staff(table)["D04"]
    assert (d04[-1], d04[8]) == (note, str(absent)), case
    path = tmp_path / "m.xlsx"
    write_xlsx([table], path)
    ws = openpyxl.load_workbook(path)["月度考勤通报"]
    assert ws.cell(2, ws.max_column).value == "考勤期说明"
    (shown,) = [r[-1].value for r in ws.iter_rows(min_row=3) if r[2].value == "D04"]
    assert (shown or "") == note


async def test_the_month_workbook_is_assembled_once_for_the_cli_and_the_dashboard(store: Store) -> None:
    """One assembly of the signed month (broker/attendance/month_report.py) for `hallfleet attendance month`, the
    dashboard's download and the demo: the bulletin saying where judging starts in a hall live from the 5th, the
    exception details for the whole month, the proxy-clocking sheet and the month's chain heads. The dashboard's
    own copy had dropped the first and the third."""
    from broker.attendance.month_report import month_workbook

    live = Sites({SITE: SiteConfig(name=NAME, calendar=WANZHOU, go_live=nov(5))})
    await insert(store, events, [punch("A01", at(5, 8, 50)), punch("A01", at(5, 17, 40))])
    book = await month_workbook(store, live, SITE, "2026-11", now=AFTER)
    assert [t.what for t in book.tables] == ["monthly", "details", "clocking"]
    assert book.tables[0].period == "2026-11 (2026-11-05 ~)" and book.tables[1].period == "2026-11"
    assert book.heads.month == "2026-11" and book.period.judged_from == nov(5)
