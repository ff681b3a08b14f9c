"""The monthly SLA report on both stores: availability in SLA hours, incidents, breaches, recoveries,
dispatches, refills and usage, and the CSV / XLSX files built from it."""

from __future__ import annotations

import csv
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4
from zoneinfo import ZoneInfo

import openpyxl
import pytest
import sqlalchemy as sa

from broker.calendar import CalendarConfig, TimetableConfig
from broker.reports import SlaReport, build_sla_report, write_csv, write_xlsx
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import devices, dispatches, events, incident_conditions, incidents, service_records

SITE = "wz"
ZONE = ZoneInfo("Asia/Shanghai")
K24 = "kiosk-24h-1"  # registered as a 24-hour device (devices.hours24), as provisioning does
KDAY = "kiosk-1"  # counts the hall's opening hours
AFTER = datetime(2026, 12, 5, 12, 0, tzinfo=ZONE)  # "now" for a report of a finished November
WANZHOU = CalendarConfig(
    timezone="Asia/Shanghai",
    national_holidays=True,
    timetables=[TimetableConfig(name="全年", start="01-01", end="12-31", sessions=["09:00-12:00", "13:30-17:30"])],
)
SITES = Sites({SITE: SiteConfig(name="万州区政务服务中心", calendar=WANZHOU)})
NOV_OPEN_S = 21 * 7 * 3600  # November 2026: 21 working days (no statutory holiday), 7 opening hours each


def at(day: int, hour: int, minute: int = 0, month: int = 11) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=ZONE)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    await insert(s, devices, [device_row(KDAY), device_row(K24, hours24=True)])
    yield s
    await s.close()


