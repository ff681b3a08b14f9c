"""The dashboard in a real browser (Debian's chromium driven by Playwright) against uvicorn serving the app, with
a real Mosquitto, an in-process consumer and a real agent process: log in, watch a device go 离线 live when
its Will arrives (no reload), acknowledge its incident, restart its application and watch the command's state
change; dispatch a technician and see the arrival live; answer a negative rating's follow-up on the 评价 page;
create a user; the consumable and monthly attendance charts. Screenshots go to the test's tmp dir and to
test-artifacts/ (ignored by git)."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from playwright.async_api import Page, async_playwright, expect

from broker.alerts.routing import AlertsConfig, Router
from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.api.dispatch import move_dispatch
from broker.attendance.roster import StaffMember, import_roster
from broker.commands import centre_link
from broker.config import ConsumerConfig, StoreConfig
from broker.mosquitto.local import LocalMosquitto
from broker.ratings.jobs import RatingJobs
from broker.sites import Sites
from broker.store.schema import audit_log, commands, consumable_levels, events, incidents, rating_followups
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE
from runtime.settings import MqttConfig
from runtime.transport import AsyncMqtt
from tests.conftest import RunningConsumer
from tests.support.apps import free_port
from tests.support.hall import Device, ManualClock, wait_until
from tests.support.procs import Proc, agent_proc, presence

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
KEY = "qp/kiosk-1"
ROW = "#dev-qp--kiosk-1"
PASSWORD = "correct horse battery"
# The kiosk application the agent supervises: it lives until the agent that started it is gone.
APP = [
    sys.executable,
    "-c",
    "import os, time; p = os.getppid(); all(time.sleep(0.2) or True for _ in iter(lambda: os.getppid() == p, False))",
]


@pytest.fixture
def store_url(sqlite_url: str) -> str:
    """One backend is enough for the browser: test_api.py covers both stores."""
    return sqlite_url


@pytest.fixture
async def server(consumer: RunningConsumer, mosquitto: LocalMosquitto) -> AsyncIterator[str]:
    centre = ConsumerConfig(
        instance="browser",
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
        store=StoreConfig(url="sqlite+aiosqlite:///unused"),
    )
    link = AsyncMqtt(centre_link(centre.mqtt, "api-browser"))
    await link.connect()
    await add_user(consumer.store, "tech.qp", PASSWORD, "technician", ("qp",), datetime.now(UTC))
    app = create_app(ApiConfig(centre=centre, cookie_secure=False, stream_poll_s=0.3), consumer.store, link)
    port = free_port()
    uv = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
    )
    task = asyncio.create_task(uv.serve())
    await wait_until(lambda: _started(uv), 10, "uvicorn to listen")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 15)
        await link.disconnect()


async def _started(uv: uvicorn.Server) -> bool:
    return bool(uv.started)


def _need_chromium() -> None:
    # Never a skip: a browser test that quietly does not run proves nothing.
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run scripts/setup (Debian's chromium and fonts-wqy-zenhei)"


def _agent(tmp_path: Path, port: int) -> Proc:
    app = {"name": "kiosk-app", "command": APP, "probe_interval_s": 1.5, "failures_before_restart": 1}
    return agent_proc(tmp_path, port, "qp", "kiosk-1", heartbeat_s=60, rate=0.01, keepalive_s=2, app=app)


async def _shot(page: Page, tmp_path: Path, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    shutil.copy(tmp_path / f"{name}.png", ARTIFACTS / f"dashboard-{name}.png")


async def test_dashboard_shows_a_device_going_offline_live_and_acts_on_its_incident(
    server: str, consumer: RunningConsumer, mosquitto: LocalMosquitto, tmp_path: Path, procs: list[Proc]
) -> None:
    _need_chromium()
    agent = _agent(tmp_path, mosquitto.port)
    procs.append(agent.start())
    await wait_until(lambda: _presence_is(consumer, "online"), 20, "the agent's birth")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 800}, locale="zh-CN")
            await page.goto(f"{server}/incidents")
            assert page.url.startswith(f"{server}/login?next="), "an anonymous visitor is sent to the login"
            await page.fill("#username", "tech.qp")
            await page.fill("#password", PASSWORD)
            await _shot(page, tmp_path, "01-login")
            await page.click("#login-submit")
            await page.wait_for_url(f"{server}/incidents")
            await page.goto(server + "/")
            await expect(page.locator(f"{ROW} .presence")).to_have_text("在线")
            await expect(page.locator("#live")).to_contain_text("实时", timeout=10_000)
            await _shot(page, tmp_path, "02-online")

            # The agent dies without a goodbye: the broker publishes its Will, the stream brings it here.
            await page.evaluate("window.__sameDocument = true")
            agent.kill()
            await expect(page.locator(f"{ROW} .presence")).to_have_text("离线", timeout=20_000)
            assert await page.evaluate("window.__sameDocument === true"), "the page changed without a reload"
            assert await page.locator(f"{ROW} svg.timeline rect[data-state=offline]").count() == 1
            await _shot(page, tmp_path, "03-offline-live")

            incident = await wait_until(lambda: _incident(consumer), 10, "the offline incident")
            await page.goto(f"{server}/incidents")
            row = page.locator(f"#inc-{incident.id}")
            await expect(row).to_contain_text("离线")
            await expect(row.locator(".countdown")).to_have_text(_countdown_like())
            async with page.expect_navigation():
                await row.locator("button.ack").click()
            await expect(page.locator(f"#inc-{incident.id} .acked")).to_contain_text("tech.qp")
            assert (await _incident(consumer)).acked_by == "tech.qp"
            await _shot(page, tmp_path, "04-acknowledged")

            # Back online (a new session); then restart its application from the incident's row.
            procs.append(agent.start())
            await wait_until(lambda: _presence_is(consumer, "online"), 20, "the agent back online")
            await page.add_init_script(RECORD_COMMAND_STATES)
            # The agent is held until the page has shown the command in flight: a quick answer must not reach the
            # store before the page's first render, or there is no change left to see live.
            agent.signal(signal.SIGSTOP)
            try:
                async with page.expect_navigation(url=f"{server}/incidents?command=*"):
                    await page.locator(f"#inc-{incident.id} button.restart").click()
                command_id = page.url.rsplit("=", 1)[1]
                await page.evaluate("window.__sameDocument = true")
                await wait_until(lambda: page.evaluate("window.__states.length > 0"), 10, "the command's first state")
            finally:
                agent.signal(signal.SIGCONT)
            seen = await _recorded_until(page, "成功", 30)
            assert len(seen) >= 2 and seen[-1] == "成功", f"the state changed live on the page: {seen}"
            assert await page.evaluate("window.__sameDocument === true")
            await _shot(page, tmp_path, "05-command-succeeded")
            row_cmd = (await consumer.store.fetch(sa.select(commands).where(commands.c.id == command_id)))[0]
            assert (row_cmd.name, row_cmd.issuer, row_cmd.state) == ("restart_app", "tech.qp", "succeeded")

            await page.goto(f"{server}/?lang=en")
            await expect(page.locator(f"{ROW} .presence")).to_have_text("online", timeout=10_000)
            await _shot(page, tmp_path, "06-english")
        finally:
            await browser.close()


# Every text the new command's state cell shows, from the server's render (DOMContentLoaded, before the live
# stream opens at load) through each change the stream makes: polling from the test would miss the first states
# when the device answers within the time the page takes to finish loading.
RECORD_COMMAND_STATES = """
window.__states = [];
document.addEventListener("DOMContentLoaded", function () {
  var id = new URLSearchParams(location.search).get("command");
  if (!id) return;
  function note() {
    var el = document.querySelector("#cmd-" + CSS.escape(id) + " .cmd-state");
    var text = el ? el.textContent.trim() : null;
    if (text && window.__states[window.__states.length - 1] !== text) window.__states.push(text);
  }
  note();
  new MutationObserver(note).observe(document.body, {childList: true, subtree: true, characterData: true});
});
"""


async def _recorded_until(page: Page, final: str, within_s: float) -> list[str]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    seen: list[str] = []
    while loop.time() < deadline:
        seen = await page.evaluate("window.__states")
        if seen and seen[-1] == final:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"the command never showed {final}; it showed {seen}")


def _countdown_like() -> object:
    import re

    return re.compile(r"^(已超时 \+)?\d+:\d\d:\d\d$")


async def _presence_is(consumer: RunningConsumer, state: str) -> bool:
    return await presence(consumer.store, KEY) == state


async def _incident(consumer: RunningConsumer) -> Any:
    rows = await consumer.store.fetch(sa.select(incidents).where(incidents.c.key == KEY, incidents.c.kind == "offline"))
    return rows[0] if rows else None


# -- ratings, dispatch, users, charts -----------------------------------------------------------------------
async def _browser_login(pw: Any, server: str, name: str, tmp_path: Path) -> tuple[Any, Page]:
    browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
    page = await browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    await page.goto(f"{server}/login")
    await page.fill("#username", name)
    await page.fill("#password", PASSWORD)
    async with page.expect_navigation():
        await page.click("#login-submit")
    return browser, page


async def _insert(consumer: RunningConsumer, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    async with consumer.store.engine.begin() as conn:
        await conn.execute(table.insert(), rows)


def _event(site: str, device: str, kind: str, at: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": site, "device": device, "id": uuid7(), "type": kind, "seq": int(at.timestamp() * 1000),
        "boot_id": "b", "ts": at, "clock_synced": True, "replayed": False, "received_at": at,
        "data": json.dumps(data),
    }  # fmt: skip


async def test_ratings_page_shows_a_negative_rating_and_answers_its_followup(
    server: str, consumer: RunningConsumer, tmp_path: Path
) -> None:
    _need_chromium()
    await add_user(consumer.store, "wm.qp", PASSWORD, "window_management", ("qp",), datetime.now(UTC))
    now = datetime.now(UTC)
    ratings = [
        _event(
            "qp",
            "pad-w3",
            "rating.submitted",
            now - timedelta(seconds=s),
            {"window": "W3", "staff_id": "S7", "service_id": f"T{s}", "level": level, "delay_s": 9.0},
        )
        for s, level in ((90, 5), (60, 4), (30, 1))
    ]
    # Pressed while the pad showed 暂停服务: a proxy-rating pattern for review.
    paused = {"window": "W3", "staff_id": "S7", "service_id": "T5", "level": 5, "delay_s": 9.0, "pad_state": "paused"}
    ratings.append(_event("qp", "pad-w3", "rating.submitted", now - timedelta(seconds=5), paused))
    await _insert(consumer, events, ratings)
    opened, _ = await RatingJobs(consumer.store, Sites({}), Router(AlertsConfig())).scan_ratings(now)
    negative = ratings[2]["id"]
    assert [o.rating.event_id for o in opened] == [negative]
    async with async_playwright() as pw:
        browser, page = await _browser_login(pw, server, "wm.qp", tmp_path)
        try:
            await page.goto(f"{server}/ratings")
            await expect(page.locator("#tally tr[data-window=W3] .satisfaction")).to_have_text("75.0%")
            await expect(page.locator("#flags tr[data-pattern=paused]")).to_contain_text("暂停服务")
            row = page.locator(f"#negatives #fu-{negative}")
            await expect(row).to_contain_text("非常不满意")
            await expect(row.locator(".fu-state")).to_contain_text("待回复")
            await _shot(page, tmp_path, "07-ratings")
            pending = page.locator(f"#followups #fu-{negative}")
            await pending.locator("input[name=text]").fill("已电话回访并致歉")
            await pending.locator("select[name=objective]").select_option("yes")
            async with page.expect_navigation():
                await pending.locator("button.reply").click()
            await expect(page.locator("#saved")).to_be_visible()
            answered = page.locator(f"#negatives #fu-{negative}")
            await expect(answered.locator(".fu-state")).to_contain_text("待整改")
            await expect(answered.locator(".reply-text")).to_contain_text("已电话回访并致歉")
            await _shot(page, tmp_path, "08-followup-replied")
            async with page.expect_navigation():
                await page.locator("#flags tr[data-pattern=paused] button.proxy").click()
            await expect(page.locator("#flags")).to_contain_text("暂无待核查")
        finally:
            await browser.close()
    row_fu = (await consumer.store.fetch(sa.select(rating_followups)))[0]
    assert (row_fu.replied_by, row_fu.reply_text, row_fu.objective) == ("wm.qp", "已电话回访并致歉", True)


async def test_dispatch_from_the_incidents_page_and_its_arrival_shows_live(
    server: str, consumer: RunningConsumer, mosquitto: LocalMosquitto, tmp_path: Path
) -> None:
    _need_chromium()
    device = Device(mosquitto.port, "qp", "kiosk-9", ManualClock(datetime.now(UTC)), role="kiosk")
    await asyncio.to_thread(device.birth)
    await wait_until(lambda: _is(consumer, "qp/kiosk-9", "online"), 10, "kiosk-9 online")
    await asyncio.to_thread(device.will)
    incident = await wait_until(lambda: _incident_of(consumer, "qp/kiosk-9"), 10, "kiosk-9's incident")
    async with async_playwright() as pw:
        browser, page = await _browser_login(pw, server, "tech.qp", tmp_path)
        try:
            await page.goto(f"{server}/incidents")
            row = page.locator(f"#inc-{incident.id}")
            await expect(row.locator("button.dispatch")).to_have_text("派单上门")
            async with page.expect_navigation():
                await row.locator("button.dispatch").click()
            await expect(page.locator(f"#inc-{incident.id} .dispatch-state")).to_have_text("已派单")
            await expect(page.locator(f"#inc-{incident.id} button.arrived")).to_be_visible()
            await expect(page.locator("#live")).to_contain_text("实时", timeout=10_000)
            await _shot(page, tmp_path, "09-dispatched")
            # The technician reports arrival from the CLI (another person, another tool): the row follows live.
            await page.evaluate("window.__sameDocument = true")
            await move_dispatch(consumer.store, incident.id, "on_site", by="li.gong", at=datetime.now(UTC))
            await expect(page.locator(f"#inc-{incident.id} .dispatch-state")).to_have_text("已到场", timeout=15_000)
            await expect(page.locator(f"#inc-{incident.id} .dispatch")).to_contain_text("li.gong")
            assert await page.evaluate("window.__sameDocument === true"), "the row changed without a reload"
            await _shot(page, tmp_path, "10-on-site-live")
        finally:
            await browser.close()
    rows = await consumer.store.fetch(sa.select(audit_log).where(audit_log.c.action == "dispatch.open"))
    assert [(a.actor, a.target) for a in rows] == [("tech.qp", "qp/kiosk-9")]


async def test_the_it_admin_creates_a_user_on_the_users_page(
    server: str, consumer: RunningConsumer, tmp_path: Path
) -> None:
    _need_chromium()
    await add_user(consumer.store, "it.chen", PASSWORD, "it_admin", ("*",), datetime.now(UTC))
    async with async_playwright() as pw:
        browser, page = await _browser_login(pw, server, "it.chen", tmp_path)
        try:
            await page.goto(f"{server}/users")
            await expect(page.locator("#user-tech\\.qp")).to_contain_text("运维技术员")
            await page.fill("#new-username", "zhou.min")
            await page.fill("#new-password-input", "a long password 3")
            await page.select_option("#new-role", "window_management")
            await page.fill("#new-sites", "qp, wz")
            async with page.expect_navigation():
                await page.click("#create-user-submit")
            created = page.locator("#user-zhou\\.min")
            await expect(created).to_contain_text("窗口管理科")
            await expect(created).to_contain_text("qp, wz")
            await _shot(page, tmp_path, "11-user-created")
            async with page.expect_navigation():
                await created.locator("button.reset").click()
            await expect(page.locator("#new-password")).to_contain_text("zhou.min")
            await page.fill("#new-username", "bad name")
            await page.fill("#new-password-input", "a long password 4")
            await page.fill("#new-sites", "qp")
            async with page.expect_navigation():
                await page.click("#create-user-submit")
            await expect(page.locator("#users-error")).to_contain_text("username")
        finally:
            await browser.close()
    users_rows = await consumer.store.fetch(sa.select(audit_log).where(audit_log.c.action.like("user.%")))
    assert sorted((a.action, a.actor) for a in users_rows) == [("user.add", "it.chen"), ("user.passwd", "it.chen")]


async def test_charts_of_consumption_forecast_and_monthly_attendance_render(
    server: str, consumer: RunningConsumer, tmp_path: Path
) -> None:
    _need_chromium()
    await add_user(consumer.store, "it.chen", PASSWORD, "it_admin", ("*",), datetime.now(UTC))
    now = datetime.now(UTC)
    levels = [(now - timedelta(hours=h), pct) for h, pct in ((4, 80.0), (3, 70.0), (2, 60.0), (1, 50.0))]
    await _insert(consumer, events, [
        _event("qp", "kiosk-24h-1", "kiosk.consumable", at, {"consumable": "toner:black", "state": "ok",
               "level_pct": pct}) for at, pct in levels
    ])  # fmt: skip
    forecast = now + timedelta(hours=5)
    await _insert(consumer, consumable_levels, [
        {"key": "qp/kiosk-24h-1", "consumable": "toner:black", "state": "ok", "level_pct": 50.0,
         "updated_at": levels[-1][0], "empty_forecast": forecast}
    ])  # fmt: skip
    # Two staff of two units, 2 working days (Mon 2 and Tue 3 November 2026): one punches on time, one never.
    await import_roster(
        consumer.store,
        [
            StaffMember("qp", "S1", "王芳", "综合窗口", "W1", "A", date(2026, 11, 1)),
            StaffMember("qp", "S2", "李强", "税务", "W2", "A", date(2026, 11, 1)),
        ],
        by="test",
        at=now,
    )
    punches = [
        _event("qp", "att-1", "attendance.punch", datetime(2026, 11, d, h, m, tzinfo=HALL_ZONE),
               {"staff_id": "S1", "method": "face"})
        for d in (2, 3) for h, m in ((8, 50), (17, 40))
    ]  # fmt: skip
    await _insert(consumer, events, punches)
    async with async_playwright() as pw:
        browser, page = await _browser_login(pw, server, "it.chen", tmp_path)
        try:
            await page.goto(f"{server}/consumables")
            chart = page.locator("#level-charts svg.level-chart")
            await expect(chart).to_have_count(1)
            assert await chart.get_attribute("data-points") == "4"
            await expect(chart.locator("polyline.history")).to_have_count(1)
            local = forecast.astimezone(HALL_ZONE)
            await expect(chart.locator("text.forecast-label")).to_have_text(f"预测 {local:%m-%d %H:%M}")
            await expect(chart).to_contain_text("硒鼓")
            await _shot(page, tmp_path, "12-consumable-chart")

            await page.goto(f"{server}/attendance?site=qp&day=2026-11-03")
            bars = page.locator("#month-chart svg.attendance-chart rect.bar")
            got = {
                (
                    await b.get_attribute("data-unit"),
                    await b.get_attribute("data-kind"),
                    await b.get_attribute("data-count"),
                )
                for b in await bars.all()
            }
            assert got == {("综合窗口", "normal", "2"), ("税务", "absent", "2")}
            legend = await page.locator("#month-chart text.legend").all_text_contents()
            assert legend == ["正常", "迟到", "早退", "缺卡", "旷工", "设备故障", "进行中"]
            await _shot(page, tmp_path, "13-attendance-chart")
            await page.goto(f"{server}/attendance?site=qp&day=2026-11-03&lang=en")
            legend = await page.locator("#month-chart text.legend").all_text_contents()
            assert legend[0] == "normal" and legend[-1] == "in progress"
        finally:
            await browser.close()


async def _is(consumer: RunningConsumer, key: str, state: str) -> bool:
    return await presence(consumer.store, key) == state


async def _incident_of(consumer: RunningConsumer, key: str) -> Any:
    rows = await consumer.store.fetch(sa.select(incidents).where(incidents.c.key == key))
    return rows[0] if rows else None


async def test_the_api_docs_render_from_the_installed_swagger_files_after_login(
    server: str, consumer: RunningConsumer, tmp_path: Path
) -> None:
    """/docs draws its operations with Swagger UI served by the API itself: a hall's intranet reaches no CDN
    (nor does this machine), so an operation listed proves the page loaded nothing from outside."""
    _need_chromium()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            outside: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
            await page.goto(f"{server}/docs")
            await expect(page.locator("#username")).to_be_visible()  # the schema maps the fleet: log in first
            await page.close()
            browser_ctx, page = await _browser_login(pw, server, "tech.qp", tmp_path)
            try:
                page.on("request", lambda r: None if r.url.startswith(server) else outside.append(r.url))
                await page.goto(f"{server}/docs")
                await expect(page.locator(".opblock-summary-path", has_text="/api/incidents").first).to_be_visible()
                await _shot(page, tmp_path, "14-api-docs")
            finally:
                await browser_ctx.close()
            assert outside == [], f"/docs fetched from outside the API: {outside}"
        finally:
            await browser.close()
