"""The 24-hour area's door controller and locker bank end to end: the real RS-485 drivers over their twins on pty
pairs, real agents, Mosquitto, the consumer and the store; their alarms join the device's one outage incident."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.roles.door import DoorConfig, SimulatedDoorControllerConfig
from agent.roles.locker import LockerConfig, SimulatedLockerBoardConfig
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import events, incident_conditions, incidents
from protocol.hall_events import LockerParcel
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.hall import wait_until


def agent_for(mosquitto: LocalMosquitto, tmp_path: Path, device: str, **role: Any) -> Agent:
    (name,) = role
    return Agent(
        AgentConfig(
            site="qp",
            device=device,
            role=name,
            heartbeat_s=60,
            mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
            outbox=OutboxConfig(path=tmp_path / f"{device}.db"),
            clock_sync_file=Path("/"),
            **role,
        )
    )


async def stored(consumer: RunningConsumer, event_type: str) -> list[dict[str, Any]]:
    rows = await consumer.store.fetch(
        sa.select(events.c.data).where(events.c.type == event_type).order_by(events.c.seq)
    )
    return [json.loads(r.data) for r in rows]


async def test_a_forced_door_then_a_dead_controller_are_one_outage_of_the_door_device(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    """GIVEN a door controller twin behind the real driver WHEN the door is forced, then the controller loses power
    THEN the centre has door.alarm events and one open outage incident whose conditions are both alarms."""
    door = DoorConfig(controller=SimulatedDoorControllerConfig(grant_s=0.3), poll_s=0.05, held_open_s=0.5)
    agent = running(agent_for(mosquitto, tmp_path, "door-24h", door=door))
    await wait_until(lambda: stored(consumer, "door.state"), what="the door's first state")
    sim = agent.door.sim
    assert sim is not None
    sim.grant()  # a card: the lock releases, the door opens and closes: no alarm
    sim.open_door()
    await asyncio.sleep(0.15)
    sim.shut_door()
    await asyncio.sleep(0.4)
    sim.force()  # opened while locked
    alarms = await wait_until(lambda: stored(consumer, "door.alarm"), what="the forced alarm")
    assert [(a["alarm"], a["active"]) for a in alarms][:1] == [("forced", True)]
    await wait_until(lambda: _open(consumer), what="the outage incident")
    sim.mute = True  # the controller loses power
    await wait_until(lambda: _conditions(consumer, 2), what="offline joining the outage")
    rows = await consumer.store.fetch(sa.select(incidents))
    assert len(rows) == 1, "one outage, one incident"
    kinds = {r.kind for r in await consumer.store.fetch(sa.select(incident_conditions))}
    assert {"door_forced.main", "door_offline"} <= kinds
    assert rows[0].severity == "critical" and rows[0].kind == "door_offline"  # the graver condition names it


async def test_a_door_left_open_past_its_limit_and_a_lock_fault_are_alarms_that_end_when_they_are_over(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    """GIVEN a door controller twin WHEN a card opens the door and it stays open past held_open_s, then shuts, and
    its lock stops taking its state, then takes it again THEN the centre has held_open and lock_fault begin and end
    (each carrying when it began), as conditions of the door's outage incident, both cleared at the end."""
    door = DoorConfig(controller=SimulatedDoorControllerConfig(grant_s=5), poll_s=0.05, held_open_s=0.5)
    agent = running(agent_for(mosquitto, tmp_path, "door-24h", door=door))
    await wait_until(lambda: stored(consumer, "door.state"), what="the door's first state")
    sim = agent.door.sim
    assert sim is not None
    sim.grant()
    sim.open_door()  # granted: not forced, but left open
    await wait_until(lambda: _alarms(consumer, ("held_open", True)), what="held open")
    sim.shut_door()
    await wait_until(lambda: _alarms(consumer, ("held_open", False)), what="held open over")
    sim.set_lock_fault(True)
    await wait_until(lambda: _alarms(consumer, ("lock_fault", True)), what="the lock fault")
    sim.set_lock_fault(False)
    alarms = await wait_until(lambda: _alarms(consumer, ("lock_fault", False)), what="the lock fault over")
    assert [(a["alarm"], a["active"]) for a in alarms] == [
        ("held_open", True),
        ("held_open", False),
        ("lock_fault", True),
        ("lock_fault", False),
    ], "no forced alarm for a granted opening"
    assert all(a["since"] for a in alarms)
    k = incident_conditions.c
    await wait_until(lambda: _all_cleared(consumer, 2), what="both conditions cleared")
    kinds = {r.kind for r in await consumer.store.fetch(sa.select(k.kind))}
    assert kinds == {"door_held_open.main", "door_lock_fault.main"}


