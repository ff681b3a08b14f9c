"""The fleet overview in a real browser (Debian's chromium driven by Playwright) against uvicorn serving the app over
the seeded 10,000-device fleet (tests/support/fleet_seed.py): the page loads with its tiles, problems and one
page of devices (the time to load is printed), the filters and the search narrow it, the next page follows, and
the device page shows its health history. The load must take at most a second (best of three) and the three most
urgent problems must be on the first screen. Screenshots go to test-artifacts/ (ignored by git)."""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.async_api import Page, ViewportSize, async_playwright, expect

from broker.api.app import create_app
from broker.api.auth import add_user
from broker.store.db import Store
from tests.support.apps import free_port
from tests.support.fleet_seed import FOCUS, seed_fleet
from tests.support.hall import ManualClock, wait_until
from tests.test_overview import NOW, PASSWORD, api_config

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
LOAD_TARGET_MS = 1000  # issue 21: the overview at 10,000 devices renders in <= 1 s on this machine
# A desktop and a common laptop.
SCREENS: tuple[ViewportSize, ...] = ({"width": 1400, "height": 900}, {"width": 1366, "height": 768})


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[str]:
    store = await Store.open(sqlite_url)
    await seed_fleet(store, NOW)
    await add_user(store, "it.chen", PASSWORD, "it_admin", ("*",), NOW)
    app = create_app(api_config(sqlite_url), store, None, ManualClock(NOW))
    port = free_port()
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(uv.serve())

    async def started() -> bool:
        return bool(uv.started)

    await wait_until(started, 10, "uvicorn to listen")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 15)
        await store.close()


async def _shot(page: Page, tmp_path: Path, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=True)
    shutil.copy(tmp_path / f"{name}.png", ARTIFACTS / f"overview-{name}.png")


async def _best_load_ms(page: Page, url: str) -> float:
    took = []
    for _ in range(3):
        started = time.perf_counter()
        await page.goto(url, wait_until="load")
        took.append((time.perf_counter() - started) * 1000)
    return min(took)


async def _three_most_urgent_on_the_first_screen(page: Page, tmp_path: Path) -> None:
    """The three most urgent problems are read without scrolling, on a desktop's screen and a laptop's."""
    ARTIFACTS.mkdir(exist_ok=True)
    for screen in SCREENS:
        await page.set_viewport_size(screen)
        await page.evaluate("window.scrollTo(0, 0)")
        rows = page.locator("#problems tbody tr")
        for n in range(3):
            box = await rows.nth(n).bounding_box()
            assert box is not None and box["y"] + box["height"] <= screen["height"], (screen, n, box)
        await page.screenshot(path=str(tmp_path / "first-screen.png"))
        shutil.copy(tmp_path / "first-screen.png", ARTIFACTS / f"overview-00-first-screen-{screen['height']}.png")
    await page.set_viewport_size(SCREENS[0])


