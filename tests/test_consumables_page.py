"""Consumables that tell the truth, end to end (issue 21 item 2): a kiosk with an A4 printer on IPP (the
simulated twin, drivers/ipp/sim.py, printed on over IPP as the kiosk application does) and a thermal receipt
printer on ESC/POS (the simulated USB twin, real driver), a real agent, Mosquitto, the consumer with its SLA
ticks and the store; then the consumables page in zh-CN and en.

Agents, consumer and API share one ScaledClock (as in the demo) so an hour and a half of opening hours
passes in a few real seconds: long enough for the centre's toner forecast (it wants an hour of readings).

The page's rule, checked on every row: a number is shown with "reported by the device" or labelled an
estimate; where the device reported a level the page shows that level, never a bare "-" or nothing.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.roles.kiosk import KioskConfig, SimulatedReceiptConfig
from agent.roles.usage import LogUsageConfig
from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.api.fleet_words import CONSUMABLE_STATES, FLEET_EN, FLEET_ZH
from broker.config import ConsumerConfig, IngestConfig, RulesConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.rules.consumables import consumable_label
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import consumable_levels
from drivers.ipp.client import A4PrinterConfig, print_job
from drivers.ipp.raster import a4_pages
from drivers.ipp.sim import TONER, SimulatedA4Printer, SimulatedIppServer
from runtime.clock import HALL_ZONE, ScaledClock
from runtime.settings import MqttConfig
from tests.support.procs import wait_for

pytestmark = pytest.mark.timeout(120)

SPEED = 1800.0  # half an hour of hall time a real second
KEY = "qp/kiosk-1"
PASSWORD = "correct horse battery"
TICKET = "ticket issued"


def a_past_working_morning() -> datetime:
    """09:05 on a working day at least a week ago, hall time: inside opening hours, never in the future."""
    cal = Sites({})["qp"].site_calendar
    day = datetime.now(HALL_ZONE).date() - timedelta(days=7)
    while not cal.is_working_day(day):
        day -= timedelta(days=1)
    return datetime.combine(day, time(9, 5), HALL_ZONE)


@pytest.fixture
async def centre(mosquitto: LocalMosquitto, store_url: str) -> AsyncIterator[tuple[Consumer, Store, ScaledClock]]:
    clock = ScaledClock(a_past_working_morning(), SPEED)
    store = await Store.open(store_url)
    cfg = ConsumerConfig(
        instance="consumables",
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port, backoff_initial_s=0.1, backoff_max_s=1.0),
        store=StoreConfig(url=store_url),
        ingest=IngestConfig(sweep_s=0.1, republish_s=1.0),
        rules=RulesConfig(tick_s=0.1, plan_every_s=60),  # plans every hall minute
    )
    consumer = Consumer(cfg, store, clock)
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(consumer.ready.wait(), 10)
    try:
        yield consumer, store, clock
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
        await store.close()


def kiosk(mosquitto: LocalMosquitto, tmp_path: Path, a4_url: str, usage_log: Path) -> AgentConfig:
    return AgentConfig(
        site="qp",
        device="kiosk-1",
        role="kiosk",
        heartbeat_s=3600,  # hall seconds: two real seconds
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
        outbox=OutboxConfig(path=tmp_path / "kiosk.db", confirm_timeout_s=120 * SPEED),
        kiosk=KioskConfig(
            receipt=SimulatedReceiptConfig(paper_mm=900, near_end_mm=300),
            a4=A4PrinterConfig(url=a4_url),
            usage=LogUsageConfig(path=usage_log, patterns={"tickets": TICKET}),
            poll_s=0.05,  # real seconds
            debounce_s=60,  # hall seconds
            snapshot_s=900,
        ),
        clock_sync_file=Path("/"),
    )


async def test_levels_from_ipp_and_states_from_escpos_reach_the_page_reported_or_labelled_an_estimate(
    mosquitto: LocalMosquitto, centre: tuple[Consumer, Store, ScaledClock], tmp_path: Path, running: Any
) -> None:
    _, store, clock = centre
    usage_log = tmp_path / "kiosk-app.log"
    usage_log.touch()
    async with SimulatedIppServer() as printers:
        twin = printers.add("qp-kiosk-1", SimulatedA4Printer(toner_pct=40, toner_pages=400))
        agent: Agent = running(Agent(kiosk(mosquitto, tmp_path, printers.url("qp-kiosk-1"), usage_log), clock))
        await wait_for(lambda: agent.link.connected.is_set(), 10, "the kiosk to connect")
        role = agent.kiosk
        assert role is not None and role.receipt_sim is not None and role.cfg.a4 is not None

        # The morning: citizens print A4 pages (over IPP, as the kiosk application does) and take tickets
        # until the receipt roll reads near end, and a few after.
        started = clock.now()
        tickets = after_near_end = 0
        while clock.now() - started < timedelta(hours=1, minutes=40) or after_near_end < 4:
            job = await print_job(role.cfg.a4, a4_pages(2), job_name="证明材料")
            assert job.accepted and job.state == "completed", job
            after_near_end += role.receipt_sim.paper_mm < role.receipt_sim.near_end_mm
            if after_near_end < 4:
                await role.print_receipt(["青浦区政务服务中心", f"取号 A{tickets:03d}", "请留意叫号屏"])
                tickets += 1
                with usage_log.open("a") as f:
                    f.write(f"{clock.now().isoformat()} {TICKET} A{tickets:03d}\n")
            await asyncio.sleep(0.1)
        toner = twin.supply(TONER)
        assert 10 < toner < 40, f"the day ran toner from 40 % to {toner} %"

        await wait_for(lambda: _level(store, "toner:black", toner), 15, f"toner at {toner} % in the store")
        await wait_for(lambda: _level(store, "a4_paper:main", twin.sheets() / 250 * 100), 15, "A4 paper in the store")
        await wait_for(lambda: _forecast(store, "toner:black"), 15, "the toner forecast")
        await wait_for(lambda: _state(store, "thermal_paper", "low"), 15, "thermal paper near end")

        rows = {
            r.consumable: r
            for r in await store.fetch(sa.select(consumable_levels).where(consumable_levels.c.key == KEY))
        }
        assert {"toner:black", "waste", "a4_paper:main", "a4_paper:by-pass-tray", "thermal_paper"} <= rows.keys()
        assert rows["a4_paper:by-pass-tray"].state == "unknown" and rows["a4_paper:by-pass-tray"].level_pct is None
        assert rows["thermal_paper"].level_pct is None  # the ESC/POS sensor says near end, never a number
        assert rows["toner:black"].empty_forecast > clock.now() - timedelta(minutes=5)

        await add_user(store, "it", PASSWORD, "it_admin", ("*",), clock.now())
        centre_cfg = ConsumerConfig(
            instance="page", mqtt=MqttConfig(host="127.0.0.1", port=1), store=StoreConfig(url="sqlite://")
        )
        # The login's limits count hall time: at SPEED the default 30 min idle is one real second, which a loaded
        # machine (parallel test workers) spent between login and page and got a 401.
        api_cfg = ApiConfig(centre=centre_cfg, cookie_secure=False, session_ttl_h=24 * 30, session_idle_min=24 * 60)
        app = create_app(api_cfg, store, None, clock)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hall") as client:
            r = await client.post("/api/login", json={"username": "it", "password": PASSWORD})
            client.headers["Authorization"] = f"Bearer {r.json()['token']}"
            for lang, words in (("zh-CN", FLEET_ZH), ("en", FLEET_EN)):
                page = await client.get(f"/consumables?site=qp&lang={lang}")
                assert page.status_code == 200
                shown = _rows(page.text)
                check_every_row(shown, rows, lang, words)
                check_the_kiosk(shown, rows, lang, words)


def check_every_row(shown: dict[str, dict[str, str]], rows: dict[str, Any], lang: str, words: dict[str, str]) -> None:
    """Every number from the device (said so) or labelled an estimate; a reported level is never "-" or blank."""
    i = 1 if lang == "en" else 0
    for name, row in rows.items():
        cells = shown[consumable_label(name)[i]]
        assert all(text.strip() != "-" for text in cells.values()), (name, cells)
        assert CONSUMABLE_STATES[row.state][i] in cells["state"], (name, cells)
        if row.level_pct is not None:
            assert f"{row.level_pct:.0f}%" in cells["level"] and words["from_device"] in cells["level"], (name, cells)
        else:
            assert words["reported_state"] in cells["state"], (name, cells)
            numbers = re.findall(r"\d+", cells["level"])
            assert not numbers or words["estimate_receipts"].split("{")[0].strip() in cells["level"], (name, cells)
        if row.empty_forecast is not None:
            assert re.search(r"\d\d-\d\d \d\d:\d\d", cells["forecast"]), (name, cells)
            assert words["estimate_forecast"] in cells["forecast"], (name, cells)
        else:
            assert cells["forecast"] == "", (name, cells)


def check_the_kiosk(shown: dict[str, dict[str, str]], rows: dict[str, Any], lang: str, words: dict[str, str]) -> None:
    i = 1 if lang == "en" else 0
    toner = shown[consumable_label("toner:black")[i]]
    assert toner["level"].startswith(f"{rows['toner:black'].level_pct:.0f}%")
    assert words["estimate_forecast"] in toner["forecast"]
    paper = shown[consumable_label("thermal_paper")[i]]
    assert CONSUMABLE_STATES["low"][i] in paper["state"] and words["reported_state"] in paper["state"]
    estimate = words["estimate_receipts"].split("{")[0]
    assert estimate in paper["level"], f"the near-end roll's receipts left, labelled an estimate: {paper}"


def _rows(page: str) -> dict[str, dict[str, str]]:
    """Consumable name -> its state, level and forecast cells as text."""
    out: dict[str, dict[str, str]] = {}
    for body in re.findall(r'<tr class="consumable"[^>]*>(.*?)</tr>', page, re.S):
        tds = re.findall(r"<td([^>]*)>(.*?)</td>", body, re.S)
        cells = {attrs.split('"')[1].removeprefix("c-") if "class" in attrs else str(n): _text(inner)
                 for n, (attrs, inner) in enumerate(tds)}  # fmt: skip
        out[cells["1"]] = cells
    return out


def _text(fragment: str) -> str:
    fragment = re.sub(r"<svg.*?</svg>", "", fragment, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


async def _level(store: Store, consumable: str, pct: float) -> bool:
    row = await _row(store, consumable)
    return row is not None and row.level_pct == round(pct, 1)


async def _forecast(store: Store, consumable: str) -> bool:
    row = await _row(store, consumable)
    return row is not None and row.empty_forecast is not None


async def _state(store: Store, consumable: str, state: str) -> bool:
    row = await _row(store, consumable)
    return row is not None and row.state == state


async def _row(store: Store, consumable: str) -> Any:
    c = consumable_levels.c
    rows = await store.fetch(sa.select(consumable_levels).where(c.key == KEY, c.consumable == consumable))
    return rows[0] if rows else None
