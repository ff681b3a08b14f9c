"""The dashboard's queue page (排队叫号, issue 23 item 1) through the real app over HTTP with a login cookie, on both
stores: the hall's devices publish ticket steps, pad states and punches through a real Mosquitto, the consumer
stores them, the centre's queue job (the consumer's, QueueJobs) folds and judges them on the hall's manual clock,
and uvicorn serves the page.

The page shows per service the waits against QP 000:368's 「10,30,60」 and the day's figures as the monthly report
counts them, per window the pause, the A/B absence and the combined alert exactly where the queue job told window
management; staff data only to roles that read attendance, audited; another hall's queue is 403; every parameter
bounded; the monthly workbook downloads audited and no-store; and in Chromium the page updates live."""

from __future__ import annotations

import asyncio
import io
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
import sqlalchemy as sa
import uvicorn

from broker.alerts.routing import Router
from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.api.queue_words import QUEUE_EN, QUEUE_ZH
from broker.attendance.roster import StaffMember, import_roster
from broker.config import ConsumerConfig, IngestConfig, RulesConfig, StoreConfig
from broker.mosquitto.local import LocalMosquitto
from broker.queueing.jobs import QueueJobs
from broker.ratings.model import PAD_STATE_ZH
from broker.sites import Sites
from broker.store.schema import audit_log, events, notifications, queue_waits
from runtime.clock import HALL_ZONE
from runtime.settings import MqttConfig
from tests.support.apps import free_port
from tests.support.hall import Device, Hall, ManualClock, start_hall, wait_until

SITE = "qp"
TUE = date(2026, 11, 24)  # a working day: sessions 09:00-12:00 and 13:30- (the default calendar)
PASSWORD = "correct horse battery"
SITES = {
    SITE: {
        "name": "青浦区政务服务中心",
        "queueing": {"services": {"A": {"name": "社保综合", "windows": ["03", "04"]},
                                  "B": {"name": "不动产登记", "wait_class": "complex", "windows": ["05"]}}},
    },
}  # fmt: skip
ALERTS = {
    "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
    "recipients": {"wm": {"role": "window_management", "channel": "hook"}},
}
ROSTER = [
    StaffMember(SITE, "S1", "张三", "区人社局", "03", "A", date(2026, 1, 1)),
    StaffMember(SITE, "S2", "李四", "区人社局", "03", "B", date(2026, 1, 1)),
    StaffMember(SITE, "S3", "王五", "区规划资源局", "05", "A", date(2026, 1, 1)),
    StaffMember(SITE, "S4", "赵六", "区规划资源局", "05", "B", date(2026, 1, 1)),
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")


def at(h: int, m: int = 0) -> datetime:
    return datetime(TUE.year, TUE.month, TUE.day, h, m, tzinfo=HALL_ZONE)


@dataclass
class Scene:
    hall: Hall
    clock: ManualClock
    port: int  # Mosquitto's
    url: str  # the dashboard's
    cfg: ConsumerConfig


def centre(port: int, store_url: str) -> ConsumerConfig:
    return ConsumerConfig.model_validate({
        "instance": "queue-view", "sites": SITES, "alerts": ALERTS,
        "mqtt": MqttConfig(host="127.0.0.1", port=port, backoff_initial_s=0.1, backoff_max_s=1.0),
        "store": StoreConfig(url=store_url), "ingest": IngestConfig(sweep_s=0.1, republish_s=1.0),
        # Ingest only: the test runs the queue job itself, at the hall times it chooses (a tick per step).
        "rules": RulesConfig(enabled=False),
    })  # fmt: skip


class Floor:
    """The hall's devices, each publishing as its agent does, at the hall's time."""

    def __init__(self, scene: Scene) -> None:
        self.scene = scene
        self.devices: dict[str, Device] = {}
        self.sent = 0
        self.jobs = QueueJobs(scene.hall.store, Sites(scene.cfg.sites), Router(scene.cfg.alerts))

    def _device(self, name: str) -> Device:
        if name not in self.devices:
            self.devices[name] = Device(self.scene.port, SITE, name, self.scene.clock)
        return self.devices[name]

    def at(self, when: datetime) -> Floor:
        self.scene.clock.t = when
        return self

    def send(self, device: str, event_type: str, data: dict[str, Any]) -> None:
        self._device(device).event(event_type, data)
        self.sent += 1

    def step(self, device: str, kind: str, ticket: str, service: str = "A", **extra: Any) -> None:
        at_ = self.scene.clock.now().isoformat()
        self.send(device, f"queue.ticket_{kind}", {"ticket": ticket, "service": service, "at": at_, **extra})

    def pad(self, window: str, state: str, staff: str | None, ticket: str | None = None) -> None:
        self.send(f"pad-{window}", "rating.pad_state",
                  {"window": window, "state": state, "staff_id": staff, "service_id": ticket})  # fmt: skip

    def punch(self, staff: str) -> None:
        self.send("att-1", "attendance.punch", {"staff_id": staff, "method": "face"})

    async def stored(self) -> None:
        """Every event published so far is in the store, and the queue job ticked on it (fold, alerts)."""
        store = self.scene.hall.store

        async def done() -> bool:
            n = await store.fetch(sa.select(sa.func.count()).select_from(events))
            return bool(n[0][0] >= self.sent)

        await wait_until(done, 20, f"{self.sent} events stored")
        await self.jobs.tick(self.scene.clock.now())


async def serve(hall: Hall, cfg: ConsumerConfig, clock: ManualClock) -> AsyncIterator[str]:
    app = create_app(ApiConfig(centre=cfg, cookie_secure=False, stream_poll_s=0.2), hall.store, None, clock)
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                       timeout_graceful_shutdown=2))  # fmt: skip
    task = asyncio.create_task(uv.serve())

    async def started() -> bool:
        return bool(uv.started)

    await wait_until(started, 10, "uvicorn to listen")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 15)