async def insert(store: Store, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    async with store.engine.begin() as conn:
        for row in rows:  # one by one: rows may set different columns
            await conn.execute(table.insert(), row)


def device_row(device: str, role: str = "kiosk", hours24: bool | None = None) -> dict[str, Any]:
    """A device in service since October; ``hours24`` its registered 24-hour status (None: nobody registered it)."""
    row = {"key": f"{SITE}/{device}", "site": SITE, "device": device, "role": role, "first_seen": at(1, 0, month=10)}
    return row | {"hours24": hours24}


def incident(device: str, kind: str, detected: datetime, cleared: datetime | None, **extra: Any) -> dict[str, Any]:
    row = {
        "id": str(uuid4()),
        "key": f"{SITE}/{device}",
        "site": SITE,
        "device": device,
        "kind": kind,
        "severity": "major",
        "hours24": "24h" in device,
        "state": "open" if cleared is None else "closed",
        "detected_at": detected,
        "last_signal_at": detected,
        "cleared_at": cleared,
        "closed_at": None if cleared is None else cleared + timedelta(minutes=1),
    }
    return row | extra


Spans = list[tuple[str, datetime, datetime | None]]


async def insert_incidents(
    store: Store, rows: list[dict[str, Any]], conditions: dict[str, Spans] | None = None
) -> None:
    """Incidents as the rules leave them, each with its conditions: by default one, its own kind from detection
    to clear (a hall-wide outage has none: its devices' outages carry the downtime)."""
    parts = []
    for r in rows:
        spans = (conditions or {}).get(r["id"]) or [(r["kind"], r["detected_at"], r["cleared_at"])]
        for kind, began, cleared in spans if r["device"] != "*" else []:
            parts.append(
                {
                    "incident_id": r["id"],
                    "key": r["key"],
                    "kind": kind,
                    "severity": r["severity"],
                    "began_at": began,
                    "seen_at": began,
                    "cleared_at": cleared,
                    "last_signal_at": began,
                    "open_key": None if cleared else f"{r['key']}|{kind}",
                }
            )
    await insert(store, incidents, rows)
    await insert(store, incident_conditions, parts)


async def report(store: Store, month: str = "2026-11", now: datetime = AFTER) -> SlaReport:
    return await build_sla_report(store, SITES, SITE, month, now=now)


def row_of(rep: SlaReport, device: str) -> Any:
    return next(d for d in rep.devices if d.device == device)


async def test_24h_kiosk_down_30_minutes_in_a_30_day_month(store: Store) -> None:
    """GIVEN a 24-hour kiosk offline 30 minutes in November WHEN reported THEN 1 - 1800/2592000, others 100 %."""
    await insert_incidents(store, [incident(K24, "offline", at(10, 3), at(10, 3, 30))])
    rep = await report(store)
    row = row_of(rep, K24)
    assert (row.hours24, row.counted_s, row.down_s) == (True, 2_592_000, 1800)
    assert row.availability_pct == 100.0 * (1 - 1800 / 2_592_000)
    day = row_of(rep, KDAY)
    assert (day.hours24, day.counted_s, day.down_s, day.availability_pct) == (False, NOV_OPEN_S, 0, 100.0)
    assert (rep.start, rep.end, rep.site_name) == (at(1, 0), at(1, 0, month=12), "万州区政务服务中心")


async def test_a_kiosk_installed_mid_month_is_counted_from_when_it_was_first_heard_of(store: Store) -> None:
    """GIVEN a 24-hour kiosk first seen on 20 November at 10:00 WHEN reported THEN only its 10 days and 14 hours
    count (the demo showed 28,446 minutes for a kiosk first seen on the 20th); one not yet seen counts nothing."""
    new = device_row("kiosk-24h-new", hours24=True) | {"first_seen": at(20, 10)}
    later = device_row("kiosk-24h-later", hours24=True) | {"first_seen": at(2, 0, month=12)}
    await insert(store, devices, [new, later])
    await insert_incidents(store, [incident("kiosk-24h-new", "offline", at(25, 3), at(25, 3, 30))])
    rep = await report(store)
    row = row_of(rep, "kiosk-24h-new")
    assert (row.counted_s, row.down_s) == ((10 * 24 + 14) * 3600, 1800)
    assert row_of(rep, "kiosk-24h-later").counted_s == 0 and row_of(rep, "kiosk-24h-later").availability_pct is None


async def test_opening_hours_kiosk_counts_only_downtime_while_the_hall_is_open(store: Store) -> None:
    """GIVEN a day kiosk down overnight, and later over lunch WHEN reported THEN only open hours count."""
    await insert_incidents(
        store,
        [
            incident(KDAY, "kiosk_down", at(10, 18), at(11, 8, 30)),  # Tuesday night: closed all the time
            incident(KDAY, "offline", at(12, 11), at(12, 14)),  # 11:00-12:00 and 13:30-14:00 open
        ],
    )
    row = row_of(await report(store), KDAY)
    assert (row.counted_s, row.down_s) == (NOV_OPEN_S, 5400)
    assert row.availability_pct == 100.0 * (1 - 5400 / NOV_OPEN_S)


async def test_one_outage_of_overlapping_conditions_under_a_hall_outage_is_counted_once(store: Store) -> None:
    """GIVEN one outage of a 24-hour kiosk made of offline 10:00-10:30 (under a hall outage), kiosk down
    10:15-10:45 and a staff report 10:40-10:50, and a degraded spell the next day WHEN reported THEN the device is
    down 50 minutes, with two outages (the degraded one is an outage of the SLA clock but not downtime); the
    hall outage is listed, is no device and is not counted again in the totals, which add up the device rows."""
    hall = incident("*", "hall_outage", at(10, 9, 59), at(10, 10, 40), key=f"{SITE}/*", hours24=True)
    hall["severity"] = "critical"
    outage = incident(K24, "kiosk_down", at(10, 10), at(10, 10, 50), parent_id=hall["id"], severity="critical")
    degraded = incident(K24, "kiosk_degraded", at(11, 10), at(11, 12))
    minor = incident(K24, "fault.receipt.paper_near_end", at(12, 10), at(12, 11), severity="minor")
    spans: dict[str, Spans] = {
        outage["id"]: [
            ("offline", at(10, 10), at(10, 10, 30)),
            ("kiosk_down", at(10, 10, 15), at(10, 10, 45)),
            ("reported", at(10, 10, 40), at(10, 10, 50)),
        ]
    }
    await insert_incidents(store, [hall, outage, degraded, minor], spans)
    rep = await report(store)
    row = row_of(rep, K24)
    assert row.down_s == 50 * 60
    assert [d.device for d in rep.devices] == [KDAY, K24]
    assert [r.kind for r in rep.incidents] == [
        "hall_outage",
        "kiosk_down",
        "kiosk_degraded",
        "fault.receipt.paper_near_end",
    ]
    assert [r.outage for r in rep.incidents] == [False, True, True, False]
    assert rep.incidents[0].device == "*" and rep.incidents[1].in_hall_outage
    assert row.incidents == 2 and row.mttr_s == (50 * 60 + 2 * 3600) / 2
    assert rep.totals().incidents == sum(d.incidents for d in rep.devices) == 2


async def test_incident_across_the_month_end_is_clipped_and_counted_once(store: Store) -> None:
    """GIVEN an outage 31 Oct 23:00 - 1 Nov 01:00 WHEN October and November are reported THEN each gets one
    hour of downtime; the incident counts in October and is only listed in November."""
    await insert_incidents(store, [incident(K24, "offline", at(31, 23, month=10), at(1, 1))])
    october, november = await report(store, "2026-10"), await report(store)
    assert (row_of(october, K24).down_s, row_of(november, K24).down_s) == (3600, 3600)
    assert (row_of(october, K24).incidents, row_of(november, K24).incidents) == (1, 0)
    assert len(november.incidents) == 1
    assert row_of(october, K24).counted_s == 31 * 86400


async def test_open_incident_runs_until_now_in_the_current_month(store: Store) -> None:
    """GIVEN an outage still open on 10 Nov 12:00 WHEN November is reported then THEN it is down since
    detection, counted up to now, and its time to restore is unknown."""
    await insert_incidents(store, [incident(K24, "offline", at(10, 6), None)])
    rep = await report(store, now=at(10, 12))
    row = row_of(rep, K24)
    assert (row.counted_s, row.down_s, row.mttr_s) == (9 * 86400 + 12 * 3600, 6 * 3600, None)
    assert rep.incidents[0].ttr_s is None


async def test_breaches_are_listed_with_their_reasons(store: Store) -> None:
    """GIVEN one breached and one restored-in-time incident WHEN reported THEN the breach and its reason
    show in the list, the device row and the SLA compliance."""
    reason = "not restored remotely within 30 min of SLA time"
    await insert_incidents(
        store,
        [
            incident(KDAY, "kiosk_down", at(10, 9), at(10, 10), breached_at=at(10, 9, 30), breach_reason=reason),
            incident(KDAY, "offline", at(11, 9), at(11, 9, 10)),
        ],
    )
    rep = await report(store)
    assert [(r.breached, r.breach_reason) for r in rep.incidents] == [(True, reason), (False, "")]
    assert (row_of(rep, KDAY).breaches, row_of(rep, K24).breaches) == (1, 0)
    assert rep.totals().compliance_pct == 50.0


async def test_recoveries_are_counted_and_time_to_restore_uses_sla_hours(store: Store) -> None:
    """GIVEN incidents healed by themselves, remotely and on site WHEN reported THEN each way is counted, and
    the time to restore counts opening hours only (17:00 Tue to 10:00 Wed = 1.5 h)."""
    await insert_incidents(
        store,
        [
            incident(KDAY, "offline", at(10, 17), at(11, 10), recovery="on_site"),
            incident(KDAY, "kiosk_down", at(12, 9), at(12, 9, 30), recovery="remote"),
            incident(KDAY, "offline", at(13, 9), at(13, 9, 2), recovery="self_healed"),
            incident(KDAY, "offline", at(16, 9), at(16, 9, 4), recovery="self_healed"),
        ],
    )
    rep = await report(store)
    row = row_of(rep, KDAY)
    assert (row.self_healed, row.remote, row.on_site) == (2, 1, 1)
    assert rep.incidents[0].ttr_s == 5400
    assert row.max_ttr_s == 5400
    assert row.mttr_s == (5400 + 1800 + 120 + 240) / 4


def dispatch(due: datetime, *, arrived: datetime | None = None, state: str = "done") -> dict[str, Any]:
    return {
        "id": str(uuid4()),
        "incident_id": str(uuid4()),
        "key": f"{SITE}/{KDAY}",
        "site": SITE,
        "opened_at": due - timedelta(hours=3),
        "due_at": due,
        "state": state,
        "arrived_at": arrived,
        "done_at": None if arrived is None else arrived + timedelta(hours=1),
    }


async def test_dispatches_not_on_site_by_the_due_time_are_late(store: Store) -> None:
    """GIVEN visits in time, late, never made and past due, cancelled, and not yet due WHEN reported on
    20 Nov THEN four count, two of them late."""
    due = at(10, 17, 30)
    await insert(
        store,
        dispatches,
        [
            dispatch(due, arrived=at(10, 16)),
            dispatch(due, arrived=at(11, 9)),
            dispatch(due, state="open"),
            dispatch(due, state="cancelled"),
            dispatch(at(20, 17, 30), state="open"),
        ],
    )
    row = row_of(await report(store, now=at(20, 12)), KDAY)
    assert (row.dispatches, row.dispatches_late) == (4, 2)


def usage(ts: datetime, seq: int, **counters: int) -> dict[str, Any]:
    return {
        "site": SITE,
        "device": K24,
        "id": str(uuid4()),
        "type": "kiosk.usage",
        "seq": seq,
        "boot_id": "b",
        "ts": ts,
        "clock_synced": True,
        "replayed": False,
        "received_at": ts,
        "data": json.dumps({"counters": counters}),
    }


async def test_usage_is_the_month_increase_and_survives_a_counter_reset(store: Store) -> None:
    """GIVEN tickets 100, 150, reset to 20, then 50 in November (and readings outside it) WHEN reported
    THEN 50 + 20 + 30 = 100 tickets were used; prints 10 -> 15 is 5."""
    await insert(
        store,
        events,
        [
            usage(at(31, 20, month=10), 1, tickets=10, prints=1),
            usage(at(2, 9), 2, tickets=100, prints=10),
            usage(at(9, 9), 3, tickets=150),
            usage(at(16, 9), 4, tickets=20, prints=15),
            usage(at(23, 9), 5, tickets=50),
            usage(at(1, 9, month=12), 6, tickets=900, prints=99),
        ],
    )
    rep = await report(store)
    assert row_of(rep, K24).usage == {"prints": 5, "tickets": 100}
    assert row_of(rep, KDAY).usage == {}


async def test_refills_in_the_month_are_counted_per_consumable(store: Store) -> None:
    """GIVEN refills (and a cleaning, and a refill in December) WHEN reported THEN only November's refills."""

    def record(kind: str, item: str, when: datetime) -> dict[str, Any]:
        return {"key": f"{SITE}/{K24}", "site": SITE, "kind": kind, "item": item, "at": when, "by": "staff-7"}

    await insert(
        store,
        service_records,
        [
            record("refill", "thermal_paper", at(3, 10)),
            record("refill", "thermal_paper", at(17, 10)),
            record("refill", "a4_paper:tray-1", at(20, 10)),
            record("clean", "", at(20, 10)),
            record("refill", "thermal_paper", at(1, 10, month=12)),
        ],
    )
    rep = await report(store)
    assert row_of(rep, K24).refills == {"a4_paper:tray-1": 1, "thermal_paper": 2}
    assert row_of(rep, KDAY).refills == {}


async def sample(store: Store) -> SlaReport:
    """K24 down 10 h 48 min (98.50 %), remotely restored; KDAY untouched (100 %)."""
    await insert_incidents(
        store,
        [incident(K24, "offline", at(10, 10), at(10, 20, 48), recovery="remote")],
    )
    await insert(store, events, [usage(at(2, 9), 1, tickets=5), usage(at(3, 9), 2, tickets=12)])
    return await report(store)


async def test_csv_has_chinese_headers_and_formatted_numbers(store: Store, tmp_path: Path) -> None:
    """GIVEN a report WHEN written as CSV THEN Excel's BOM, Chinese headers, minutes, percentages, local times."""
    path = tmp_path / "sla.csv"
    write_csv(await sample(store), path)
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["万州区政务服务中心 2026-11 设备可用率"]
    head = rows[1]
    assert head[:6] == ["设备", "设备类型", "24小时", "计时时长(分钟)", "停机时长(分钟)", "可用率(%)"]
    assert head[-1] == "使用量:票据"
    k24 = dict(zip(head, rows[3], strict=True))
    assert (k24["设备"], k24["可用率(%)"], k24["停机时长(分钟)"], k24["远程处置"]) == (K24, "98.50", "648.0", "1")
    assert (k24["24小时"], k24["设备类型"], k24["使用量:票据"]) == ("是", "自助终端", "7")
    assert dict(zip(head, rows[2], strict=True))["可用率(%)"] == "100.00"
    total = dict(zip(head, rows[4], strict=True))
    assert (total["设备"], total["停机时长(分钟)"], total["事件数"], total["远程处置"]) == ("合计", "648.0", "1", "1")
    assert rows[6] == ["万州区政务服务中心 2026-11 事件明细"]
    incident_row = dict(zip(rows[7], rows[8], strict=True))
    assert (incident_row["类型"], incident_row["处置方式"], incident_row["超时"]) == ("离线", "远程处置", "否")
    assert incident_row["计入统计"] == "是"
    assert (incident_row["发现时间"], incident_row["恢复用时(分钟)"]) == ("2026-11-10 10:00", "648.0")


def decimals_shown(number_format: str) -> int:
    assert number_format == "0" or number_format.startswith("0."), f"not a number format: {number_format!r}"
    return len(number_format) - 2 if number_format.startswith("0.") else 0


def assert_cells_hold_what_they_show(ws: Any) -> None:
    """Every number has a number format, and holds exactly what that format shows (so sums add up as read);
    every time is the wall clock (no zone)."""
    for row in ws.iter_rows(min_row=3):
        for cell in row:
            if isinstance(cell.value, bool) or cell.value is None:
                continue
            if isinstance(cell.value, int | float):
                n = decimals_shown(cell.number_format)
                assert cell.value == round(cell.value, n), (cell.coordinate, cell.value, cell.number_format)
            if isinstance(cell.value, datetime):
                assert cell.value.tzinfo is None and cell.number_format == "yyyy-mm-dd hh:mm"


def assert_total_row_adds_up(ws: Any, label: str, columns: list[str]) -> dict[str, Any]:
    head = [c.value for c in ws[2]]
    rows = [[c.value for c in r] for r in ws.iter_rows(min_row=3)]
    (total,) = [r for r in rows if r[0] == label]
    body = [r for r in rows if r[0] != label]
    for name in columns:
        i = head.index(name)
        assert total[i] == pytest.approx(sum(r[i] or 0 for r in body), abs=1e-9), name
    assert all(c.font.b for c in ws[len(rows) + 2]), "the total row is bold"
    return dict(zip(head, total, strict=True))


async def test_xlsx_figures_read_and_add_up_across_sheets(store: Store, tmp_path: Path) -> None:
    """GIVEN two kiosks each down 20 s (0.333 min, shown 0.3) and K24 down 10 h 48 min WHEN written as XLSX
    THEN three sheets; each cell holds what it shows (minutes with one decimal, percentages with two, counts
    whole, times on the site's wall clock); the device sheet's total row is the sum of the rows as shown (0.3 +
    0.3 + 648.0, not 648.7 from the unrounded seconds), and the summary repeats that total; the kiosk under 99 %
    is highlighted, the one at 100 % is not."""
    await insert_incidents(
        store,
        [
            incident(K24, "offline", at(10, 10), at(10, 20, 48), recovery="remote"),
            incident(K24, "offline", at(12, 3, 0), at(12, 3, 0) + timedelta(seconds=20), recovery="self_healed"),
            incident(KDAY, "offline", at(12, 10, 0), at(12, 10, 0) + timedelta(seconds=20), recovery="self_healed"),
        ],
    )
    path = tmp_path / "sla.xlsx"
    write_xlsx(await report(store), path)
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["设备可用率", "事件明细", "汇总"]
    for ws in book.worksheets:
        assert_cells_hold_what_they_show(ws)
        assert ws.freeze_panes == "A3" and ws.cell(2, 1).font.b
    ws = book["设备可用率"]
    head = [c.value for c in ws[2]]
    col = head.index("可用率(%)") + 1
    assert (
        ws.cell(3, col).number_format == "0.00" and ws.cell(3, head.index("停机时长(分钟)") + 1).number_format == "0.0"
    )
    assert (ws.cell(3, 1).value, ws.cell(3, head.index("停机时长(分钟)") + 1).value) == (KDAY, 0.3)
    assert ws.cell(4, 1).value == K24 and ws.cell(4, col).fill.start_color.rgb.endswith("FFC7CE")
    assert ws.cell(3, col).fill.fill_type is None
    total = assert_total_row_adds_up(
        ws, "合计", ["计时时长(分钟)", "停机时长(分钟)", "事件数", "超时数", "自愈", "远程处置"]
    )
    assert total["停机时长(分钟)"] == pytest.approx(648.6) and total["事件数"] == 3
    incidents_ws = book["事件明细"]
    assert incidents_ws.cell(3, 6).value == datetime(2026, 11, 10, 10, 0), "the site's wall clock"
    assert [c.value for c in incidents_ws[3]][[c.value for c in incidents_ws[2]].index("恢复用时(分钟)")] == 648.0
    summary = {r[0].value: r[1] for r in book["汇总"].iter_rows(min_row=3)}
    assert summary["停机时长(分钟)"].value == total["停机时长(分钟)"]
    assert summary["计时时长(分钟)"].value == total["计时时长(分钟)"]
    assert summary["事件数"].value == 3 and summary["事件数"].number_format == "0" and summary["设备数"].value == 2
    assert summary["SLA达标率(%)"].value == 100.0 and summary["SLA达标率(%)"].number_format == "0.00"
    weighted = 100.0 * (1 - total["停机时长(分钟)"] / total["计时时长(分钟)"])
    assert summary["可用率(%,按计时时长加权)"].value == round(weighted, 2)


async def test_english_variant_has_english_headers_and_sheet_names(store: Store, tmp_path: Path) -> None:
    """GIVEN lang="en" WHEN written THEN headers, kinds and sheet names are English."""
    rep = await sample(store)
    write_csv(rep, tmp_path / "sla.csv", lang="en")
    write_xlsx(rep, tmp_path / "sla.xlsx", lang="en")
    with (tmp_path / "sla.csv").open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[1][:6] == ["Device", "Class", "24 h", "Counted (min)", "Down (min)", "Availability (%)"]
    assert dict(zip(rows[7], rows[8], strict=True))["Kind"] == "offline"
    assert openpyxl.load_workbook(tmp_path / "sla.xlsx").sheetnames == ["Availability", "Incidents", "Summary"]


@pytest.mark.parametrize("month", ["2026-13", "2026-00", "2026-1", "202611", "Nov 2026", " 2026-11"])
async def test_bad_month_is_refused_with_the_expected_format(store: Store, month: str) -> None:
    with pytest.raises(ValueError, match="YYYY-MM"):
        await report(store, month)


def test_the_attendance_bulletin_shows_quarter_days_so_its_rows_add_up_to_the_total(tmp_path: Path) -> None:
    """GIVEN a month's bulletin where one person's late arrivals come to 0.25 day of absence (a penalty the
    monthly rule may set) WHEN written by the shared sheet writer THEN the days column shows two decimals
    (0.25, not 0.3), each cell holds what it shows, and the rows visibly add up to the bold total."""
    from broker.attendance.reports import Column, Row, Table, Word
    from broker.attendance.reports import write_xlsx as write_attendance

    columns = (Column("unit"), Column("staff_id"), Column("late", "int"), Column("absent_days", "days"))
    rows = (
        Row(("税务", "S1", 3, 0.25), flag=True),
        Row(("税务", "S2", 0, 1.0)),
        Row(("社保", "S3", 1, 0.5)),
        Row((Word("total"), "", 4, 1.75), total=True),
    )
    path = tmp_path / "attendance.xlsx"
    write_attendance([Table("monthly", "2026-11", columns, rows, "万州区政务服务中心")], path)
    ws = openpyxl.load_workbook(path)["月度考勤通报"]
    assert_cells_hold_what_they_show(ws)
    head = [c.value for c in ws[2]]
    assert [ws.cell(r, 4).number_format for r in range(3, 7)] == ["0.00"] * 4
    assert ws.cell(3, 4).value == 0.25 and ws.cell(3, 1).fill.start_color.rgb.endswith("FFC7CE")
    assert_total_row_adds_up(ws, "合计", [head[2], head[3]])
