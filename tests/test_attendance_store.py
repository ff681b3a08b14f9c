"""Attendance in the store, on both backends: the roster, exceptions against the correction deadline,
terminal fault windows, locking at the deadline, AB coverage and the CLI."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from openpyxl import Workbook

from broker.attendance.ab import coverage_gaps
from broker.attendance.exceptions import (
    correction_deadline,
    exceptions_for,
    file_exception,
    locks_for,
    withdraw_exception,
)
from broker.attendance.faults import fault_windows
from broker.attendance.locking import lock_due
from broker.attendance.model import ExceptionKind, StaffDay, Verdict
from broker.attendance.roster import RosterError, StaffMember, import_roster, read_roster, roster
from broker.attendance.verdicts import EXCUSED_NOTE
from broker.calendar import CalendarConfig, SiteCalendar, TimetableConfig
from broker.rules.incidents import IncidentRules, Signal
from broker.sites import SiteConfig, Sites
from broker.store.db import Batch, StatusUpdate, Store
from broker.store.keys import DeviceKey
from broker.store.schema import attendance_exceptions, attendance_locks, audit_log, events, staff
from hallfleet.cli import main
from protocol.envelope import Presence, StatusMessage
from protocol.ids import uuid7

SH = ZoneInfo("Asia/Shanghai")
QP_HOURS = [TimetableConfig(name="全年", start="01-01", end="12-31", sessions=["08:30-12:00", "13:30-17:00"])]
QP = SiteConfig(name="青浦区政务服务中心", calendar=CalendarConfig(timetables=QP_HOURS))
SITES = Sites({"qp": QP})
CAL = SiteCalendar(QP.calendar)
LIVE = Sites({"qp": QP.model_copy(update={"go_live": date(2026, 11, 20)})})  # the locking tests' hall
HEADERS_ZH = ["站点", "工号", "姓名", "单位", "窗口", "AB岗", "入职日期", "离职日期"]


def local(day: date, hhmm: str) -> datetime:
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime(day.year, day.month, day.day, h, m, tzinfo=SH)


def member(
    staff_id: str, window: str = "W1", post: str = "A", start: date = date(2026, 1, 1), end_date: date | None = None
) -> StaffMember:
    return StaffMember("qp", staff_id, f"名{staff_id}", "区税务局", window, post, start, end_date)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    yield s
    await s.close()


async def seed_staff(store: Store, *members: StaffMember) -> None:
    await import_roster(store, list(members), by="admin", at=datetime(2026, 1, 1, tzinfo=UTC))


async def punched(store: Store, staff_id: str, when: datetime) -> None:
    """An attendance punch as the consumer stores it (terminal clock synchronised)."""
    async with store.engine.begin() as conn:
        await conn.execute(
            events.insert().values(
                site="qp", device="att-1", id=uuid7(), type="attendance.punch", seq=int(when.timestamp()),
                boot_id="b", ts=when, clock_synced=True, replayed=False, received_at=when,
                data=json.dumps({"staff_id": staff_id, "method": "face"}),
            )
        )  # fmt: skip


async def audits(store: Store, action: str) -> list[sa.Row[tuple[object, ...]]]:
    return await store.fetch(sa.select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id))


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADERS_ZH) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


# -- roster ----------------------------------------------------------------------------------------------
async def test_a_csv_roster_with_chinese_headers_and_a_bom_imports_and_a_reimport_updates_only_changes(
    store: Store, tmp_path: Path
) -> None:
    rows = [
        ["qp", "S001", "张三", "区税务局", "W1", "A岗", "2025-03-01", ""],
        ["qp", "S002", "李四", "区税务局", "W1", "B", "2025/3/1", ""],
    ]
    path = write_csv(tmp_path / "roster.csv", rows)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf"), "Excel's CSV UTF-8 writes a BOM"
    members = read_roster(path)
    assert members[0] == StaffMember("qp", "S001", "张三", "区税务局", "W1", "A", date(2025, 3, 1), None)
    assert members[1].post == "B" and members[1].start_date == date(2025, 3, 1)
    assert await import_roster(store, members, by="admin", at=datetime(2026, 1, 5, tzinfo=UTC)) == (2, 0)

    rows[1][7] = "2026-06-30"  # S002 leaves
    rows.append(["qp", "S003", "王五", "区市场监管局", "W2", "", "2026-07-01", ""])
    later = datetime(2026, 6, 1, tzinfo=UTC)
    assert await import_roster(store, read_roster(write_csv(path, rows)), by="admin", at=later) == (1, 1)
    assert await import_roster(store, read_roster(path), by="admin", at=later) == (0, 0), "nothing changed"

    (s002,) = await store.fetch(sa.select(staff).where(staff.c.staff_id == "S002"))
    assert (s002.end_date, s002.updated_at) == (date(2026, 6, 30), later)
    updates = await audits(store, "staff.update")
    assert [(u.target, json.loads(u.detail)) for u in updates] == [("qp/S002", {"end_date": "2026-06-30"})]
    assert len(await audits(store, "staff.add")) == 3


async def test_an_xlsx_roster_with_english_headers_takes_date_cells_and_numeric_ids(
    store: Store, tmp_path: Path
) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["Site", "staff_id", "name", "unit", "window", "post", "start_date", "end_date", "备注"])
    ws.append(["qp", 1001, "赵六", "区人社局", "W3", "a", datetime(2025, 9, 1), None, "ignored"])
    ws.append([None] * 9)  # blank rows are skipped
    ws.append(["qp", "S9", "钱七", "区人社局", "W3", "B", "2025-09-01", datetime(2026, 2, 28)])
    wb.save(tmp_path / "roster.xlsx")

    members = read_roster(tmp_path / "roster.xlsx")
    assert [(m.staff_id, m.post, m.start_date, m.end_date) for m in members] == [
        ("1001", "A", date(2025, 9, 1), None),
        ("S9", "B", date(2025, 9, 1), date(2026, 2, 28)),
    ]
    assert await import_roster(store, members, by="admin", at=datetime(2026, 1, 5, tzinfo=UTC)) == (2, 0)


def test_roster_errors_name_the_file_row_and_column(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(HEADERS_ZH)
    for i in range(5):
        ws.append(["qp", f"S{i}", "某", "单位", "W1", "", "2026-01-01", None])
    ws.append(["qp", "S9", "某", "单位", "W1", "", "2026-13-01", None])  # spreadsheet row 7
    wb.save(tmp_path / "roster.xlsx")
    with pytest.raises(RosterError, match=r"roster.xlsx 第 7 行, 入职日期: '2026-13-01' 不是日期"):
        read_roster(tmp_path / "roster.xlsx")

    cases = {
        "第 3 行, 工号: '' 为空": ["qp", "", "某", "", "", "", "2026-01-01", ""],
        "第 3 行, AB岗: 'C' 应为 A、B 或留空": ["qp", "S2", "某", "", "W1", "C", "2026-01-01", ""],
        "第 3 行, 离职日期: '2025-01-01' 早于入职日期": ["qp", "S2", "某", "", "", "", "2026-01-01", "2025-01-01"],
        "第 3 行: 工号 S1 在 qp 与第 2 行重复": ["qp", "S1", "某", "", "", "", "2026-01-01", ""],
    }
    for message, bad in cases.items():
        path = write_csv(tmp_path / "r.csv", [["qp", "S1", "某", "", "", "", "2026-01-01", ""], bad])
        with pytest.raises(RosterError, match=message):
            read_roster(path)
    with pytest.raises(RosterError, match="第 1 行: 缺少列 入职日期"):
        read_roster(write_csv(tmp_path / "r.csv", [], header=["站点", "工号", "姓名"]))


async def test_roster_lists_whoever_was_employed_during_the_period(store: Store) -> None:
    await seed_staff(
        store,
        member("OLD", start=date(2025, 1, 1), end_date=date(2026, 10, 31)),
        member("LEFT", start=date(2025, 1, 1), end_date=date(2026, 11, 2)),
        member("NOW", start=date(2025, 1, 1)),
        member("NEW", start=date(2026, 11, 30)),
        member("LATER", start=date(2026, 12, 1)),
        replace(member("ELSEWHERE"), site="wz"),
    )
    async with store.engine.connect() as conn:
        november = await roster(conn, "qp", date(2026, 11, 1), date(2026, 11, 30))
        first_week = await roster(conn, "qp", date(2026, 11, 1), date(2026, 11, 7))
    assert [m.staff_id for m in november] == ["LEFT", "NEW", "NOW"]
    assert [m.staff_id for m in first_week] == ["LEFT", "NOW"]


# -- the correction deadline -----------------------------------------------------------------------------
def test_the_correction_deadline_counts_working_days_skipping_weekends_and_national_day() -> None:
    # Friday 2026-11-20: Monday and Tuesday are the two working days; the deadline is Tuesday's close.
    assert correction_deadline(CAL, date(2026, 11, 20), 2) == local(date(2026, 11, 24), "17:00")
    assert correction_deadline(CAL, date(2026, 11, 21), 2) == local(date(2026, 11, 24), "17:00"), "a Saturday"
    # National Day 2026 (chinesecalendar): Oct 1-7 off, Saturday Oct 10 an adjusted working day (调休上班).
    assert correction_deadline(CAL, date(2026, 9, 29), 2) == local(date(2026, 10, 8), "17:00")
    assert correction_deadline(CAL, date(2026, 9, 30), 2) == local(date(2026, 10, 9), "17:00")
    assert correction_deadline(CAL, date(2026, 10, 8), 2) == local(date(2026, 10, 10), "17:00")
    assert correction_deadline(CAL, date(2026, 10, 9), 1) == local(date(2026, 10, 10), "17:00")
    assert correction_deadline(CAL, date(2026, 11, 20), 0) == local(date(2026, 11, 20), "17:00")
    wz = SiteCalendar(CalendarConfig())  # the default timetable closes at 17:30
    assert correction_deadline(wz, date(2026, 11, 20), 2) == local(date(2026, 11, 24), "17:30")


# -- exceptions ------------------------------------------------------------------------------------------
FRI = date(2026, 11, 20)
TUE = date(2026, 11, 24)


async def test_an_exception_filed_by_the_deadline_counts_and_one_filed_after_it_is_late(store: Store) -> None:
    await seed_staff(store, member("S1"))
    await punched(store, "S1", local(FRI, "08:41"))  # at work that day: the deadline runs from it (QP 000:34)

    async def evidence(at: datetime) -> bool:
        exc = await file_exception(store, SITES, "qp", "S1", ExceptionKind.EVIDENCE, local(FRI, "08:30"),
                                   local(FRI, "09:00"), by="leader", at=at, reason="地铁故障证明")  # fmt: skip
        return exc.late

    assert await evidence(local(TUE, "16:59")) is False
    assert await evidence(local(TUE, "17:01")) is True
    leave = await file_exception(store, SITES, "qp", "S1", "leave", local(TUE + timedelta(days=7), "08:30"),
                                 local(TUE + timedelta(days=9), "17:00"), by="leader", at=local(TUE, "10:00"),
                                 reason="年休假")  # fmt: skip
    assert leave.late is False and leave.kind is ExceptionKind.LEAVE, "registering in advance is in time"

    rows = await store.fetch(sa.select(attendance_exceptions).order_by(attendance_exceptions.c.filed_at))
    assert [(r.kind, r.late, r.filed_by, r.withdrawn_at) for r in rows] == [
        ("leave", False, "leader", None),
        ("evidence", False, "leader", None),
        ("evidence", True, "leader", None),
    ]
    filed = await audits(store, "attendance.exception.file")
    assert [(a.target, a.reason, json.loads(a.detail)["late"]) for a in filed] == [
        ("qp/S1", "地铁故障证明", False),
        ("qp/S1", "地铁故障证明", True),
        ("qp/S1", "年休假", False),
    ]


# A Monday-Friday sick leave filed after the fact (QP 000:40 「因特殊情况事前未能办理请假手续的,须在上班后两个工作日
# 内说明情况并上传相关证明」): (case, the leave's days, the day back at work or None, filed at, late?).
SEP28, OCT8, OCT10 = date(2026, 9, 28), date(2026, 10, 8), date(2026, 10, 10)
AFTER_THE_FACT = [
    ("QP000:40 filed while still away: nothing runs yet", (date(2026, 11, 16), FRI), None, local(FRI, "10:00"), False),
    ("QP000:40 back Mon, filed Tue", (date(2026, 11, 16), FRI), date(2026, 11, 23), local(TUE, "09:00"), False),
    (
        "QP000:40 back Mon, filed on the 2nd working day at its close",
        (date(2026, 11, 16), FRI),
        date(2026, 11, 23),
        local(date(2026, 11, 25), "17:00"),
        False,
    ),
    (
        "QP000:40 one minute over",
        (date(2026, 11, 16), FRI),
        date(2026, 11, 23),
        local(date(2026, 11, 25), "17:01"),
        True,
    ),
    (
        "QP000:40 + QP000:282 National Day then the 调休 Saturday 10-10 is the 2nd working day",
        (SEP28, SEP28),
        OCT8,
        local(OCT10, "16:59"),
        False,
    ),
    ("QP000:40 ... and a minute after its close is late", (SEP28, SEP28), OCT8, local(OCT10, "17:01"), True),
]


@pytest.mark.parametrize(("case", "days", "back", "filed", "late"), AFTER_THE_FACT, ids=[c[0] for c in AFTER_THE_FACT])
async def test_leave_filed_after_the_fact_is_timed_from_the_return_to_work(
    store: Store, case: str, days: tuple[date, date], back: date | None, filed: datetime, late: bool
) -> None:
    """The issue's case: a compliant sick leave filed on the second working day after the return used to become
    five days of 旷工 locked as 非正常考勤, since the two days ran from the leave's first day. Filed in time, every
    day of it is 请假 and nothing is locked; one minute over, the filing is kept but late."""
    from broker.attendance.service import staff_days

    sites = Sites({"qp": QP.model_copy(update={"go_live": date(2026, 9, 1)})})
    await seed_staff(store, member("S1"))
    if back is not None:
        await punched(store, "S1", local(back, "08:25"))
        await punched(store, "S1", local(back, "17:05"))
    first, last = days
    exc = await file_exception(store, sites, "qp", "S1", "leave", local(first, "08:30"), local(last, "17:00"),
                               by="leader", at=filed, reason="病假")  # fmt: skip
    assert exc.late is late, case
    judged = await staff_days(store, sites, "qp", first, last, now=filed)
    working = [d for d in judged if d.verdict is not Verdict.REST_DAY]
    assert {d.verdict for d in working} == ({Verdict.ABSENT} if late else {Verdict.LEAVE}), case

    async def compute(site: str, a: date, b: date) -> list[StaffDay]:
        return await staff_days(store, sites, site, a, b, now=filed)

    await lock_due(store, sites, filed, compute)
    async with store.engine.connect() as conn:
        locked = await locks_for(conn, "qp", first, last)
    assert len(locked) == (len(working) if late else 0), "only a late filing leaves days to lock (QP000:43)"


@pytest.mark.parametrize(("now", "verdict"), [("13:00", Verdict.ON_TIME), ("18:00", Verdict.ABSENT)])
async def test_the_substitute_first_handover_through_the_store_waits_for_the_day_to_end(
    store: Store, now: str, verdict: Verdict
) -> None:
    """NS 003:88 as a site's policy (attendance.ab.handover = substitute_first) on both stores: A leaves at 12:00 for
    the afternoon and B never comes. At 13:00, before the afternoon session, A is not 旷工 (the day is not over,
    issue 17 item 4); once it is over, A is."""
    from broker.attendance.service import staff_days

    ab = QP.attendance.ab.model_copy(update={"handover": "substitute_first"})
    cfg = QP.model_copy(
        update={"go_live": date(2026, 11, 1), "attendance": QP.attendance.model_copy(update={"ab": ab})}
    )
    sites = Sites({"qp": cfg})
    await seed_staff(store, member("A", "W1", "A"), member("B", "W1", "B"))
    await punched(store, "A", local(TUE, "08:25"))
    await punched(store, "A", local(TUE, "12:00"))
    await file_exception(store, sites, "qp", "A", "leave", local(TUE, "12:00"), local(TUE, "17:00"), by="leader",
                         at=local(TUE, "08:00"), reason="事假")  # fmt: skip
    (a,) = [d for d in await staff_days(store, sites, "qp", TUE, TUE, now=local(TUE, now)) if d.staff_id == "A"]
    assert a.verdict is verdict, a.reason


async def test_filing_refuses_unknown_staff_backwards_times_and_days_outside_employment(store: Store) -> None:
    await seed_staff(store, member("S1", start=date(2026, 11, 23)))
    at = local(TUE, "10:00")

    async def file(staff_id: str, start: datetime, end: datetime, kind: str = "leave", minutes: int = 0) -> None:
        await file_exception(store, SITES, "qp", staff_id, kind, start, end, by="leader", at=at, reason="事由",
                             minutes=minutes)  # fmt: skip

    with pytest.raises(ValueError, match="没有工号为 S404 的人员"):
        await file("S404", local(TUE, "08:30"), local(TUE, "17:00"))
    with pytest.raises(ValueError, match="不晚于开始时间"):
        await file("S1", local(TUE, "17:00"), local(TUE, "08:30"))
    with pytest.raises(ValueError, match="在岗期间为 2026-11-23 至 至今, 不含 2026-11-20 至 2026-11-20"):
        await file("S1", local(FRI, "08:30"), local(FRI, "17:00"))
    with pytest.raises(ValueError, match="--minutes"):
        await file("S1", local(TUE, "12:00"), local(TUE, "13:30"), kind="extended_service")
    with pytest.raises(ValueError, match="未知的例外类型 'holiday'"):
        await file("S1", local(TUE, "08:30"), local(TUE, "17:00"), kind="holiday")
    assert await store.fetch(sa.select(attendance_exceptions)) == []


async def test_a_withdrawn_exception_is_kept_but_no_longer_in_force(store: Store) -> None:
    await seed_staff(store, member("S1"))
    exc = await file_exception(store, SITES, "qp", "S1", "meeting", local(TUE, "09:00"), local(TUE, "11:00"),
                               by="leader", at=local(TUE, "08:00"), reason="区里业务培训")  # fmt: skip
    async with store.engine.connect() as conn:
        assert [e.id for e in (await exceptions_for(conn, "qp", TUE, TUE, zone=SH))["S1"]] == [exc.id]
    await withdraw_exception(store, exc.id, by="manager", at=local(TUE, "12:00"), reason="培训取消")
    async with store.engine.connect() as conn:
        assert await exceptions_for(conn, "qp", TUE, TUE, zone=SH) == {}
    (row,) = await store.fetch(sa.select(attendance_exceptions))
    assert row.withdrawn_at == local(TUE, "12:00")
    (w,) = await audits(store, "attendance.exception.withdraw")
    assert (w.actor, w.target, w.reason, json.loads(w.detail)) == ("manager", "qp/S1", "培训取消", {"id": exc.id})
    with pytest.raises(ValueError, match="已撤销过"):
        await withdraw_exception(store, exc.id, by="manager", at=local(TUE, "12:01"))
    with pytest.raises(ValueError, match="没有编号为 nope 的考勤例外"):
        await withdraw_exception(store, "nope", by="manager", at=local(TUE, "12:01"))


async def test_exceptions_for_returns_those_overlapping_the_days_by_staff(store: Store) -> None:
    await seed_staff(store, member("S1"), member("S2"))
    mon, wed = date(2026, 11, 23), date(2026, 11, 25)
    spans = {
        "before": ("S1", local(FRI, "08:30"), local(mon, "00:00")),  # ends exactly at Monday's start
        "week": ("S1", local(FRI, "08:30"), local(wed, "17:00")),
        "tue": ("S2", local(TUE, "13:30"), local(TUE, "17:00")),
        "after": ("S2", local(wed, "08:30"), local(wed, "09:00")),
    }
    ids = {}
    for label, (who, start, end) in spans.items():
        exc = await file_exception(store, SITES, "qp", who, "leave", start, end, by="l", at=local(FRI, "08:00"),
                                   reason=label)  # fmt: skip
        ids[exc.id] = label
    async with store.engine.connect() as conn:
        found = await exceptions_for(conn, "qp", mon, TUE, zone=SH)
        wide = await exceptions_for(conn, "qp", mon, TUE)
    assert {who: [ids[e.id] for e in excs] for who, excs in found.items()} == {"S1": ["week"], "S2": ["tue"]}
    assert found["S2"][0].start == local(TUE, "13:30") and found["S2"][0].kind is ExceptionKind.LEAVE
    assert {ids[e.id] for excs in wide.values() for e in excs} == set(spans), "without a zone: a day more each side"


# -- fault windows ---------------------------------------------------------------------------------------
T0 = local(TUE, "07:00")
T1 = local(TUE, "19:00")


async def presence(store: Store, device: str, state: Presence, session: int, at: datetime, role: str) -> None:
    msg = StatusMessage(state=state, session=session, boot_id="b", ts=at, heartbeat_s=60, role=role)
    await store.write(Batch(statuses=[StatusUpdate("qp", device, msg, False, at)]))


async def test_fault_windows_come_from_presence_history_of_attendance_terminals(store: Store) -> None:
    on, off = Presence.ONLINE, Presence.OFFLINE
    # att-1: offline since the night before, back at 08:10; shut down 12:00-13:00; offline from 18:30 on.
    await presence(store, "att-1", on, 1, local(FRI, "08:00"), "attendance")
    await presence(store, "att-1", off, 1, local(TUE, "02:00"), "attendance")
    await presence(store, "att-1", on, 2, local(TUE, "08:10"), "attendance")
    await presence(store, "att-1", Presence.SHUTDOWN, 2, local(TUE, "12:00"), "attendance")
    await presence(store, "att-1", on, 3, local(TUE, "13:00"), "attendance")
    await presence(store, "att-1", off, 3, local(TUE, "18:30"), "attendance")
    # att-2: stale (heartbeat overdue) 09:00-09:30.
    await presence(store, "att-2", on, 1, local(TUE, "06:00"), "attendance")
    await store.sweep_stale(local(TUE, "09:00"))
    await store.write(Batch(seen={DeviceKey("qp", "att-2"): local(TUE, "09:30")}))
    # a kiosk's outage is not an attendance fault.
    await presence(store, "kiosk-1", on, 1, local(TUE, "06:00"), "kiosk")
    await presence(store, "kiosk-1", off, 1, local(TUE, "10:00"), "kiosk")

    async with store.engine.connect() as conn:
        windows = await fault_windows(conn, "qp", T0, T1)
    assert [(w.device, w.start, w.end) for w in windows] == [
        ("att-1", T0, local(TUE, "08:10")),
        ("att-1", local(TUE, "12:00"), local(TUE, "13:00")),
        ("att-1", local(TUE, "18:30"), T1),
        ("att-2", local(TUE, "09:00"), local(TUE, "09:30")),
    ]
    assert [w.reason.split(" (")[0] for w in windows] == [
        "考勤终端离线",
        "考勤终端关机",
        "考勤终端离线",
        "考勤终端心跳中断",
    ]
    async with store.engine.connect() as conn:
        assert await fault_windows(conn, "qp", local(TUE, "09:45"), local(TUE, "11:45")) == []


async def test_fault_windows_include_open_incidents_of_the_terminal_merged_with_its_outages(store: Store) -> None:
    await presence(store, "att-1", Presence.ONLINE, 1, local(TUE, "06:00"), "attendance")
    rules = IncidentRules(SITES, {"qp/att-1": "attendance"})

    async def signal(kind: str, active: bool, at: datetime, summary: str = "") -> None:
        async with store.engine.begin() as conn:
            await rules.apply(conn, [Signal("qp", "att-1", kind, active, "major", at, at, summary)])

    await signal("fault.camera.no_frames", True, local(TUE, "09:00"), "摄像头无画面")
    await presence(store, "att-1", Presence.OFFLINE, 1, local(TUE, "09:30"), "attendance")
    await presence(store, "att-1", Presence.ONLINE, 2, local(TUE, "10:30"), "attendance")
    await signal("fault.camera.no_frames", False, local(TUE, "10:00"))
    await signal("gallery.revocation_overdue", True, local(TUE, "11:00"))  # it still takes punches
    await signal("fault.fingerprint.no_device", True, local(TUE, "15:00"), "指纹模块拔出")  # still open at T1

    async with store.engine.connect() as conn:
        windows = await fault_windows(conn, "qp", T0, T1)
    assert [(w.start, w.end) for w in windows] == [
        (local(TUE, "09:00"), local(TUE, "10:30")),
        (local(TUE, "15:00"), T1),
    ]
    assert "摄像头无画面" in windows[0].reason and "考勤终端离线" in windows[0].reason
    assert "指纹模块拔出" in windows[1].reason


# -- locking at the deadline -----------------------------------------------------------------------------
Verdicts = dict[tuple[str, date], tuple[Verdict, tuple[str, ...]]]


class FakeJudge:
    """Stands in for the verdict engine: fixed verdicts per (staff, day), recording what it was asked."""

    def __init__(self, verdicts: Verdicts) -> None:
        self.verdicts = verdicts
        self.calls: list[tuple[str, date, date]] = []

    async def __call__(self, site: str, first: date, last: date) -> list[StaffDay]:
        self.calls.append((site, first, last))
        await asyncio.sleep(0)  # let a concurrent run interleave
        return [
            # As the engine marks proof filed in time: the verdict stays, a note says it is excused.
            StaffDay(
                staff_id, day, verdict, f"{verdict} 的理由", exceptions=excs, notes=(EXCUSED_NOTE,) if excs else ()
            )
            for (staff_id, day), (verdict, excs) in sorted(self.verdicts.items())
            if first <= day <= last
        ]


MON = date(2026, 11, 23)
WED = date(2026, 11, 25)


async def test_lock_due_freezes_only_unexcused_abnormal_days_past_their_deadline_once(store: Store) -> None:
    """QP 000:43 at the deadline; an absence's deadline runs from the return (QP 000:40). This test used to expect
    Monday's absence locked on Wednesday although S1 was back on Tuesday, and a fixed 62-day look-back."""
    await seed_staff(store, member("S1"), member("S2"))
    judge = FakeJudge(
        {
            ("S1", FRI): (Verdict.LATE, ()),  # deadline Tue 17:00: locks
            ("S2", FRI): (Verdict.LATE, ("exc-1",)),  # excused by an exception in time
            ("S1", MON): (Verdict.ABSENT, ()),  # back Tuesday: deadline Thu 17:00
            ("S2", MON): (Verdict.ON_TIME, ()),
            ("S1", TUE): (Verdict.MISSING_OUT, ()),  # deadline Thu 17:00: not yet
            ("S2", date(2026, 11, 21)): (Verdict.REST_DAY, ()),
        }
    )
    now = local(WED, "17:00")
    assert await lock_due(store, LIVE, now, judge) == 1
    assert judge.calls[0] == ("qp", FRI, WED), "from go-live (no look-back before it) through today"
    async with store.engine.connect() as conn:
        locks = await locks_for(conn, "qp", FRI, WED)
    assert locks == {("S1", FRI): ("late", "late 的理由")}

    # Again at the same time: nothing new; Friday to Sunday are final and not judged again, Monday stays open.
    assert await lock_due(store, LIVE, now, judge) == 0
    assert judge.calls[-1] == ("qp", MON, WED)
    # A day locked as normal stays normal (say the policy changed); Monday and Tuesday lock at Thursday's close.
    judge.verdicts[("S2", FRI)] = (Verdict.LATE, ())
    assert await lock_due(store, LIVE, local(date(2026, 11, 26), "17:00"), judge) == 2
    assert judge.calls[-1] == ("qp", MON, date(2026, 11, 26))
    async with store.engine.connect() as conn:
        assert set(await locks_for(conn, "qp", FRI, WED)) == {("S1", FRI), ("S1", MON), ("S1", TUE)}
    (a, b) = await audits(store, "attendance.lock")
    assert (a.actor, a.target, json.loads(a.detail)["locked"], json.loads(b.detail)["locked"]) == ("rules", "qp", 1, 2)


