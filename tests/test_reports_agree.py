"""The dashboard and the monthly workbooks agree (issue 17 "Done when"), on SQLite and PostgreSQL.

One hall-month of Qingpu is built through the centre's own paths: devices publish over a real Mosquitto into
the consumer (punches, a terminal outage, a kiosk outage that heals itself, comes back, is restarted by the
centre, given up on by the agent and fixed on site, ratings with a 差评 and a proxy rating), leave is filed
through the attendance service, and the 差评's reply and the proxy verdict go through the API. Then what the
dashboard and the API show is read next to the workbooks as a person opens them (each number as its cell's
format shows it):

- attendance: every person's verdict on every working day (GET /api/attendance/SITE/DAY) is the detail sheet's
  row for that day, and the person's month row counts those verdicts; the month chart's bars are the units'
  subtotals;
- SLA: every outage the API lists is the incident sheet's row with the same time to restore and breach, and
  the device and summary sheets' incidents, breaches, MTTR and compliance are what those API rows make;
- ratings: the ratings page's tally per window is the daily sheet's row (a confirmed proxy rating left out of
  both), and the follow-ups the API shows replied are the summary's replies and reply rate.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.attendance.exceptions import file_exception
from broker.attendance.labels import VERDICT_ZH
from broker.attendance.labels import labels as attendance_labels
from broker.attendance.model import Verdict
from broker.attendance.roster import StaffMember, import_roster
from broker.mosquitto.local import LocalMosquitto
from broker.ratings.report import build_report as build_ratings_report
from broker.ratings.report import write_xlsx as write_ratings_xlsx
from broker.reports import build_sla_report
from broker.reports import write_xlsx as write_sla_xlsx
from broker.reports.labels import labels as sla_labels
from broker.rules import actions
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import commands, devices, dispatches, events, rating_flags, rating_followups
from hallfleet.demo_scenario import load_sites
from protocol import topics
from protocol.envelope import Envelope
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE
from tests.support.hall import Device, Hall, ManualClock, consumer_config, start_hall, wait_until
from tests.support.http_receiver import HttpServer
from tests.support.mqtt import publish

SITE = "qingpu"
MONTH = "2026-11"
FRIDAY = date(2026, 11, 27)  # the day the outages and the ratings happen; the month is judged up to its evening
PASSWORD = "correct horse battery"
STAFF = [
    StaffMember(SITE, "S1", "王芳", "综合窗口", "W1", "", date(2026, 11, 1)),
    StaffMember(SITE, "S2", "李强", "税务", "W2", "", date(2026, 11, 1)),
    StaffMember(SITE, "S3", "张敏", "税务", "W3", "", date(2026, 11, 1)),
]
LATE_IN = {("S1", date(2026, 11, 10)): "08:41"}
LEAVE = ("S2", date(2026, 11, 12))  # filed two days ahead
NO_SHOW = ("S2", date(2026, 11, 26))  # 旷工
NO_SIGN_OUT = ("S3", date(2026, 11, 17))  # 未签退
NO_SIGN_IN = ("S3", FRIDAY)  # the terminal is down over the sign-in deadline: 设备故障 (SJ 001:1040 E.1.3)


def hall_at(day: date, hm: str) -> datetime:
    h, m = map(int, hm.split(":"))
    return datetime(day.year, day.month, day.day, h, m, tzinfo=HALL_ZONE)


def envelope(dev: Device, event_type: str, data: dict[str, Any], ts: datetime) -> tuple[str, bytes, bool]:
    env = Envelope(v=1, id=uuid7(), site=dev.site, device=dev.device, type=event_type, seq=next(dev.seq),
                   boot_id="b1", ts=ts, clock_synced=True, data=data)  # fmt: skip
    return topics.event(dev.site, dev.device, event_type), env.model_dump_json().encode(), False


def punch(terminal: Device, staff_id: str, at: datetime) -> tuple[str, bytes, bool]:
    return envelope(terminal, "attendance.punch", {"staff_id": staff_id, "method": "face"}, at)


def alerts(http: HttpServer) -> dict[str, Any]:
    return {
        "channels": {"tech": {"type": "webhook", "url": http.url("/tech")}},
        "recipients": {"zhang": {"role": "technician", "channel": "tech"}, "wang": {"role": "it_section",
                                                                                  "channel": "tech"}},
        "retry": {"initial_s": 10, "max_s": 60},
    }  # fmt: skip


# -- the month, played ---------------------------------------------------------------------------------------
class Month:
    """The consumer, its clock, the hall's three devices and the API on the same store and clock."""

    def __init__(self, hall: Hall, sites: Sites, clock: ManualClock, port: int) -> None:
        self.hall, self.sites, self.clock = hall, sites, clock
        self.terminal = Device(port, SITE, "att-1", clock, role="attendance")
        self.kiosk = Device(port, SITE, "kiosk-1", clock, role="kiosk")
        self.pad = Device(port, SITE, "pad-1", clock, role="rating")
        self.port = port

    @property
    def store(self) -> Store:
        return self.hall.store

    async def count(self, table: sa.Table, *where: Any) -> int:
        return int(await self.store.scalar(sa.select(sa.func.count()).select_from(table).where(*where)) or 0)

    async def send(self, messages: list[tuple[str, bytes, bool]], event_type: str) -> None:
        """Publish and wait until the consumer stored every one."""
        before = await self.count(events, events.c.type == event_type)
        publish(self.port, messages, client_id="reports-agree")
        target = before + len(messages)
        await wait_until(lambda: self._at_least(event_type, target), what=f"{target} {event_type} stored")

    async def _at_least(self, event_type: str, n: int) -> bool:
        return await self.count(events, events.c.type == event_type) >= n

    async def advance_to(self, when: datetime) -> None:
        """Hall time moves in steps the devices' heartbeats cover, so nothing goes silent but what the test
        takes down."""
        while self.clock.now() < when:
            self.clock.t = min(when, self.clock.now() + timedelta(minutes=40))
            await self.beat()

    async def beat(self) -> None:
        """Every device up sends its heartbeat now (stale after 1.5 heartbeats of 3600 s of silence)."""
        for d in (self.kiosk, self.pad) + (() if self.terminal_down else (self.terminal,)):
            d.heartbeat()
        await wait_until(self._heard_now, what=f"the devices heard at {self.clock.now():%H:%M}")

    terminal_down = False

    async def _heard_now(self) -> bool:
        up = ["kiosk-1", "pad-1"] + ([] if self.terminal_down else ["att-1"])
        rows = await self.store.fetch(sa.select(devices.c.device, devices.c.last_seen).where(devices.c.site == SITE))
        seen = {r.device: r.last_seen for r in rows}
        return all(seen.get(d) is not None and seen[d] >= self.clock.now() for d in up)


