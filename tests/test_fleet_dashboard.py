"""The dashboard over the fleet simulator's own data (issue 21's tests): 50 agents of every role (the hall's doors,
lockers, patrol handhelds, queue devices and heartbeat-only agents too) play a short accelerated morning against
Mosquitto and the consumer, a kiosk's receipt printer jams, a pad loses power, the A4 kiosks print on the simulated
IPP printer; then Debian's chromium reads the overview, a filter, the jammed kiosk's page and the consumables page
in zh-CN and en. What the seeded 10,000-device tests (test_overview*.py) cannot show: that what the agents really
send reaches the pages in words, with no raw value on the Chinese page. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import uvicorn
from playwright.async_api import Page, async_playwright, expect

from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.fleet_words import FLEET_ZH
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import consumable_levels, incidents
from hallfleet.fleet.scenario import load_scenario
from hallfleet.fleet.sim import Fleet
from runtime.clock import SystemClock
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.apps import free_port
from tests.support.hall import wait_until
from tests.test_fleet import SHORT_DAY
from tests.test_i18n_pages import RAW, visible_tokens
from tests.test_overview import PASSWORD, api_config
from tests.test_overview_browser import ARTIFACTS, CHROMIUM, FLAGS

DEVICES = 50
# The test_fleet morning, with heartbeat-only agents (role "none") among the fleet as well.
# The rest of the dashboard, over what the same morning's agents sent (doors, lockers, patrols, queues, punches).
HALL_PAGES = ("/incidents", "/access?site=qingpu", "/duties?site=qingpu", "/queue?site=qingpu", "/ratings",
              "/attendance?site=qingpu", "/access?site=wanzhou", "/queue?site=wanzhou")  # fmt: skip
MORNING = SHORT_DAY.replace("patrol = 0.04\n", "patrol = 0.04\nnone = 0.04\n")


@pytest.fixture
async def played(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path
) -> AsyncIterator[tuple[Fleet, str]]:
    """The fleet's morning played until the jam is an incident and the A4 kiosks' toner is in the store; the
    key of the jammed kiosk."""
    path = tmp_path / "morning.toml"
    path.write_text(MORNING)
    mqtt = MqttConfig(host=mosquitto.host, port=mosquitto.port, keepalive_s=10)
    fleet = Fleet(load_scenario(path), DEVICES, mqtt, tmp_path / "fleet", speed=120)
    jammed = fleet.fault_targets[0][0]
    store = consumer.store
    try:
        await fleet.start()
        fleet.play()

        async def jam_and_toner() -> bool:
            jam = await store.scalar(
                sa.select(sa.func.count())
                .select_from(incidents)
                .where(incidents.c.device == jammed.name, incidents.c.kind.like("fault.receipt_printer.%"))
            )
            toner = await store.scalar(
                sa.select(sa.func.count())
                .select_from(consumable_levels)
                .where(consumable_levels.c.consumable == "toner:black")
            )
            return bool(jam) and bool(toner)

        await wait_until(jam_and_toner, 60, "the jam's incident and the A4 kiosks' toner")
        yield fleet, jammed.key
    finally:
        await fleet.stop()


@pytest.fixture
async def dashboard(consumer: RunningConsumer, store_url: str) -> AsyncIterator[str]:
    await add_user(consumer.store, "it.chen", PASSWORD, "it_admin", ("*",), SystemClock().now())
    app = create_app(api_config(store_url), consumer.store, None, SystemClock())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        return bool(server.started)

    await wait_until(started, 10, "uvicorn to listen")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


async def _in_chinese(page: Page, what: str) -> None:
    html = await page.content()
    raw = sorted(RAW & visible_tokens(html))
    if raw:  # the page as it was, to read beside the screenshots
        await asyncio.to_thread(_keep, f"fleet-failed-{what.replace(' ', '-')}.html", html)
    assert not raw, f"{what}: raw values on the Chinese page: {raw}"
    assert "⟦missing word" not in html


def _keep(name: str, text: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / name).write_text(text)


async def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"fleet-{name}.png"), full_page=True)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_the_fleet_simulators_morning_reads_in_words_on_every_page(
    played: tuple[Fleet, str], dashboard: str
) -> None:
    assert await asyncio.to_thread(CHROMIUM.exists), f"{CHROMIUM} is missing: run scripts/setup"  # never a skip
    fleet, jammed = played
    roles = {m.role for m in fleet.members}
    assert {"kiosk", "attendance", "rating", "queue", "door", "locker", "patrol", "none"} <= roles
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
            await page.goto(f"{dashboard}/login?next=/")
            await page.fill("#username", "it.chen")
            await page.fill("#password", PASSWORD)
            await page.click("#login-submit")
            await page.wait_for_url(f"{dashboard}/")
            started = time.perf_counter()
            await page.goto(f"{dashboard}/", wait_until="load")
            print(f"\noverview of the simulator's {DEVICES} devices: {(time.perf_counter() - started) * 1000:.0f} ms")
            await expect(page.locator("#device-pager .page-info")).to_contain_text(f"共 {DEVICES} 条")
            await expect(page.locator(f'#problems tr[data-device="{jammed.split("/")[1]}"]').first).to_be_visible()
            await _in_chinese(page, "overview")
            await _shot(page, "01-overview")

            for kind in ("door", "none"):
                await page.goto(f"{dashboard}/?kind={kind}")
                rows = page.locator("#devices tbody tr")
                want = sum(m.role == kind for m in fleet.members)
                await expect(rows).to_have_count(want)
                await expect(rows.first.locator("td").nth(1)).to_have_text(FLEET_ZH[f"role.{kind}"])
                await _in_chinese(page, f"overview of kind {kind}")

            await page.goto(f"{dashboard}/devices/{jammed}")
            await expect(page.locator("#health-charts svg.health-chart").first).to_be_visible()
            await expect(page.locator("body")).to_contain_text("小票打印机")
            await _in_chinese(page, "the jammed kiosk's page")
            await _shot(page, "02-jammed-kiosk")

            await page.goto(f"{dashboard}/consumables")
            await expect(page.locator("body")).to_contain_text(FLEET_ZH["from_device"])
            await _in_chinese(page, "consumables")
            await _shot(page, "03-consumables")

            for path in HALL_PAGES:
                answer = await page.goto(f"{dashboard}{path}")
                assert answer is not None and answer.status == 200, path
                await _in_chinese(page, path)

            await page.goto(f"{dashboard}/?lang=en")
            await expect(page.locator("#device-pager .page-info")).to_contain_text(str(DEVICES))
            await page.goto(f"{dashboard}/devices/{jammed}?lang=en")
            await expect(page.locator("body")).to_contain_text("receipt printer")
            await _shot(page, "04-jammed-kiosk-en")
        finally:
            await browser.close()