async def test_lock_due_run_concurrently_locks_each_record_once(store_url: str, store: Store) -> None:
    staff_ids = [f"S{i}" for i in range(20)]
    await seed_staff(store, *(member(s) for s in staff_ids))
    verdicts: Verdicts = {(s, d): (Verdict.ABSENT, ()) for s in staff_ids for d in (FRI, MON)}
    verdicts |= {(s, TUE): (Verdict.ON_TIME, ()) for s in staff_ids}  # back Tuesday: deadline Thursday's close
    thursday = local(date(2026, 11, 26), "17:00")
    other = await Store.open(store_url)
    try:
        counts = await asyncio.gather(
            lock_due(store, LIVE, thursday, FakeJudge(dict(verdicts))),
            lock_due(other, LIVE, thursday, FakeJudge(dict(verdicts))),
        )
    finally:
        await other.close()
    assert sum(counts) == 40
    assert await store.scalar(sa.select(sa.func.count()).select_from(attendance_locks)) == 40


async def test_lock_due_without_staff_does_nothing(store: Store) -> None:
    judge = FakeJudge({})
    assert await lock_due(store, LIVE, local(WED, "17:00"), judge) == 0
    assert judge.calls == []


# -- AB coverage -----------------------------------------------------------------------------------------
def test_a_window_whose_a_and_b_are_both_away_is_uncovered_for_that_time() -> None:
    """QP 000:107, WZ 002:181, SJ 001:947: by time. W1: A on leave in the morning, B at a meeting in the morning,
    both back after lunch: a morning gap. W2: A away, B there all day. W3: its only holder absent. W4: the A post
    left the roster; B (no sign-in, signed out at 17:05) is uncovered until the sign-out, which is all we know."""
    members = [
        member("A1", "W1", "A"),
        member("B1", "W1", "B"),
        member("A2", "W2", "A"),
        member("B2", "W2", "B"),
        member("A3", "W3", "A"),  # single-staff window
        member("X", "W3", ""),  # not an AB post holder
        member("A4", "W4", "A", end_date=date(2026, 11, 1)),  # left: no longer counts
        member("B4", "W4", "B"),
    ]
    sessions = [(local(TUE, "08:30"), local(TUE, "12:00")), (local(TUE, "13:30"), local(TUE, "17:00"))]
    afternoon = ((local(TUE, "13:30"), local(TUE, "17:00")),)
    whole = tuple(sessions)

    def sd(staff_id: str, verdict: Verdict, present: tuple[tuple[datetime, datetime], ...] = ()) -> StaffDay:
        return StaffDay(staff_id, TUE, verdict, "", present=present)

    days = [
        sd("A1", Verdict.ON_TIME, afternoon),
        sd("B1", Verdict.ON_TIME, afternoon),
        sd("A2", Verdict.LEAVE),
        sd("B2", Verdict.LATE, ((local(TUE, "08:40"), local(TUE, "12:00")), afternoon[0])),
        sd("A3", Verdict.ABSENT),
        sd("X", Verdict.ON_TIME, whole),
        sd("A4", Verdict.ABSENT),
        sd("B4", Verdict.MISSING_IN),
    ]
    policy = QP.attendance.ab
    gaps = [(g.window, g.start, g.end) for g in coverage_gaps(members, days, TUE, sessions, policy)]
    assert gaps == [
        ("W1", local(TUE, "08:30"), local(TUE, "12:00")),
        ("W3", local(TUE, "08:30"), local(TUE, "12:00")),
        ("W3", local(TUE, "13:30"), local(TUE, "17:00")),
        ("W4", local(TUE, "08:30"), local(TUE, "12:00")),
        ("W4", local(TUE, "13:30"), local(TUE, "17:00")),
    ], "B2 10 minutes late is under min_gap_min (15): no gap at W2"
    # While the day runs, only the time up to now is judged.
    early = coverage_gaps(members, days, TUE, sessions, policy, now=local(TUE, "08:40"))
    assert early == [], "10 minutes in: no stretch is 15 minutes long yet"
    assert coverage_gaps(members, days, WED, sessions, policy) == [], "no verdicts that day, no claim"
    rest = [sd(s, Verdict.REST_DAY) for s in ("A1", "B1")]
    assert coverage_gaps(members, rest, TUE, sessions, policy) == [], "nobody judged: a closed hall owes nothing"


