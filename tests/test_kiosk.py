"""The kiosk role end to end: the real ESC/POS driver over the simulated USB printer (a pyusb
backend), the real ippeveprinter over IPP, a real agent, Mosquitto, the consumer and the store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.roles.kiosk import KioskConfig, KioskRole, Reading, SimulatedReceiptConfig
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import events
from drivers.ipp.client import A4PrinterConfig
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.apps import free_port
from tests.support.ippeveprinter import IppEvePrinter
from tests.support.procs import wait_for


@pytest.fixture
def printer(tmp_path: Path) -> Iterator[IppEvePrinter]:
    p = IppEvePrinter(tmp_path / "a4").start()
    try:
        yield p
    finally:
        p.stop()


def kiosk_agent(mosquitto: LocalMosquitto, tmp_path: Path, kiosk: KioskConfig) -> Agent:
    return Agent(
        AgentConfig(
            site="qp",
            device="kiosk-1",
            role="kiosk",
            heartbeat_s=60,
            mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
            outbox=OutboxConfig(path=tmp_path / "kiosk.db"),
            kiosk=kiosk,
            clock_sync_file=Path("/"),
        )
    )


async def stored(consumer: RunningConsumer, event_type: str) -> list[dict[str, Any]]:
    rows = await consumer.store.fetch(
        sa.select(events.c.data).where(events.c.type == event_type).order_by(events.c.seq)
    )
    return [json.loads(r.data) for r in rows]


async def test_thermal_paper_runs_out_over_a_day_and_the_centre_sees_low_empty_and_the_lost_function(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    kiosk = KioskConfig(receipt=SimulatedReceiptConfig(paper_mm=900, near_end_mm=300), poll_s=0.05, debounce_s=0.2)
    agent: Agent = running(kiosk_agent(mosquitto, tmp_path, kiosk))
    await wait_for(lambda: agent.link.connected.is_set(), 10, "the agent to connect")
    role = agent.kiosk
    assert role is not None and role.receipt_sim is not None
    for i in range(40):  # a day of tickets, accelerated: each receipt uses paper on the simulated roll
        await role.print_receipt([f"青浦区政务服务中心  取号 A{i:03d}", "请留意叫号屏"])
        await asyncio.sleep(0.02)
        if role.receipt_sim.lines() and (await _paper(consumer))[-1:] == ["empty"]:
            break

    await wait_for(lambda: _paper_seen(consumer, "empty"), 15, "paper empty in the store")
    states = await _paper(consumer)
    assert states[0] == "ok" and "low" in states and states.index("low") < states.index("empty")
    await wait_for(lambda: _state_seen(consumer, "degraded", ["ticket"]), 10, "kiosk degraded, ticket lost")
    faults = await stored(consumer, "kiosk.fault")
    assert any(f["component"] == "receipt_printer" and f["code"] == "paper_end" and f["active"] for f in faults)

    role.receipt_sim.refill()
    await wait_for(lambda: _state_seen(consumer, "up", []), 10, "kiosk up again after the refill")
    # The clearing may trail by one debounce window, but it reaches the centre too.
    await wait_for(lambda: _fault_seen(consumer, "receipt_printer", "paper_end", False), 5, "the fault cleared")


async def test_usb_unplug_is_a_fault_and_replug_clears_it_without_restarting_anything(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    kiosk = KioskConfig(receipt=SimulatedReceiptConfig(), poll_s=0.05, debounce_s=0.1)
    agent: Agent = running(kiosk_agent(mosquitto, tmp_path, kiosk))
    await wait_for(lambda: _state_seen(consumer, "up", []), 15, "the kiosk up")
    assert agent.kiosk is not None and agent.kiosk.receipt_sim is not None
    agent.kiosk.receipt_sim.unplug()
    await wait_for(lambda: _fault_seen(consumer, "receipt_printer", "unreachable", True), 10, "unplug fault")
    agent.kiosk.receipt_sim.plug()
    await wait_for(lambda: _fault_seen(consumer, "receipt_printer", "unreachable", False), 10, "replug clears")
    paper = await _paper(consumer)
    assert "empty" not in paper, "an unplugged printer is unknown, never out of paper"


async def test_toner_low_set_on_the_real_ipp_printer_reaches_the_store(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any, printer: IppEvePrinter
) -> None:
    kiosk = KioskConfig(a4=A4PrinterConfig(url=printer.url), poll_s=0.1, debounce_s=0.1)
    running(kiosk_agent(mosquitto, tmp_path, kiosk))
    await wait_for(lambda: _state_seen(consumer, "up", []), 15, "the kiosk up")
    printer.set_supply("Black Toner", 5)
    await wait_for(lambda: _consumable_seen(consumer, "toner", "low"), 15, "toner low in the store")
    row = [c for c in await stored(consumer, "kiosk.consumable") if c["consumable"] == "toner:black"][-1]
    assert row["level_pct"] == 5 and row["raw"]["level"] == 5
    printer.set_tray(sheets=0)
    await wait_for(lambda: _fault_seen(consumer, "a4_printer", "media-empty", True), 15, "A4 paper out")
    await wait_for(lambda: _state_seen(consumer, "degraded", ["print"]), 10, "printing lost")


async def test_an_unreachable_ipp_printer_is_a_fault_never_a_crash(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    kiosk = KioskConfig(a4=A4PrinterConfig(url=f"ipp://127.0.0.1:{free_port()}/ipp/print", timeout_s=0.5), poll_s=0.1)
    agent: Agent = running(kiosk_agent(mosquitto, tmp_path, kiosk))
    await wait_for(lambda: _fault_seen(consumer, "a4_printer", "unreachable", True), 15, "unreachable fault")
    await wait_for(lambda: _state_seen(consumer, "degraded", ["print"]), 10, "printing lost")
    await asyncio.sleep(0.5)
    assert agent.link.connected.is_set(), "the agent keeps running"


def test_kiosk_state_follows_the_functions_lost() -> None:
    role = KioskRole.__new__(KioskRole)
    role.cfg = KioskConfig()
    up = role.state_of(Reading(app="up"))
    assert (up.state, up.functions_affected) == ("up", [])
    paper = role.state_of(Reading(app="up", faults={("receipt_printer", "paper_end"): ""}))
    assert (paper.state, paper.functions_affected) == ("degraded", ["ticket"])
    app_down = role.state_of(Reading(app="down", faults={("app", "unhealthy"): ""}))
    assert (app_down.state, sorted(app_down.functions_affected)) == ("down", ["print", "query", "ticket"])


async def _paper(consumer: RunningConsumer) -> list[str]:
    return [c["state"] for c in await stored(consumer, "kiosk.consumable") if c["consumable"] == "thermal_paper"]


async def _paper_seen(consumer: RunningConsumer, state: str) -> bool:
    return state in await _paper(consumer)


async def _state_seen(consumer: RunningConsumer, state: str, lost: list[str]) -> bool:
    rows = await stored(consumer, "kiosk.state")
    return bool(rows) and rows[-1]["state"] == state and rows[-1]["functions_affected"] == lost


async def _fault_seen(consumer: RunningConsumer, component: str, code: str, active: bool) -> bool:
    return any(
        f["component"] == component and f["code"] == code and f["active"] == active
        for f in await stored(consumer, "kiosk.fault")
    )


async def _consumable_seen(consumer: RunningConsumer, prefix: str, state: str) -> bool:
    return any(
        c["consumable"].startswith(prefix) and c["state"] == state for c in await stored(consumer, "kiosk.consumable")
    )
