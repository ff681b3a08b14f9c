"""The dashboard in a real browser (Debian's chromium driven by Playwright) against uvicorn serving the app, with
a real Mosquitto, an in-process consumer and a real agent process: log in, watch a device go 离线 live when
its Will arrives (no reload), acknowledge its incident, restart its application and watch the command's state
change. Screenshots go to the test's tmp dir and to test-artifacts/ (ignored by git)."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import uvicorn
from playwright.async_api import Page, async_playwright, expect

from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.commands import centre_link
from broker.config import ConsumerConfig, StoreConfig
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import commands, incidents
from protocol.settings import MqttConfig
from protocol.transport import AsyncMqtt
from tests.conftest import RunningConsumer
from tests.support.apps import free_port
from tests.support.hall import wait_until
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
            async with page.expect_navigation(url=f"{server}/incidents?command=*"):
                await page.locator(f"#inc-{incident.id} button.restart").click()
            command_id = page.url.rsplit("=", 1)[1]
            state = page.locator(f"#cmd-{command_id} .cmd-state")
            await page.evaluate("window.__sameDocument = true")
            seen = await _states_until(state, "成功", 30)
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


async def _states_until(cell: Any, final: str, within_s: float) -> list[str]:
    """Every text the cell showed, polled every 50 ms, until it shows ``final``."""
    seen: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while loop.time() < deadline:
        text = (await cell.inner_text()).strip()
        if not seen or seen[-1] != text:
            seen.append(text)
        if text == final:
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