# -- the CLI ---------------------------------------------------------------------------------------------
async def test_cli_imports_the_roster_files_and_withdraws_leave_in_chinese(
    store: Store, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "centre.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n')
    today = datetime.now(SH).date()
    path = write_csv(tmp_path / "名单.csv", [["qp", "S1", "张三", "区税务局", "W1", "A", "2025-01-01", ""]])

    async def cli(*args: str) -> int:  # the CLI runs its own event loop, as from a shell
        return await asyncio.to_thread(main, [*args, "--config", str(config), "--by", "leader"])

    assert await cli("staff", "import", str(path)) == 0
    assert "新增 1 人, 更新 0 人" in capsys.readouterr().out
    assert await cli("staff", "list", "qp") == 0
    out = capsys.readouterr().out
    assert "S1" in out and "张三" in out and "A岗" in out and "在岗 1 人" in out

    ahead = today + timedelta(days=3)
    assert await cli("leave", "file", "qp", "S1", "--kind", "leave", "--from", f"{ahead} 08:30",
                     "--to", f"{ahead} 17:00", "--reason", "年休假") == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "已登记" in out and "请假" in out and "按时登记 (补登期限" in out
    exc_id = out.split()[1].rstrip(":")
    back = today - timedelta(days=30)
    await punched(store, "S1", local(back, "08:41"))  # at work that day: the deadline ran out long ago
    assert await cli("leave", "file", "qp", "S1", "--kind", "evidence", "--from", f"{back} 08:30",
                     "--to", f"{back} 09:00", "--reason", "补交病历") == 0  # fmt: skip
    assert "逾期登记: 补登期限" in capsys.readouterr().out

    (row,) = await store.fetch(sa.select(attendance_exceptions).where(attendance_exceptions.c.id == exc_id))
    assert (row.staff_id, row.filed_by, row.start) == ("S1", "leader", local(ahead, "08:30"))
    assert await cli("leave", "withdraw", exc_id) == 0
    assert f"已撤销 {exc_id}" in capsys.readouterr().out
    assert await cli("leave", "withdraw", exc_id) == 1
    assert "已撤销过" in capsys.readouterr().err
    assert await cli("leave", "file", "qp", "S404", "--kind", "leave", "--from", f"{ahead} 08:30",
                     "--to", f"{ahead} 17:00", "--reason", "x") == 1  # fmt: skip
    assert "没有工号为 S404 的人员" in capsys.readouterr().err
