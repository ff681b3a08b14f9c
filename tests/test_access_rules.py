"""The 24-hour area's door and locker rules (broker/access/signals.py), table-driven with the seed lines they keep,
and their place in the SLA report (broker/reports/sla.py) on SQLite and PostgreSQL.

SJ 001:437 puts 智能门禁认证系统(24小时) and SJ 001:441 自助寄取柜 in 表9; SJ 001:451 (note a) says the 24-hour
area opens to the public *through* them. So a controller or board that does not answer is an outage of the device
(critical, downtime in the SLA report, as a kiosk that is offline), and a door or compartment that misbehaves
while the controller answers is a major condition of the same outage incident (it pages and breaches, but the
area can still be used: not downtime, as a kiosk's printer fault is not).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from broker.access.signals import alarm_signals
from broker.config import ConsumerConfig
from broker.reports.sla import build_sla_report
from broker.rules.incidents import on_the_clock
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import devices
from runtime.clock import HALL_ZONE
from tests.support.hall_duties import add_alarm, add_device, envelope, payload_of

SITE = "qp"
SITES = Sites(ConsumerConfig(sites={SITE: {"name": "青浦"}}).sites)
T = datetime(2026, 11, 2, 3, 0, tzinfo=HALL_ZONE)  # a Monday, 03:00: the 24-hour area alone is open


@pytest.mark.parametrize(
    ("event_type", "data", "kind", "severity", "downtime"),
    [
        # SJ 001:437 智能门禁认证系统(24小时), SJ 001:451 the area opens through it: a dead controller shuts it.
        ("door.alarm", {"door": "main", "alarm": "offline"}, "door_offline", "critical", True),
        # SJ 001:437: the door still opens to a card, but it is not kept: each pages the technicians.
        ("door.alarm", {"door": "main", "alarm": "held_open"}, "door_held_open.main", "major", False),
        ("door.alarm", {"door": "main", "alarm": "forced"}, "door_forced.main", "major", False),
        ("door.alarm", {"door": "side", "alarm": "lock_fault"}, "door_lock_fault.side", "major", False),
        # SJ 001:441 自助寄取柜, SJ 001:451: a board that does not answer takes every compartment with it.
        ("locker.alarm", {"bank": "A", "alarm": "offline"}, "locker_offline", "critical", True),
        ("locker.alarm", {"bank": "A", "compartment": 7, "alarm": "offline"}, "locker_offline", "critical", True),
        # SJ 001:441: one compartment's lock: the others still serve.
        ("locker.alarm", {"bank": "A", "compartment": 7, "alarm": "door_fault"}, "locker_door_fault.A.7", "major",
         False),
    ],
)  # fmt: skip
def test_sj_001_437_441_451_door_and_locker_alarms_as_outage_conditions(
    event_type: str, data: dict[str, Any], kind: str, severity: str, downtime: bool
) -> None:
    from broker.reports.sla import OUTAGE_KINDS

    env = envelope(SITE, "dev-1", event_type, T, data)
    (signal,) = alarm_signals(env, payload_of(env), T)
    assert (signal.kind, signal.severity, signal.active) == (kind, severity, True)
    assert on_the_clock(signal.severity), "every alarm of the 24-hour area joins the device's outage incident"
    assert (signal.kind in OUTAGE_KINDS) is downtime
    (cleared,) = alarm_signals(env, payload_of(envelope(SITE, "dev-1", event_type, T, data | {"active": False})), T)
    assert (cleared.kind, cleared.active) == (kind, False), "the clear names the same condition"


def test_a_replayed_alarm_from_long_ago_is_history_not_a_new_condition() -> None:
    env = envelope(SITE, "door-24h", "door.alarm", T, {"door": "main", "alarm": "forced"})
    replayed = env.model_copy(update={"replayed": True})
    assert alarm_signals(replayed, payload_of(replayed), T + timedelta(hours=1)) == []


@pytest.mark.parametrize("when", ["2026-11-01T08:00:00", "1900-01-01T00:00:00+08:00", "2200-01-01T00:00:00+08:00"])
@pytest.mark.parametrize(
    ("event_type", "data", "field"),
    [
        ("locker.bank", {"bank": "A", "board": "ok", "compartments": [{"no": 1, "door": "closed", "occupied": True}]},
         "occupied_since"),
        ("door.alarm", {"door": "main", "alarm": "forced"}, "since"),
        ("locker.alarm", {"bank": "A", "alarm": "offline"}, "since"),
    ],
)  # fmt: skip
def test_a_device_time_without_its_offset_or_out_of_range_is_refused_by_the_contract(
    event_type: str, data: dict[str, Any], field: str, when: str
) -> None:
    """The centre compares these times with its own aware clock: an item's stay in a locker (the overdue job runs
    for every site in one pass, so one naive time stopped every hall's duties), an alarm's start."""
    from pydantic import ValidationError

    from protocol.events import REGISTRY

    if event_type == "locker.bank":
        data = data | {"compartments": [data["compartments"][0] | {field: when}]}
    else:
        data = data | {field: when}
    with pytest.raises(ValidationError, match="offset"):
        REGISTRY[event_type].model.model_validate(data)
    aware = when if when.endswith("+08:00") and when.startswith("2026") else "2026-11-01T08:00:00+08:00"
    REGISTRY[event_type].model.model_validate(json.loads(json.dumps(data).replace(when, aware)))


@pytest.fixture
async def store(store_url: str) -> Any:
    s = await Store.open(store_url)
    try:
        yield s
    finally:
        await s.close()


async def test_a_dead_door_controller_or_locker_board_is_downtime_in_the_sla_report(store: Store) -> None:
    """GIVEN the 24-hour area's door controller silent 03:00-04:00, its locker board 03:00-03:30 and a second door
    forced 03:00-03:10 (all registered 24-hour devices) WHEN the month's SLA report is built THEN the controller
    and the board were down those hours (wall-clock: the area is open at night) and the forced door was not: each
    is one outage incident."""
    for device, role in (("door-24h", "door"), ("locker-a", "locker"), ("door-b", "door")):
        await add_device(store, SITE, device, role, T - timedelta(days=1))
    async with store.engine.begin() as conn:
        await conn.execute(sa.update(devices).values(hours24=True))
    plays = [
        ("door-24h", {"door": "main", "alarm": "offline"}, 60),
        ("locker-a", {"bank": "A", "alarm": "offline"}, 30),
        ("door-b", {"door": "main", "alarm": "forced"}, 10),
    ]
    for device, alarm, minutes in plays:
        since = T.isoformat()
        await add_alarm(store, SITES, SITE, device, T, alarm | {"since": since})
        await add_alarm(store, SITES, SITE, device, T + timedelta(minutes=minutes), alarm | {"active": False})
    report = await build_sla_report(store, SITES, SITE, "2026-11", now=T + timedelta(days=1))
    rows = {r.device: r for r in report.devices}
    assert {d: (r.down_s, r.incidents) for d, r in rows.items()} == {
        "door-24h": (3600.0, 1),
        "locker-a": (1800.0, 1),
        "door-b": (0.0, 1),
    }
    assert rows["door-24h"].availability_pct is not None and rows["door-24h"].availability_pct < 100
    assert rows["door-b"].availability_pct == 100