def working_days(sites: Sites, last: date) -> list[date]:
    cal = sites[SITE].site_calendar
    first = date(2026, 11, 1)
    return [
        first + timedelta(days=i)
        for i in range((last - first).days + 1)
        if cal.is_working_day(first + timedelta(days=i))
    ]


async def play_punches_before_friday(m: Month) -> None:
    """Every working day of the month before Friday: in at 08:20, out at 17:05, but for the cases above."""
    messages = []
    for day in working_days(m.sites, FRIDAY - timedelta(days=1)):
        for person in STAFF:
            key = (person.staff_id, day)
            if key in (LEAVE, NO_SHOW):
                continue
            messages.append(punch(m.terminal, person.staff_id, hall_at(day, LATE_IN.get(key, "08:20"))))
            if key != NO_SIGN_OUT:
                messages.append(punch(m.terminal, person.staff_id, hall_at(day, "17:05")))
    await m.send(messages, "attendance.punch")


async def play_terminal_outage(m: Month) -> None:
    """S1 and S2 sign in early; the terminal drops off at 07:40 and is back at 09:00, after the 08:30 deadline."""
    await m.send([punch(m.terminal, "S1", hall_at(FRIDAY, "07:32")), punch(m.terminal, "S2", hall_at(FRIDAY, "07:35"))],
                 "attendance.punch")  # fmt: skip
    await m.advance_to(hall_at(FRIDAY, "07:40"))
    m.terminal.will()
    m.terminal_down = True
    await wait_until(lambda: _presence(m, "att-1", "offline"), what="the terminal offline")
    await m.advance_to(hall_at(FRIDAY, "09:00"))
    m.terminal.reconnect()
    m.terminal_down = False
    await wait_until(lambda: _presence(m, "att-1", "online"), what="the terminal back")


async def _presence(m: Month, device: str, state: str) -> bool:
    return await m.store.scalar(sa.select(devices.c.presence).where(devices.c.key == f"{SITE}/{device}")) == state


def app_fault(kiosk: Device, code: str, active: bool, since: datetime) -> None:
    data = {"component": "app", "code": code, "active": active, "since": since.isoformat()}
    kiosk.event("device.fault" if code == "restart_failed" else "kiosk.fault", data)


