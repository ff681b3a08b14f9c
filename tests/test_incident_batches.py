"""The incident rules on a whole batch: what they decide is what one signal at a time decides, and what it costs
grows with the batch's state changes, not its events (issue 19: rules on cost at most 20 % of throughput)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from broker.rules.incidents import IncidentRules, Signal
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import incident_conditions, incident_timeline, incidents
from runtime.clock import HALL_ZONE
from tests.support.statements import Statements

SITE = "qp"
T0 = datetime(2026, 11, 24, 10, 0, tzinfo=HALL_ZONE)
SITES = Sites({SITE: SiteConfig()})


def kiosk_state(device: str, state: str, at: datetime) -> list[Signal]:
    """The two signals a kiosk.state event carries (broker/rules/incidents.py signals_from_event)."""
    summary = f"kiosk.state={state}"
    return [
        Signal(SITE, device, "kiosk_down", state == "down", "critical", at, at, summary),
        Signal(SITE, device, "kiosk_degraded", state == "degraded", "major", at, at, summary),
    ]


def paper(device: str, active: bool, at: datetime) -> list[Signal]:
    return [Signal(SITE, device, "fault.printer.paper_jam", active, "minor", at, at, "paper_jam")]


# Each step: a signal maker and its offset in seconds from T0. Out of order: a "down" sent before the "up" that
# cleared it arrives after it, and must change nothing.
HISTORY: list[tuple[Any, str | bool, int]] = [
    (kiosk_state, "degraded", 2),
    (paper, True, 3),
    (kiosk_state, "down", 4),
    (kiosk_state, "up", 6),
    (kiosk_state, "down", 5),
    (kiosk_state, "degraded", 7),
    (paper, False, 8),
    (kiosk_state, "down", 9),
    (paper, True, 10),
]


def signals_of(device: str, steps: list[tuple[Any, str | bool, int]]) -> list[list[Signal]]:
    return [make(device, arg, T0 + timedelta(seconds=s)) for make, arg, s in steps]


async def outcome(store: Store, device: str) -> dict[str, Any]:
    """What the rules left for one device, without its name or the ids the store gave."""
    c, k, t = incidents.c, incident_conditions.c, incident_timeline.c
    key = f"{SITE}/{device}"
    rows = await store.fetch(sa.select(incidents).where(c.key == key).order_by(c.detected_at, c.kind))
    found: dict[str, Any] = {}
    for r in rows:
        conds = await store.fetch(sa.select(incident_conditions).where(k.incident_id == r.id).order_by(k.id))
        notes = await store.fetch(sa.select(t.entry, t.text).where(t.incident_id == r.id).order_by(t.id))
        found[r.open_key.split("|")[1] if r.open_key else r.kind] = {
            "incident": (r.kind, r.severity, r.state, r.flaps, r.detected_at, r.cleared_at, r.last_signal_at),
            "next": (r.step, r.next_step_at),
            "conditions": [(x.kind, x.open_key is not None, x.cleared_at, x.last_signal_at) for x in conds],
            "timeline": [(n.entry, n.text) for n in notes],
        }
    return found


async def apply(store: Store, rules: IncidentRules, signals: list[Signal]) -> None:
    async with store.engine.begin() as conn:
        await rules.apply(conn, signals)


async def test_a_devices_signals_in_one_batch_decide_what_they_decide_one_at_a_time(store_url: str) -> None:
    """GIVEN two kiosks, each with an outage open from an earlier batch
    WHEN one receives a history of state changes, faults and an out-of-order event in one batch, the other the
    same history one signal per batch
    THEN both end with the same incidents, conditions, clocks and timelines (the batch reads a device again once
    it has acted on it, and sends its writes before)."""
    store = await Store.open(store_url)
    try:
        rules = IncidentRules(SITES, store.roles)
        for device in ("batched", "single"):
            await apply(store, rules, kiosk_state(device, "down", T0))
        await apply(store, rules, [s for event in signals_of("batched", HISTORY) for s in event])
        for event in signals_of("single", HISTORY):
            for signal in event:
                await apply(store, rules, [signal])

        batched, single = await outcome(store, "batched"), await outcome(store, "single")
        assert batched == single
        assert set(batched) == {"outage", "fault.printer.paper_jam"}
        assert batched["outage"]["incident"][2] == "open" and batched["outage"]["incident"][3] == 2, "two flaps"
        # As the rules applied this history one signal at a time before they read and wrote per batch.
        assert [text for _, text in batched["outage"]["timeline"]] == [
            "检测到停止服务: kiosk.state=down",
            "已恢复, 待确认: kiosk.state=degraded",
            "再次出现: 部分功能不可用: kiosk.state=degraded",
            "同一故障的又一表现: 停止服务: kiosk.state=down",
            "部分功能不可用已恢复, 仍有: 停止服务",
            "已恢复, 待确认: kiosk.state=up",
            "再次出现: 部分功能不可用: kiosk.state=degraded",
            "同一故障的又一表现: 停止服务: kiosk.state=down",
            "部分功能不可用已恢复, 仍有: 停止服务",
        ]
        assert [text for _, text in batched["fault.printer.paper_jam"]["timeline"]] == [
            "检测到故障 printer.paper_jam: paper_jam",
            "已恢复, 待确认: paper_jam",
            "再次出现: 故障 printer.paper_jam: paper_jam",
        ]
    finally:
        await store.close()


async def statements_for(store: Store, rules: IncidentRules, signals: list[Signal]) -> int:
    counted = Statements(store)
    await apply(store, rules, signals)
    sa.event.remove(store.engine.sync_engine, "before_cursor_execute", counted._one)
    return counted.count


@pytest.mark.parametrize("kiosks", [20, 400])
async def test_a_batch_costs_statements_per_kind_of_change_not_per_event(store_url: str, kiosks: int) -> None:
    """GIVEN a fleet of kiosks
    WHEN a batch says every one is fine, then one says they all went down, then one says they are all up again
    THEN the healthy batch only reads which conditions are active, the outage and the recovery each take the
    same few statements for 20 kiosks as for 400, and each kiosk still gets its incident, condition and
    timeline entries."""
    store = await Store.open(store_url)
    try:
        rules = IncidentRules(SITES, store.roles)
        devices = [f"k{n:04d}" for n in range(kiosks)]

        def every(state: str, at: datetime) -> list[Signal]:
            return [s for d in devices for s in kiosk_state(d, state, at)]

        assert await statements_for(store, rules, every("up", T0)) == 1
        down = await statements_for(store, rules, every("down", T0 + timedelta(seconds=1)))
        up = await statements_for(store, rules, every("up", T0 + timedelta(seconds=2)))

        # One read per kind of fact, one write per kind of row; the clears too go in one UPDATE ... RETURNING
        # (which says, for each, whether a newer signal got there first).
        assert down <= 7, down  # one at a time: 12 a kiosk (241 for 20)
        assert up <= 7, up  # one UPDATE per cleared condition before
        c = incidents.c
        assert await store.scalar(sa.select(sa.func.count()).where(c.state == "recovering")) == kiosks
        t = incident_timeline.c
        assert await store.scalar(sa.select(sa.func.count()).where(t.text.like("检测到停止服务%"))) == kiosks
        assert await store.scalar(sa.select(sa.func.count()).where(t.text.like("已恢复, 待确认%"))) == kiosks
    finally:
        await store.close()