async def test_overview_of_10000_devices_filters_searches_and_opens_a_device(server: str, tmp_path: Path) -> None:
    assert await asyncio.to_thread(CHROMIUM.exists), f"{CHROMIUM} is missing: run scripts/setup"  # never a skip
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 900}, locale="zh-CN")
            await page.goto(f"{server}/login?next=/")
            await page.fill("#username", "it.chen")
            await page.fill("#password", PASSWORD)
            await page.click("#login-submit")
            await page.wait_for_url(f"{server}/")
            took_ms = []
            for _ in range(3):
                started = time.perf_counter()
                await page.goto(f"{server}/", wait_until="load")
                took_ms.append((time.perf_counter() - started) * 1000)
            print(f"\noverview of 10,000 devices loaded in the browser in {', '.join(f'{t:.0f}' for t in took_ms)} ms")
            # The target, on the best of three loads: one slow load is the shared machine, not the page.
            assert min(took_ms) <= LOAD_TARGET_MS, f"the overview took {min(took_ms):.0f} ms at best"
            await _three_most_urgent_on_the_first_screen(page, tmp_path)
            await expect(page.locator("#hall-tiles a.tile")).to_have_count(20)
            await expect(page.locator("#devices tbody tr")).to_have_count(50)
            first = page.locator("#problems tbody tr").first
            await expect(first).to_have_class("problem problem-incident breached-row")
            await expect(page.locator("#device-pager .page-info")).to_contain_text("共 10000 条")
            await _shot(page, tmp_path, "01-home")

            await page.select_option("select[name=hall]", "wanzhou")
            await page.select_option("select[name=kind]", "kiosk")
            await page.select_option("select[name=state]", "online")
            async with page.expect_navigation():
                await page.click("#filter-submit")
            await expect(page.locator("#hall-tiles a.tile")).to_have_count(1)
            rows = page.locator("#devices tbody tr")
            assert await rows.count() == 50
            for state in await rows.evaluate_all("rs => rs.map(r => r.dataset.presence)"):
                assert state == "online"
            await expect(rows.first.locator("td").nth(1)).to_have_text("24小时自助终端")
            await _shot(page, tmp_path, "02-filtered")

            async with page.expect_navigation():
                await page.click("#device-pager a[rel=next]")
            await expect(page.locator("#device-pager .page-info")).to_contain_text("第 2 /")
            assert "hall=wanzhou" in page.url and "kind=kiosk" in page.url, "the filters stay on the next page"

            await page.goto(f"{server}/")
            await page.fill("input[name=q]", "kiosk-0001")
            async with page.expect_navigation():
                await page.press("input[name=q]", "Enter")
            await expect(page.locator("#devices tbody tr")).to_have_count(20)
            await _shot(page, tmp_path, "03-search")

            async with page.expect_navigation():
                await page.click(f'#devices a[href="/devices/{FOCUS}"]')
            device_ms = await _best_load_ms(page, f"{server}/devices/{FOCUS}")
            print(f"the device page with a year of its health reports: best {device_ms:.0f} ms")
            assert device_ms <= LOAD_TARGET_MS, f"the device page took {device_ms:.0f} ms at best"
            charts = page.locator("#health-charts svg.health-chart")
            await expect(charts).to_have_count(5)
            assert int(await charts.first.get_attribute("data-points") or 0) >= 140
            await expect(page.locator("#device-commands")).to_contain_text("发起")
            await expect(page.locator("#consumables")).to_contain_text("估算")
            await _shot(page, tmp_path, "04-device")
            await page.goto(f"{server}/devices/{FOCUS}?lang=en")
            await expect(page.locator("#health-charts")).to_contain_text("CPU temperature")
            await _shot(page, tmp_path, "05-device-en")
        finally:
            await browser.close()


async def _first_round(client: httpx.AsyncClient, url: str, headers: dict[str, str]) -> list[str]:
    """The event names of the stream's first round: lines until it falls quiet for a poll interval and more."""
    names: list[str] = []
    async with client.stream("GET", url, headers=headers) as r:
        assert r.status_code == 200, url
        lines = r.aiter_lines()
        while True:
            try:
                line = await asyncio.wait_for(anext(lines), 2.5 if names else 30)
            except (TimeoutError, StopAsyncIteration):
                return names
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))


@pytest.mark.parametrize("path", ["/incidents", "/consumables"])
async def test_a_page_without_a_device_table_is_streamed_no_device_rows(server: str, path: str) -> None:
    """Each open tab's live stream: the incidents page at 10,000 devices is sent its incidents, not every device's
    row (the stream asks for the devices the page shows, and this page shows none)."""
    async with httpx.AsyncClient(base_url=server, timeout=60) as client:
        r = await client.post("/api/login", json={"username": "it.chen", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {r.json()['token']}"}
        html = (await client.get(path, headers=headers)).text
        query = re.search(r'data-stream-query="([^"]*)"', html)
        url = "/events/stream" + (query.group(1) if query else "")
        names = await _first_round(client, url, headers)
    assert "device" not in names, f"{names.count('device')} device rows sent to {path}"
    if path == "/incidents":
        assert "incident" in names, "the page's own rows still come"