async def open_scene(mosquitto: LocalMosquitto, store_url: str) -> AsyncIterator[Scene]:
    clock = ManualClock(at(8, 40))
    cfg = centre(mosquitto.port, store_url)
    hall = await start_hall(cfg, clock)
    try:
        await import_roster(hall.store, ROSTER, by="wm", at=at(8))
        for name, role, sites in (("wm.qp", "window_management", (SITE,)), ("tech.qp", "technician", (SITE,)),
                                  ("wm.other", "window_management", ("other",))):  # fmt: skip
            await add_user(hall.store, name, PASSWORD, role, sites, at(8))
        async for url in serve(hall, cfg, clock):
            yield Scene(hall, clock, mosquitto.port, url, cfg)
    finally:
        await hall.stop()


async def morning(floor: Floor) -> None:
    """09:00-09:30: window 03's A and B posts came to work, window 05's never did; A001 is being served at 04,
    A002 was served at 03, A005 given up; 03's pad says 暂停服务 from 09:30 while A003 waits."""
    floor.at(at(8, 50)).punch("S1")
    floor.at(at(8, 51)).punch("S2")
    floor.at(at(9, 0))
    for ticket, service in (("A001", "A"), ("A005", "A"), ("B002", "B")):
        floor.step("qd-1", "issued", ticket, service)
    floor.at(at(9, 2)).step("qd-1", "issued", "A002")
    floor.at(at(9, 5)).step("qs-04", "called", "A001", window="04")
    floor.pad("04", "serving", "S5", "A001")
    floor.at(at(9, 10)).step("qs-03", "called", "A002", window="03")
    floor.pad("03", "serving", "S1", "A002")
    floor.step("qd-1", "issued", "B001", "B")
    floor.at(at(9, 20)).step("qs-03", "served", "A002", window="03")
    floor.step("qs-05", "called", "B002", "B", window="05")
    floor.at(at(9, 25)).step("qd-1", "issued", "A003")
    floor.at(at(9, 30)).step("qd-1", "abandoned", "A005", reason="cancelled")
    floor.pad("03", "paused", "S1")
    await floor.stored()


async def later(floor: Floor) -> None:
    """09:40-10:00: B002 served at 05, A004 issued; at 10:00 A003 has waited 35 minutes (一般: 10)."""
    floor.at(at(9, 40)).step("qs-05", "served", "B002", "B", window="05")
    floor.at(at(9, 55)).step("qd-1", "issued", "A004")
    floor.at(at(10, 0))
    await floor.stored()