async def _alarms(consumer: RunningConsumer, last: tuple[str, bool]) -> list[dict[str, Any]] | None:
    alarms = await stored(consumer, "door.alarm")
    return alarms if alarms and (alarms[-1]["alarm"], alarms[-1]["active"]) == last else None


async def _all_cleared(consumer: RunningConsumer, n: int) -> bool:
    k = incident_conditions.c
    rows = await consumer.store.fetch(sa.select(k.cleared_at))
    return len(rows) == n and all(r.cleared_at is not None for r in rows)


async def _open(consumer: RunningConsumer) -> list[Any]:
    return await consumer.store.fetch(sa.select(incidents).where(incidents.c.state == "open"))


async def _conditions(consumer: RunningConsumer, n: int) -> bool:
    return len(await consumer.store.fetch(sa.select(incident_conditions))) >= n


async def test_a_locker_deposit_and_collection_carry_only_the_compartment_and_an_opaque_id(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    """GIVEN a locker bank twin WHEN an item goes into compartment 3 and is taken out THEN the centre stores a
    deposit and a collection with the same UUID parcel id and nothing else; a jammed lock opens an incident."""
    locker = LockerConfig(bank="A", board=SimulatedLockerBoardConfig(compartments=4), poll_s=0.05)
    agent = running(agent_for(mosquitto, tmp_path, "locker-a", locker=locker))
    await wait_until(lambda: stored(consumer, "locker.bank"), what="the bank's first state")
    sim = agent.locker.sim
    assert sim is not None
    sim.release(3)
    sim.put(3)
    sim.shut(3)
    await asyncio.sleep(0.3)
    sim.release(3)
    sim.take(3)
    parcels = await wait_until(lambda: _at_least(stored(consumer, "locker.parcel"), 2), what="deposit and collection")
    deposit, collect = parcels
    assert (deposit["action"], collect["action"], deposit["compartment"]) == ("deposit", "collect", 3)
    assert deposit["parcel"] == collect["parcel"] and uuid.UUID(deposit["parcel"])
    assert set(deposit) == {"bank", "compartment", "action", "parcel", "held_s"}
    sim.jam(2)
    await wait_until(lambda: _open(consumer), what="the compartment fault incident")
    (row,) = await _open(consumer)
    assert row.kind == "locker_door_fault.A.2" and row.severity == "major"


async def _at_least(rows: Any, n: int) -> Any:
    found = await rows
    return found if len(found) >= n else None


@pytest.mark.parametrize(
    "parcel", ["13800138000", "王小明", "pickup-code-4711", "00000000-0000-0000-0000-00000000000g"]
)
def test_a_parcel_id_that_is_not_a_uuid_is_refused_where_it_is_made(parcel: str) -> None:
    """A phone number, a name or a pick-up code cannot ride in the parcel id (no personal data on the wire)."""
    with pytest.raises(ValidationError):
        LockerParcel(bank="A", compartment=1, action="deposit", parcel=parcel)


def test_a_locker_event_with_a_field_outside_the_contract_is_refused() -> None:
    with pytest.raises(ValidationError):
        LockerParcel.model_validate(
            {"bank": "A", "compartment": 1, "action": "deposit", "parcel": str(uuid.uuid4()), "phone": "13800138000"}
        )