def command_ack(kiosk: Device, command_id: str, name: str, state: str) -> None:
    env = Envelope(v=1, id=uuid7(), site=kiosk.site, device=kiosk.device, type="command.ack", seq=next(kiosk.seq),
                   boot_id="b1", ts=kiosk.clock.now(), clock_synced=True,
                   data={"command_id": command_id, "name": name, "state": state})  # fmt: skip
    publish(kiosk.port, [(topics.cmd_ack(kiosk.site, kiosk.device), env.model_dump_json().encode(), False)])


async def play_kiosk_outage(m: Month) -> None:
    """test_sla's outage: self-heal, back within the flap window, the centre's restart, the agent gives up,
    a technician fixes it on site after the breach."""
    await m.advance_to(hall_at(FRIDAY, "10:00"))
    kiosk, clock, hall = m.kiosk, m.clock, m.hall
    t0 = clock.now()
    app_fault(kiosk, "unhealthy", True, t0)
    kiosk.state("down", "ticket")
    await wait_until(lambda: _kiosk_incident(hall, "open"), what="the kiosk's outage")
    clock.advance(seconds=3)
    kiosk.event("app.restart", {"app": "kiosk-app", "attempt": 1, "trigger": "probe", "ok": True})
    app_fault(kiosk, "unhealthy", False, clock.now())
    kiosk.state("up")
    await wait_until(lambda: _kiosk_incident(hall, "recovering"), what="recovering")
    clock.advance(seconds=6)
    kiosk.heartbeat()
    await wait_until(lambda: _kiosk_incident(hall, "closed"), what="closed (self-healed)")
    clock.advance(minutes=2)
    again = clock.now()
    app_fault(kiosk, "unhealthy", True, again)
    kiosk.state("down", "ticket")
    await wait_until(lambda: _kiosk_incident(hall, "open"), what="reopened within the flap window")
    command = await wait_until(lambda: _restart_command(hall), what="the centre's restart_app")
    clock.advance(minutes=1)
    command_ack(kiosk, command.id, "restart_app", "succeeded")
    clock.advance(minutes=15)
    app_fault(kiosk, "restart_failed", True, again)
    await hall.settle()
    clock.advance(minutes=13)  # past the breach: a dispatch
    incident = await wait_until(lambda: _dispatched(hall), what="the breach's dispatch")
    clock.advance(minutes=15)
    await actions.dispatch_update(hall.store, incident[:12], "on_site", by="tech.zhang", at=clock.now())
    clock.advance(minutes=5)
    app_fault(kiosk, "restart_failed", False, clock.now())
    app_fault(kiosk, "unhealthy", False, clock.now())
    kiosk.state("up")
    await wait_until(lambda: _kiosk_incident(hall, "recovering"), what="fixed on site")
    clock.advance(seconds=6)
    kiosk.heartbeat()
    closed = await wait_until(lambda: _kiosk_incident(hall, "closed"), what="closed (on site)")
    assert closed.recovery == "on_site" and closed.breached_at is not None
    await m.beat()  # the others were silent for the outage's fifty minutes


async def _kiosk_incident(hall: Hall, state: str) -> Any:
    rows = await hall.incidents(device="kiosk-1")
    return rows[0] if len(rows) == 1 and rows[0].state == state else None


async def _restart_command(hall: Hall) -> Any:
    rows = await hall.store.fetch(sa.select(commands).where(commands.c.name == "restart_app"))
    return rows[0] if rows else None


async def _dispatched(hall: Hall) -> str | None:
    rows = await hall.store.fetch(sa.select(dispatches.c.incident_id))
    return str(rows[0].incident_id) if rows else None


async def play_ratings(m: Month) -> list[str]:
    """At W1 (S1): 5, 4, a real-name 1 (差评), and a 5 pressed while the pad was paused (a proxy rating)."""
    await m.advance_to(hall_at(FRIDAY, "11:50"))
    rated = []
    for i, (level, state) in enumerate([(5, "awaiting"), (4, "awaiting"), (1, "awaiting"), (5, "paused")]):
        data = {"window": "W1", "staff_id": "S1", "service_id": f"BJ-{i}", "level": level, "pad_state": state}
        at = hall_at(FRIDAY, "11:10") + timedelta(minutes=10 * i)  # apart: no burst
        rated.append(envelope(m.pad, "rating.submitted", data, at))
    await m.send(rated, "rating.submitted")
    await wait_until(lambda: m.count(rating_followups), what="the 差评's follow-up opened by the ratings job")
    await wait_until(lambda: m.count(rating_flags), what="the paused-pad rating flagged")
    ids = [r.event_id for r in await m.store.fetch(sa.select(rating_flags.c.event_id))]
    return sorted(set(ids))