@asynccontextmanager
async def login(url: str, name: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client: the login form sets the session cookie, every request after carries it."""
    async with httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=20) as c:
        r = await c.post("/login", data={"username": name, "password": PASSWORD, "next": "/queue"})
        assert r.status_code == 303 and "hallfleet_session" in c.cookies, r.text[:300]
        yield c


def rows(html: str, table: str) -> dict[str, str]:
    """data-* key of each row of ``table`` -> the row's HTML."""
    body = html.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    out = {}
    for tr in re.findall(r"<tr data-[a-z]+=\"[^\"]*\".*?</tr>", body, re.S):
        out[re.search(r'data-[a-z]+="([^"]*)"', tr).group(1)] = tr  # type: ignore[union-attr]
    return out


def text(fragment: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", fragment)).strip()


async def audit_rows(scene: Scene, action: str) -> list[Any]:
    return await scene.hall.store.fetch(sa.select(audit_log).where(audit_log.c.action == action))


# -- through HTTP, both stores -------------------------------------------------------------------------------
@pytest.fixture
async def scene(mosquitto: LocalMosquitto, store_url: str) -> AsyncIterator[Scene]:
    async for s in open_scene(mosquitto, store_url):
        yield s


def test_every_pad_state_wait_class_and_alert_state_has_its_words() -> None:
    assert set(QUEUE_ZH) == set(QUEUE_EN)
    assert {f"q_pad_{s}" for s in PAD_STATE_ZH} <= set(QUEUE_ZH)
    assert {f"q_class_{c}" for c in ("general", "complex", "special")} <= set(QUEUE_ZH)
    assert {f"q_alert_{a}" for a in ("told", "pending", "none")} <= set(QUEUE_ZH)


async def test_the_queue_page_shows_waits_windows_and_the_day_as_the_centre_judges_them(scene: Scene) -> None:
    """GIVEN a morning of tickets, pad states and punches through the broker and the consumer WHEN window
    management opens the queue page at 09:31 and at 10:00 THEN per service the waits against 10/30/60 and the
    day's figures, per window the ticket served, the pad, the A/B absence and the combined alert: pending while
    03's pause is young and no ticket is late, told at 10:00, and told exactly for the windows the consumer's
    queue job alerted window management about."""
    floor = Floor(scene)
    await morning(floor)
    async with login(scene.url, "wm.qp") as wm:
        scene.clock.t = at(9, 31)
        windows = rows((await wm.get(f"/queue?site={SITE}")).text, "q-windows")
        assert 'data-alert="pending"' in windows["03"] and "暂停未满 5 分钟" in windows["03"]
        assert 'data-away="1" data-alert="told"' in windows["05"]  # nobody of 05 came: the gap is an alert at once

        await later(floor)
        r = await wm.get(f"/queue?site={SITE}")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        html = r.text
        services = rows(html, "q-services")
        assert text(services["A"]) == "A 社保综合 一般 10 2 1 A003 已等 35 分钟 5 1 1 66.7% (2/3)"
        assert text(services["B"]) == "B 不动产登记 复杂 30 1 1 B001 已等 50 分钟 2 1 0 100.0% (1/1)"
        windows = rows(html, "q-windows")
        assert text(windows["03"]) == "03 A - 暂停服务 · 自 09:30 起 2 1 S1 否 已通知窗口管理"
        assert text(windows["04"]) == "04 A A001 (自 09:05) 办理中 2 1 S5 否 -"
        assert text(windows["05"]) == "05 B - 未上报 1 1 - 自 09:00 已通知窗口管理"
        today = rows(html, "q-today")
        assert text(next(iter(today.values()))) == "7 2 1 4 75.0% (3/4)"
        assert "QP 000:368" in html and "一般事项 10 分钟, 复杂事项 30 分钟, 特殊情形 60 分钟" in html

        told = {w for w, tr in windows.items() if 'data-alert="told"' in tr}
        sent = await scene.hall.store.fetch(sa.select(notifications).where(notifications.c.step == "window_unattended"))
        assert {n.body.split(" 窗口", 1)[0] for n in sent} == told == {"03", "05"}
        assert not await scene.hall.store.fetch(sa.select(notifications).where(notifications.c.step == "queue_wait")), (
            "the late tickets of A and B are in the windows' combined alerts, not alerts of their own"
        )
        (read,) = [a for a in await audit_rows(scene, "attendance.read") if a.actor == "wm.qp"][-1:]
        assert read.target == f"{SITE}/*" and '"queue"' in read.detail

        en = (await wm.get(f"/queue?site={SITE}&lang=en")).text
        assert text(rows(en, "q-windows")["03"]) == "03 A - paused · since 09:30 2 1 S1 no window management told"


async def test_staff_data_only_for_roles_that_read_attendance_and_only_ones_own_halls(scene: Scene) -> None:
    floor = Floor(scene)
    await morning(floor)
    async with login(scene.url, "tech.qp") as tech:
        html = (await tech.get(f"/queue?site={SITE}")).text
        assert 'id="q-staff-hidden"' in html and "data-alert" not in html and "data-away" not in html
        assert ">S1<" not in html and ">S5<" not in html
        assert 'data-paused="1"' in rows(html, "q-windows")["03"], "the pad's pause is device data: everyone sees it"
        assert [a for a in await audit_rows(scene, "attendance.read") if a.actor == "tech.qp"] == []
        report = await tech.get(f"/api/reports/queue/{SITE}/2026-11.xlsx")
        assert report.status_code == 200, "the report names services and windows, nobody"
    async with login(scene.url, "wm.other") as other:
        for path in (f"/queue?site={SITE}", f"/queue/stream?site={SITE}", f"/api/reports/queue/{SITE}/2026-11.xlsx"):
            r = await other.get(path)
            assert r.status_code == 403 and SITE in r.text, path
        assert 'id="q-board"' not in (await other.get("/queue")).text, "no hall of theirs is configured"
    async with httpx.AsyncClient(base_url=scene.url) as anonymous:
        r = await anonymous.get(f"/queue?site={SITE}", headers={"accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=/queue")
        assert (await anonymous.get(f"/api/reports/queue/{SITE}/2026-11.xlsx")).status_code == 401


BAD = [
    ("/queue?site=qp%2F..", "site"),
    ("/queue?site=" + "q" * 65, "site"),
    ("/queue?site=qp%00", "site"),
    ("/queue/stream", "site"),
    ("/queue/stream?site=-qp", "site"),
    ("/api/reports/queue/qp/2026-13.xlsx", "month"),
    ("/api/reports/queue/qp/1999-12.xlsx", "month"),
    ("/api/reports/queue/q%20p/2026-11.xlsx", "site"),
]


async def test_every_parameter_is_bounded_at_the_door(scene: Scene) -> None:
    async with login(scene.url, "wm.qp") as wm:
        for path, field in BAD:
            r = await wm.get(path)
            assert r.status_code == 422 and field in r.json()["fields"], (path, r.text[:300])


async def test_the_stream_sends_the_board_again_when_it_changes_and_ends_with_the_session(scene: Scene) -> None:
    """GIVEN window management's queue stream WHEN a ticket is issued THEN the next board has it; WHEN the
    session logs out THEN the stream says ``end`` and closes (broker/api/live.py)."""
    floor = Floor(scene)
    await morning(floor)
    async with login(scene.url, "wm.qp") as wm, wm.stream("GET", f"/queue/stream?site={SITE}") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events_ = aiter(_sse(r))
        first = await anext(events_)
        assert first["event"] == "queue" and 'data-service="A" data-waiting="1"' in first["html"]
        floor.at(at(9, 32)).step("qd-1", "issued", "A007")
        await floor.stored()
        second = await asyncio.wait_for(anext(events_), 10)
        assert 'data-service="A" data-waiting="2"' in second["html"]
        reads = [a for a in await audit_rows(scene, "attendance.read") if a.actor == "wm.qp"]
        assert len(reads) == 1, "one audited read per stream, not one per board sent"
        assert (await wm.post("/logout")).status_code == 303
        assert (await asyncio.wait_for(anext(events_), 10))["event"] == "end"


async def _sse(r: httpx.Response) -> AsyncIterator[dict[str, str]]:
    """Server-sent events as {event, html} (comments skipped)."""
    event = ""
    async for line in r.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            yield {"event": event, "html": json.loads(line.removeprefix("data: ")).get("html", "")}


async def test_the_monthly_workbook_downloads_audited_with_the_reports_figures(scene: Scene) -> None:
    floor = Floor(scene)
    await morning(floor)
    await later(floor)
    async with login(scene.url, "wm.qp") as wm:
        page = (await wm.get(f"/queue?site={SITE}")).text
        links = re.findall(r'href="(/api/reports/queue/[^"]+)"', page)
        assert links == [f"/api/reports/queue/{SITE}/2026-11.xlsx", f"/api/reports/queue/{SITE}/2026-10.xlsx"]
        r = await wm.get(links[0])
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats-officedocument.spreadsheetml")
    assert r.headers["content-disposition"] == f'attachment; filename="queue-{SITE}-2026-11.xlsx"'
    ws = openpyxl.load_workbook(io.BytesIO(r.content)).active
    assert ws is not None and "青浦区政务服务中心 2026-11 排队等候统计" in str(ws["A1"].value)
    header = [c.value for c in ws[2]]
    total = dict(zip(header, list(ws.iter_rows(values_only=True))[-1], strict=True))
    assert (total["事项编码"], total["评判号数"], total["限时内"]) == ("合计", 4, 3), "as the page's day: 3 of 4"
    (export,) = await audit_rows(scene, "queue.export")
    assert (export.actor, export.target) == ("wm.qp", SITE) and '"2026-11"' in export.detail
    waits = await scene.hall.store.fetch(sa.select(queue_waits))
    assert len(waits) == 7, "every ticket folded once by the consumer's queue job"


# -- in a browser --------------------------------------------------------------------------------------------
@pytest.fixture
async def browser_scene(mosquitto: LocalMosquitto, sqlite_url: str) -> AsyncIterator[Scene]:
    """One store is enough for the browser: the tests above cover both."""
    async for s in open_scene(mosquitto, sqlite_url):
        yield s


async def test_in_chromium_the_queue_page_updates_live_and_is_screenshot(browser_scene: Scene, tmp_path: Path) -> None:
    """GIVEN the morning at 10:00 WHEN window management watches the page and a ticket is issued THEN, without a
    reload, service A's waiting count goes from 2 to 3 (the page's own stream). Screenshots in test-artifacts/."""
    from playwright.async_api import async_playwright, expect

    _need_chromium()
    scene = browser_scene
    floor = Floor(scene)
    await morning(floor)
    await later(floor)
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=["--headless", "--no-sandbox",
                                                                                "--disable-gpu"])  # fmt: skip
        try:
            page = await browser.new_page(viewport={"width": 1360, "height": 900}, locale="zh-CN")
            await page.goto(f"{scene.url}/queue?site={SITE}")
            await page.fill("#username", "wm.qp")
            await page.fill("#password", PASSWORD)
            await page.click("#login-submit")
            await page.wait_for_url(f"{scene.url}/queue?site={SITE}")
            await expect(page.locator("#live")).to_have_attribute("data-state", "open", timeout=10_000)
            a_row = page.locator('#q-services tr[data-service="A"]')
            await expect(a_row).to_have_attribute("data-waiting", "2")
            await expect(page.locator('#q-windows tr[data-window="03"] td.alert')).to_have_text("已通知窗口管理")
            await _shot(page, tmp_path, "queue-zh")
            floor.at(at(10, 1)).step("qd-1", "issued", "A006")
            await floor.stored()
            await expect(a_row).to_have_attribute("data-waiting", "3", timeout=10_000)
            await expect(page.locator("#q-board")).to_have_attribute("data-at", at(10, 1).isoformat())
            await page.goto(f"{scene.url}/queue?site={SITE}&lang=en")
            await expect(page.locator('#q-windows tr[data-window="05"] td.away')).to_have_text("since 09:00")
            await _shot(page, tmp_path, "queue-en")
        finally:
            await browser.close()


def _need_chromium() -> None:
    # Never a skip: a browser test that quietly does not run proves nothing.
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/setup (Debian's chromium and fonts-wqy-zenhei)"


async def _shot(page: Any, tmp_path: Path, name: str) -> None:
    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    shutil.copy(tmp_path / f"{name}.png", ARTIFACTS / f"dashboard-{name}.png")


def test_the_scene_is_a_working_day() -> None:
    from broker.sites import Sites

    cal = Sites(ConsumerConfig.model_validate({"sites": SITES}).sites)[SITE].site_calendar
    assert cal.is_working_day(TUE) and cal.sessions_on(TUE)[0][0] == at(9) - timedelta(0)