async def play_friday_evening(m: Month) -> None:
    await m.advance_to(hall_at(FRIDAY, "17:05"))
    await m.send([punch(m.terminal, s.staff_id, m.clock.now()) for s in STAFF], "attendance.punch")
    await m.advance_to(hall_at(FRIDAY, "18:00"))


@pytest.fixture
async def month(mosquitto: LocalMosquitto, store_url: str, http: HttpServer) -> AsyncIterator[Month]:
    raw = load_sites()[SITE]
    raw["sla"] = raw.get("sla", {}) | {"act_after_s": 30, "verify_s": 5}
    site = SiteConfig.model_validate(raw)
    clock = ManualClock(hall_at(FRIDAY, "07:00"))
    cfg = consumer_config(mosquitto.port, store_url, {SITE: site}, alerts(http), "agree")
    # The ratings job opens follow-ups and raises proxy flags within the test's waits (real seconds).
    cfg = cfg.model_copy(update={"rules": cfg.rules.model_copy(update={"ratings_every_s": 0.2})})
    hall = await start_hall(cfg, clock)
    m = Month(hall, Sites({SITE: site}), clock, mosquitto.port)
    try:
        await import_roster(hall.store, STAFF, by="window.chen", at=hall_at(date(2026, 10, 30), "09:00"))
        for d in (m.terminal, m.kiosk, m.pad):
            d.birth()
        await wait_until(lambda: m._heard_now(), what="the hall's devices online")
        staff_id, day = LEAVE
        await file_exception(hall.store, m.sites, SITE, staff_id, "leave", hall_at(day, "08:30"), hall_at(day, "17:00"),
                             by="window.chen", at=hall_at(day - timedelta(days=2), "10:00"), reason="病假")  # fmt: skip
        await play_punches_before_friday(m)
        await play_terminal_outage(m)
        await play_kiosk_outage(m)
        m.flagged = await play_ratings(m)  # type: ignore[attr-defined]
        yield m
    finally:
        await hall.stop()


@pytest.fixture
async def client(month: Month) -> AsyncIterator[httpx.AsyncClient]:
    cfg = month.hall.consumer.cfg
    await add_user(month.store, "admin", PASSWORD, "it_admin", ("*",), month.clock.now())
    app = create_app(ApiConfig(centre=cfg, cookie_secure=False), month.store, None, month.clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hall") as c:
        await log_in(c)
        yield c


async def log_in(c: httpx.AsyncClient) -> None:
    """Again after hall time moved on: a session idle for hours has timed out, as a person's would."""
    r = await c.post("/api/login", json={"username": "admin", "password": PASSWORD})
    assert r.status_code == 200, r.text
    c.headers["Authorization"] = f"Bearer {r.json()['token']}"


# -- reading a workbook as displayed --------------------------------------------------------------------------
def decimals(cell: Any) -> int:
    """How many decimals the cell's number format shows ("0" none, "0.00" two)."""
    fmt = cell.number_format
    return len(fmt) - 2 if fmt.startswith("0.") else 0


def displayed(cell: Any) -> Any:
    """A number as its format shows it; anything else as it is."""
    v = cell.value
    if isinstance(v, bool) or not isinstance(v, int | float) or not cell.number_format.startswith("0"):
        return v
    return round(v, decimals(cell))


def sheet_rows(ws: Any) -> list[dict[str, Any]]:
    """Row 1 is the title, row 2 the header: each row's cells by header."""
    head = [c.value for c in ws[2]]
    return [dict(zip(head, row, strict=True)) for row in ws.iter_rows(min_row=3)]


def values(ws: Any) -> list[dict[str, Any]]:
    return [{k: displayed(c) for k, c in row.items()} for row in sheet_rows(ws)]


def shows(cell: Any, value: float) -> bool:
    """The cell displays ``value`` at its own precision (what a reader adding up the figures sees)."""
    return bool(displayed(cell) == round(value, decimals(cell)))


# -- attendance -----------------------------------------------------------------------------------------------
VERDICT_OF = {word: v for v, word in VERDICT_ZH.items()}


async def test_the_attendance_month_on_the_dashboard_is_the_monthly_workbook(
    month: Month, client: httpx.AsyncClient
) -> None:
    await play_friday_evening(month)
    await log_in(client)
    w = attendance_labels("zh-CN")
    shown: dict[tuple[str, date], Verdict] = {}
    reasons: dict[tuple[str, date], str] = {}
    for day in working_days(month.sites, FRIDAY):
        r = await client.get(f"/api/attendance/{SITE}/{day}")
        assert r.status_code == 200, r.text
        for row in r.json():
            shown[(row["staff_id"], day)] = VERDICT_OF[row["verdict_label"]]
            reasons[(row["staff_id"], day)] = row["reason"]
    # The cases the month was built with, as the dashboard shows them.
    assert shown[next(iter(LATE_IN))] == Verdict.LATE
    assert shown[LEAVE] == Verdict.LEAVE and shown[NO_SHOW] == Verdict.ABSENT
    assert shown[NO_SIGN_OUT] == Verdict.MISSING_OUT and shown[NO_SIGN_IN] == Verdict.DEVICE_FAULT
    assert Counter(shown.values())[Verdict.ON_TIME] == len(shown) - 5

    r = await client.get(f"/api/reports/attendance/{SITE}/{MONTH}.xlsx")
    assert r.status_code == 200
    book = load_workbook(io.BytesIO(r.content))
    monthly, details = book.worksheets[0], book.worksheets[1]
    # Every staff-day the dashboard shows as other than 正常 is the detail sheet's row, with the same words.
    listed = {(row[w["staff_id"]], row[w["day"]].date()): row[w["verdict"]] for row in values(details)}
    exceptions = {k: VERDICT_ZH[v] for k, v in shown.items() if v != Verdict.ON_TIME}
    assert listed == exceptions
    # ... and the reason a reviewer reads is the same text on both (the leave's note, the terminal's fault).
    why = {(row[w["staff_id"]], row[w["day"]].date()): row[w["reason"]] for row in values(details)}
    assert why == {k: reasons[k] for k in exceptions}
    # Each person's month row counts the verdicts the dashboard shows, as the cells display them.
    people = {row[w["staff_id"]]: row for row in values(monthly) if row[w["staff_id"]]}
    for person in STAFF:
        mine = Counter(v for (s, _), v in shown.items() if s == person.staff_id)
        row = people[person.staff_id]
        assert row[w["late"]] == mine[Verdict.LATE] + mine[Verdict.LATE_AND_EARLY], person.staff_id
        assert row[w["early"]] == mine[Verdict.EARLY] + mine[Verdict.LATE_AND_EARLY], person.staff_id
        assert row[w["missing"]] == mine[Verdict.MISSING_IN] + mine[Verdict.MISSING_OUT], person.staff_id
        assert row[w["absent_days"]] == mine[Verdict.ABSENT] + row[w["rule_days"]], person.staff_id
        assert row[w["leave_days"]] == mine[Verdict.LEAVE], person.staff_id
        assert row[w["device_fault_days"]] == mine[Verdict.DEVICE_FAULT], person.staff_id
    # The month chart on the attendance page: its bars per unit are the units' subtotals.
    html = (await client.get(f"/attendance?site={SITE}&day={FRIDAY}")).text
    bars = {
        (u, k): int(n) for u, k, n in re.findall(r'data-unit="([^"]+)" data-kind="([a-z_]+)" data-count="(\d+)"', html)
    }
    subtotals = {row[w["unit"]]: row for row in values(monthly) if row[w["window"]] == w["subtotal"]}
    assert set(subtotals) == {"综合窗口", "税务"}
    for unit, row in subtotals.items():
        assert bars.get((unit, "late"), 0) == row[w["late"]], unit
        assert bars.get((unit, "missing"), 0) == row[w["missing"]], unit
        assert bars.get((unit, "absent"), 0) == row[w["absent_days"]] - row[w["rule_days"]], unit
        assert bars.get((unit, "device_fault"), 0) == row[w["device_fault_days"]], unit


# -- SLA ------------------------------------------------------------------------------------------------------
async def test_the_sla_figures_on_the_api_are_the_monthly_sla_workbook(
    month: Month, client: httpx.AsyncClient, tmp_path: Any
) -> None:
    await play_friday_evening(month)
    await log_in(client)
    r = await client.get("/api/incidents", params={"state": "all", "site": SITE, "size": 200})
    assert r.status_code == 200, r.text
    outages = [i for i in r.json()["items"] if i["severity"] in ("critical", "major") and i["device"] != "*"]
    assert sorted(i["device"] for i in outages) == ["att-1", "kiosk-1"], "one outage each, however many conditions"
    assert all(i["state"] == "closed" for i in outages)

    report = await build_sla_report(month.store, month.sites, SITE, MONTH, now=month.clock.now())
    path = tmp_path / "sla.xlsx"
    write_sla_xlsx(report, path)
    book = load_workbook(path)
    w = sla_labels("zh-CN")
    device_sheet, incident_sheet, summary = (sheet_rows(ws) for ws in book.worksheets[:3])
    rows = {row[w["id"]].value: row for row in incident_sheet}
    for i in outages:
        row = rows[i["id"]]
        assert shows(row[w["ttr"]], i["sla"]["elapsed_s"] / 60), (i["device"], row[w["ttr"]].value, i["sla"])
        assert row[w["breached"]].value == w.yes_no(i["sla"]["breached"]), i["device"]
    by_device = {row[w["device"]].value: row for row in device_sheet}
    for device in ("att-1", "kiosk-1"):
        mine = [i for i in outages if i["device"] == device]
        row = by_device[w.device(device)]
        assert row[w["incidents"]].value == len(mine)
        assert row[w["breaches"]].value == sum(i["sla"]["breached"] for i in mine)
        mttr = sum(i["sla"]["elapsed_s"] for i in mine) / len(mine) / 60
        assert shows(row[w["mttr"]], mttr), (device, row[w["mttr"]].value, mttr)
    assert by_device[w.device("kiosk-1")][w["breaches"]].value == 1, "one outage, one breach"
    totals = {row[w["item"]].value: row[w["value"]] for row in summary}
    n, breached = len(outages), sum(i["sla"]["breached"] for i in outages)
    assert totals[w["incidents"]].value == n and totals[w["breaches"]].value == breached
    assert shows(totals[w["compliance"]], 100 * (n - breached) / n)
    # Downtime: the device rows add up to the summary as displayed (the API shows no downtime of its own).
    (total_row,) = [row for row in device_sheet if row[w["device"]].value == w["total"]]
    assert displayed(totals[w["down"]]) == displayed(total_row[w["down"]]) > 0


# -- ratings --------------------------------------------------------------------------------------------------
async def test_the_ratings_page_and_api_are_the_monthly_ratings_workbook(
    month: Month, client: httpx.AsyncClient, tmp_path: Any
) -> None:
    (proxy_rating,) = month.flagged  # type: ignore[attr-defined]
    r = await client.post(
        f"/api/ratings/flags/{proxy_rating}/review", json={"verdict": "proxy", "note": "窗口人员自评"}
    )
    assert r.status_code == 200, r.text
    (followup,) = (await client.get("/api/ratings/followups", params={"site": SITE})).json()["items"]
    r = await client.post(f"/api/ratings/followups/{followup['event_id']}/reply",
                          json={"text": "已致电说明办理流程", "objective": False})  # fmt: skip
    assert r.status_code == 200, r.text
    await play_friday_evening(month)
    await log_in(client)

    html = (await client.get(f"/ratings?site={SITE}&day={FRIDAY}")).text
    tally = re.findall(
        r'<tr data-window="([^"]+)"><td>[^<]*</td><td>([^<]*)</td><td class="count">(\d+)</td>'
        r'<td class="negative">(\d+)</td><td class="satisfaction">([^<]*)</td>', html)  # fmt: skip
    assert tally == [("W1", "S1", "3", "1", "66.7%")], "the proxy rating is left out, as in the workbook"

    report = await build_ratings_report(month.store, month.sites, SITE, MONTH, now=month.clock.now())
    path = tmp_path / "ratings.xlsx"
    write_ratings_xlsx(report, path)
    book = load_workbook(path)
    summary, _, daily = (values(ws) for ws in book.worksheets[:3])
    (day_row,) = daily
    assert day_row["日期"].date() == FRIDAY and (day_row["窗口"], day_row["工号"]) == ("W1", "S1")
    _, _, count, negative, satisfied = tally[0]
    assert (day_row["评价数"], day_row["差评数"]) == (int(count), int(negative))
    assert f"{100 - day_row['差评率(%)']:.1f}%" == satisfied
    assert day_row["核实代评(未计入)"] == 1

    done = (await client.get("/api/ratings/followups", params={"site": SITE, "state": "all"})).json()["items"]
    replied = [f for f in done if f["replied_at"] is not None]
    items = {row["指标"]: row["数值"] for row in summary}
    assert items["实名差评数"] == len(done) and items["实名差评已回复"] == len(replied) == 1
    assert items["实名差评回复率(%)"] == 100.0
