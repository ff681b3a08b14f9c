"""Hall autonomy (issue 24, docs/hall-autonomy.md): a hall consumer next to the hall's own broker, bridged to
the centre's broker through a TCP proxy that stands for the WAN.

Real Mosquitto on both sides (the bridge's topics are provisioning's own, provisioning/brokerconf.py), the
hall's store in SQLite, the centre's in SQLite and PostgreSQL, webhooks on a local HTTP receiver. Time is a
manual clock both consumers share.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.calendar import CalendarConfig, TimetableConfig
from broker.config import ConsumerConfig
from broker.consumer import Consumer
from broker.duties.policy import DutiesPolicy, NetCheckDuty
from broker.hall.mirror import IncidentRow, Snapshot, TimelineEntry, lead_topic
from broker.mosquitto.local import LocalMosquitto
from broker.reports.sla import build_sla_report
from broker.sites import SiteConfig, Sites, SlaPolicy
from broker.store.db import Store
from broker.store.schema import (
    commands,
    dead_letters,
    devices,
    dispatches,
    events,
    incident_timeline,
    incidents,
    notifications,
)
from protocol import topics
from provisioning.brokerconf import bridge_topics
from runtime.clock import HALL_ZONE
from tests.conftest import RunningConsumer
from tests.support.hall import Device, Hall, ManualClock, consumer_config, start_hall, wait_until
from tests.support.http_receiver import HttpServer
from tests.support.mqtt import publish
from tests.support.procs import Proc, agent_proc, outbox_state, wait_for
from tests.support.tcpproxy import TcpProxy
from tests.test_chaos import assert_exactly_once, drained

SITE = "qp"
TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=HALL_ZONE)
QINGPU = SiteConfig(
    name="青浦区政务服务中心",
    calendar=CalendarConfig(
        timetables=[TimetableConfig(name="全年", start="01-01", end="12-31", sessions=["08:30-11:30", "13:00-17:00"])]
    ),
    sla=SlaPolicy(act_after_s=30, verify_s=5),
    duties=DutiesPolicy(netcheck=NetCheckDuty(device_classes=[])),  # only the SLA's pages are counted here
)


def alerts(http: HttpServer, prefix: str) -> dict[str, Any]:
    """Every role paged on its own path under ``prefix``: the hall's LAN webhook, or the centre's."""
    return {
        "channels": {
            "tech": {"type": "webhook", "url": http.url(f"/{prefix}/tech")},
            "staff": {"type": "webhook", "url": http.url(f"/{prefix}/staff")},
            "it": {"type": "webhook", "url": http.url(f"/{prefix}/it")},
        },
        "recipients": {
            "zhang": {"role": "technician", "channel": "tech"},
            "li": {"role": "site_staff", "channel": "staff"},
            "wang": {"role": "it_section", "channel": "it"},
        },
        "retry": {"initial_s": 10, "max_s": 60},
    }


def bridge_conf(centre_port: int, queue: int | None = None) -> str:
    """The hall's bridge as provisioning renders it, less TLS and logins (the brokers here are anonymous).
    ``queue``: a bound on what the hall's broker queues per session (the bridge's too), its drops counted in
    $SYS every second."""
    bound = [f"max_queued_messages {queue}", "sys_interval 1"] if queue is not None else []
    return "\n".join(
        [
            *bound,
            "connection centre",
            f"address 127.0.0.1:{centre_port}",
            "bridge_protocol_version mqttv311",
            "cleansession false",
            f"remote_clientid bridge-{SITE}",
            "restart_timeout 1 1",
            "keepalive_interval 5",
            "notifications true",
            "notifications_local_only true",
            *bridge_topics(SITE),
        ]
    )


def hall_config(port: int, url: str, http: HttpServer) -> ConsumerConfig:
    """qp's hall consumer on the hall's broker, paging on the hall's webhook paths."""
    base = consumer_config(port, url, {SITE: QINGPU}, alerts(http, "hall"), "hall-qp")
    return ConsumerConfig.model_validate(base.model_dump() | {"hall": {"site": SITE, "mirror_s": 0.1}})


class Heard:
    """What one broker delivers on a topic filter of the site (commands, store confirmations)."""

    def __init__(self, port: int, what: str) -> None:
        self.got: list[tuple[str, bytes]] = []
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        c.on_message = lambda _c, _u, m: self.got.append((m.topic, bytes(m.payload)))
        c.connect("127.0.0.1", port)
        c.subscribe(f"{topics.PREFIX}/{SITE}/+/{what}", qos=1)
        c.loop_start()
        self.client = c

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Scene:
    clock: ManualClock
    hall: Hall
    centre: Hall
    proxy: TcpProxy
    http: HttpServer
    hall_cmds: Heard
    centre_cmds: Heard
    hall_stored: Heard
    hall_port: int

    def pages(self, prefix: str) -> list[dict[str, Any]]:
        return [r.json() for r in self.http.requests if r.path.startswith(f"/{prefix}/")]

    async def rows(self, side: Hall, table: sa.Table, *where: Any) -> list[Any]:
        return await side.store.fetch(sa.select(table).where(*where))


@pytest.fixture
async def scene(
    request: pytest.FixtureRequest, tmp_path: Path, mosquitto: LocalMosquitto, store_url: str, http: HttpServer
) -> AsyncIterator[Scene]:
    clock = ManualClock(getattr(request, "param", TUESDAY_10))  # a test may start its day elsewhere
    centre_cfg = consumer_config(mosquitto.port, store_url, {SITE: QINGPU}, alerts(http, "centre"), "centre")
    centre = await start_hall(centre_cfg, clock)
    async with TcpProxy(mosquitto.port) as proxy:
        hall_broker = LocalMosquitto(tmp_path / "hall-broker", extra_conf=bridge_conf(proxy.port))
        hall_broker.start()
        hall_url = f"sqlite+aiosqlite:///{tmp_path / 'hall.db'}"
        hall = await start_hall(hall_config(hall_broker.port, hall_url, http), clock)
        hall_cmds, centre_cmds = Heard(hall_broker.port, "cmd"), Heard(mosquitto.port, "cmd")
        hall_stored = Heard(hall_broker.port, "stored")
        try:
            yield Scene(clock, hall, centre, proxy, http, hall_cmds, centre_cmds, hall_stored, hall_broker.port)
        finally:
            for heard in (hall_cmds, centre_cmds, hall_stored):
                heard.close()
            await hall.stop()
            await centre.stop()
            hall_broker.stop()


async def test_hall_pages_and_heals_through_a_wan_cut_and_the_centre_ends_with_one_incident_and_every_event_once(
    scene: Scene,
) -> None:
    """GIVEN a hall consumer leading its site (its lead status reached the centre through the bridge)
    WHEN the WAN is cut, a kiosk goes down, stays down past its SLA breach and comes back, and the WAN returns
    THEN the hall sent restart_app through its own broker and paged its technician on the LAN webhook; the centre
    holds every event the hall stored, exactly once, and exactly one incident: the hall's, with the hall's
    detection and breach times, timeline, conditions and dispatch, so its month's SLA report is the hall's; the
    centre sent no command and paged nobody, during the cut or after it."""
    s, clock = scene, scene.clock
    k1 = Device(s.hall_port, SITE, "k1", clock)
    k1.birth(heartbeat_s=3600)
    k1.heartbeat()
    await wait_until(lambda: _now(SITE in (s.centre.consumer.leads or ())), what="the hall's lead at the centre")
    await wait_until(lambda: s.rows(s.centre, events), what="the first heartbeat at the centre")

    await wait_until(lambda: _now(s.hall_stored.got), what="the centre's confirmation of the heartbeat")
    s.proxy.cut()
    s.hall_stored.got.clear()
    clock.advance(minutes=1)
    down_at = clock.now()
    k1.state("down", "print")
    opened = await wait_until(lambda: s.hall.incidents(state="open"), what="the hall's incident")
    assert opened[0].detected_at == down_at

    for minutes in (0.6, 10, 10, 5, 10):  # T+0 (restart_app, first page), escalation, warning, breach
        clock.advance(minutes=minutes)
        k1.heartbeat()
        await s.hall.settle()
    await wait_until(lambda: _now(s.hall_cmds.got), what="restart_app on the hall's broker")
    assert [t for t, _ in s.hall_cmds.got] == [topics.cmd(SITE, "k1")]
    assert b"restart_app" in s.hall_cmds.got[0][1]
    breached = await wait_until(lambda: s.hall.incidents(step="breached"), what="the hall's breach")
    sent = await wait_until(
        lambda: s.rows(s.hall, notifications, notifications.c.step == "breach", notifications.c.state == "sent"),
        what="the breach paged on the hall's LAN webhook",
    )
    steps = {r.step for r in await s.rows(s.hall, notifications, notifications.c.state == "sent")}
    assert {"opened", "warning", "breach"} <= steps, steps
    assert len(s.pages("hall")) >= len(steps) and sent

    k1.state("up")
    await wait_until(lambda: s.hall.incidents(state="recovering"), what="the kiosk back at the hall")
    clock.advance(seconds=10)
    k1.heartbeat()
    closed = await wait_until(lambda: s.hall.incidents(state="closed"), what="the hall to verify the recovery")
    for _ in range(4):  # the centre hears nothing: it must not take the kiosk's silence for an outage
        clock.advance(minutes=30)
        k1.heartbeat()
        await s.hall.settle()
    # What would have been an outage at the centre, were the site not hall-led:
    await wait_until(lambda: s.rows(s.centre, devices, devices.c.presence == "stale"), what="k1 stale at the centre")
    assert await s.centre.incidents() == []

    assert s.hall_stored.got == []  # only the centre confirms: the kiosk would still hold every event
    s.proxy.heal()
    await wait_until(lambda: _now(s.hall_stored.got), what="the centre's confirmations through the bridge")
    hall_ids = {r.id for r in await s.rows(s.hall, events)}

    async def backlog_in() -> bool:
        return {r.id for r in await s.rows(s.centre, events)} >= hall_ids

    await wait_until(backlog_in, within_s=20, what="the bridge's backlog at the centre")
    mirrored = await wait_until(
        lambda: s.centre.incidents(state="closed"), within_s=20, what="the hall's incident at the centre"
    )
    await s.centre.settle(10)

    centre_events = await s.rows(s.centre, events)
    assert sorted(r.id for r in centre_events) == sorted(hall_ids)  # every event, none twice
    every = await s.centre.incidents()
    assert len(every) == 1, [(r.id, r.kind, r.state, r.detected_at, r.summary) for r in every]
    [one] = every
    assert (one.id, one.detected_at, one.breached_at) == (closed[0].id, down_at, breached[0].breached_at)
    assert mirrored[0].closed_at == closed[0].closed_at

    async def same_timeline() -> list[str]:
        """The centre's copy of the hall's timeline, once the hall's last snapshot is in."""
        q = sa.select(incident_timeline.c.text).order_by(incident_timeline.c.id)
        hall, centre = await s.hall.store.fetch(q), await s.centre.store.fetch(q)
        return [r.text for r in centre] if centre == hall else []

    centre_timeline = await wait_until(same_timeline, what="the hall's timeline at the centre")
    assert any("restart_app" in t for t in centre_timeline)

    # The month's SLA report, the figures assessments are based on: the centre's is the hall's, to the second.
    sites, now = Sites({SITE: QINGPU}), clock.now()
    hall_report = await build_sla_report(s.hall.store, sites, SITE, "2026-11", now=now)
    centre_report = await build_sla_report(s.centre.store, sites, SITE, "2026-11", now=now)
    [k1_row] = hall_report.devices
    assert (k1_row.incidents, k1_row.breaches, k1_row.self_healed) == (1, 1, 1) and k1_row.down_s > 30 * 60
    assert (centre_report.devices, centre_report.incidents) == (hall_report.devices, hall_report.incidents)
    # The breach's dispatch, cancelled when the kiosk recovered before anyone went: the same row at the centre.
    [visit] = await s.rows(s.hall, dispatches)
    assert visit.state == "cancelled" and await s.rows(s.centre, dispatches) == [visit]
    assert await s.rows(s.centre, commands) == [] and s.centre_cmds.got == []
    assert await s.rows(s.centre, notifications) == [] and s.pages("centre") == []
    assert len(await s.rows(s.hall, commands)) == 1


async def _now(value: Any) -> Any:
    return value


MONDAY_0800 = datetime(2026, 11, 23, 8, 0, tzinfo=HALL_ZONE)
STAFF = [f"S{n:04d}" for n in range(1, 7)]


@pytest.mark.parametrize("scene", [MONDAY_0800], indirect=True)
async def test_a_whole_working_day_without_the_wan_ends_with_the_centre_holding_what_the_hall_decided(
    scene: Scene,
) -> None:
    """GIVEN a hall leading its site WHEN the WAN is down from 08:00 to 18:30 while staff punch in and out, two
    kiosks report every half hour, one kiosk fails and is healed by the hall's restart_app and the other stays
    down past its breach and comes back in the afternoon THEN during the day the hall sends each restart_app and
    pages its technicians, the centre acts on nothing; after the WAN returns the centre holds every event once and
    exactly the hall's incidents (times, steps, timelines, dispatches), so the day's SLA report is the same on both
    sides: the records the centre would have had with the WAN up (issue 24, done-when)."""
    s, clock = scene, scene.clock
    k1, k2 = Device(s.hall_port, SITE, "k1", clock), Device(s.hall_port, SITE, "k2", clock)
    terminal = Device(s.hall_port, SITE, "att-1", clock, role="attendance")
    for d in (k1, k2, terminal):
        d.birth(heartbeat_s=3600)
    await wait_until(lambda: _now(SITE in (s.centre.consumer.leads or ())), what="the hall's lead at the centre")
    s.proxy.cut()

    async def at(hh: int, mm: int = 0) -> None:
        """Advance the hall's clock to hh:mm, every device reporting every half hour on the way."""
        target = MONDAY_0800.replace(hour=hh, minute=mm)
        while clock.now() < target:
            clock.advance(seconds=min(1800.0, (target - clock.now()).total_seconds()))
            for d in (k1, k2, terminal):
                d.heartbeat()
            await s.hall.settle(2)

    async def heal_by_restart(kiosk: Device, n: int) -> None:
        kiosk.state("down", "print")
        await wait_until(lambda: s.hall.incidents(state="open", device=kiosk.device), what=f"{kiosk.device} open")
        clock.advance(seconds=36)  # past act_after_s: the hall's clock sends restart_app
        kiosk.heartbeat()
        await wait_until(lambda: _now(len(s.hall_cmds.got) >= n), what=f"restart_app {n} at the hall")
        kiosk.state("up")
        await wait_until(lambda: s.hall.incidents(state="recovering"), what=f"{kiosk.device} recovering")
        clock.advance(seconds=10)
        kiosk.heartbeat()
        await wait_until(lambda: s.hall.incidents(state="closed", device=kiosk.device), what=f"{kiosk.device} closed")

    for staff in STAFF:
        clock.advance(minutes=3)
        terminal.event("attendance.punch", {"staff_id": staff, "method": "face", "direction": "in"})
    await at(9, 15)
    await heal_by_restart(k1, 1)
    await at(13)
    k2.state("down", "print", "scan")
    await wait_until(lambda: s.hall.incidents(state="open", device="k2"), what="k2 open")
    for minutes in (0.6, 10, 10, 5, 10):  # restart_app that does not cure it, escalation, warning, breach
        clock.advance(minutes=minutes)
        k2.heartbeat()
        await s.hall.settle()
    await wait_until(lambda: s.hall.incidents(step="breached"), what="k2's breach at the hall")
    await at(14, 10)
    k2.state("up")
    await wait_until(lambda: s.hall.incidents(state="recovering"), what="k2 recovering")
    clock.advance(seconds=10)
    k2.heartbeat()
    await wait_until(lambda: s.hall.incidents(state="closed", device="k2"), what="k2 closed")
    await at(17, 5)
    for staff in STAFF:
        clock.advance(minutes=2)
        terminal.event("attendance.punch", {"staff_id": staff, "method": "face", "direction": "out"})
    await at(18, 30)
    hall_incidents = await s.hall.incidents()
    assert [(r.device, r.state) for r in hall_incidents] == [("k1", "closed"), ("k2", "closed")]
    assert hall_incidents[1].breached_at is not None and hall_incidents[0].breached_at is None
    assert {t for t, _ in s.hall_cmds.got} == {topics.cmd(SITE, "k1"), topics.cmd(SITE, "k2")}
    assert {r.step for r in await s.rows(s.hall, notifications, notifications.c.state == "sent")} >= {"breach"}
    assert await s.centre.incidents() == [] and s.centre_cmds.got == []
    assert await centre_incident_pages(s) == []

    s.proxy.heal()
    hall_events = sorted(r.id for r in await s.rows(s.hall, events))
    assert len(hall_events) > 2 * len(STAFF) + 40  # the day's punches, reports and state changes

    async def backlog_in() -> bool:
        return sorted(r.id for r in await s.rows(s.centre, events)) == hall_events

    await wait_until(backlog_in, within_s=30, what="the day's backlog at the centre, each event once")

    def shown(rows: list[Any]) -> list[tuple[Any, ...]]:
        return [(r.id, r.device, r.state, r.detected_at, r.breached_at, r.closed_at, r.recovered_by) for r in rows]

    async def incidents_agree() -> bool:
        return shown(await s.centre.incidents()) == shown(await s.hall.incidents())

    await wait_until(incidents_agree, within_s=20, what="the hall's incidents at the centre")
    q = sa.select(incident_timeline.c.incident_id, incident_timeline.c.text).order_by(incident_timeline.c.id)

    async def timelines_agree() -> bool:
        return await s.centre.store.fetch(q) == await s.hall.store.fetch(q)

    await wait_until(timelines_agree, within_s=20, what="the hall's timelines at the centre")
    await s.centre.settle(10)
    assert await s.rows(s.centre, dispatches) == await s.rows(s.hall, dispatches)
    sites, now = Sites({SITE: QINGPU}), clock.now()
    hall_report = await build_sla_report(s.hall.store, sites, SITE, "2026-11", now=now)
    centre_report = await build_sla_report(s.centre.store, sites, SITE, "2026-11", now=now)
    assert (centre_report.devices, centre_report.incidents) == (hall_report.devices, hall_report.incidents)
    assert sum(d.breaches for d in hall_report.devices) == 1
    punches = sa.select(events.c.data).where(events.c.type == "attendance.punch")
    assert len(await s.centre.store.fetch(punches)) == 2 * len(STAFF)
    assert await s.rows(s.centre, commands) == [] and s.centre_cmds.got == []
    assert await centre_incident_pages(s) == []


async def centre_incident_pages(s: Scene) -> list[str]:
    """What the centre paged about incidents. Its own reminders (the day's cleaning, which people record at the
    centre: broker/rules/maintenance.py) stay the centre's on a hall-led site and are not the hall's to give."""
    rows = await s.rows(s.centre, notifications, notifications.c.ref.like("incident:%"))
    return [r.subject for r in rows]


# -- the centre's side of the rule, one message at a time ---------------------------------------------------
def snapshot(step: str = "new", **row: Any) -> bytes:
    at = TUESDAY_10.astimezone(HALL_ZONE)
    incident = {
        "id": "01a24f00-0000-7000-8000-000000000001",
        "key": f"{SITE}/k1",
        "site": SITE,
        "device": "k1",
        "kind": "kiosk_down",
        "severity": "critical",
        "device_class": "kiosk",
        "hours24": False,
        "state": "open",
        "open_key": f"{SITE}/k1|outage",
        "summary": "kiosk.state=down print",
        "detected_at": at,
        "staff_reported_at": None,
        "last_signal_at": at,
        "cleared_at": None,
        "closed_at": None,
        "recovery": "",
        "recovered_by": "",
        "step": step,
        "next_step_at": at + timedelta(seconds=30),
        "breached_at": None,
        "breach_reason": "",
        "notified_at": None,
        "acked_at": None,
        "acked_by": "",
        "escalation_level": 0,
        "parent_id": None,
        "flaps": 0,
    } | row
    entry = {"at": at, "entry": "signal", "actor": "rules", "text": "检测到停止服务", "detail": "{}"}
    return (
        Snapshot(incident=IncidentRow.model_validate(incident), timeline=(TimelineEntry(**entry),))
        .model_dump_json()
        .encode()
    )


@pytest.fixture
async def centre(
    mosquitto: LocalMosquitto, store_url: str, http: HttpServer
) -> AsyncIterator[tuple[Hall, ManualClock]]:
    clock = ManualClock(TUESDAY_10)
    side = await start_hall(consumer_config(mosquitto.port, store_url, {SITE: QINGPU}, alerts(http, "centre")), clock)
    try:
        yield side, clock
    finally:
        await side.stop()


async def test_the_centre_records_a_hall_led_incident_without_acting_and_takes_over_when_the_hall_consumer_goes(
    centre: tuple[Hall, ManualClock], mosquitto: LocalMosquitto
) -> None:
    """GIVEN a site whose hall consumer's lead status says online WHEN its incident arrives twice, overdue for
    its first step THEN the centre holds it once, with the hall's clock and timeline, and neither steps nor pages;
    WHEN the lead says offline (the hall consumer's Will) THEN the centre's clock takes the incident from the
    hall's step and pages."""
    side, clock = centre
    publish(mosquitto.port, [(lead_topic(SITE), b'{"state":"online"}', True)])
    await wait_until(lambda: _now(SITE in (side.consumer.leads or ())), what="the lead")
    publish(mosquitto.port, [(f"{topics.PREFIX}/{SITE}/_hall/incident", snapshot(), False)] * 2)
    [row] = await wait_until(lambda: side.incidents(), what="the hall's incident")
    clock.advance(minutes=5)
    await side.settle()
    [row] = await side.incidents()
    assert (row.step, row.detected_at) == ("new", TUESDAY_10)
    assert len(await side.store.fetch(sa.select(incident_timeline))) == 1
    assert await side.notifications() == []
    async with side.store.engine.begin() as conn:  # acknowledged on the centre's dashboard
        await conn.execute(incidents.update().values(acked_at=clock.now(), acked_by="it.chen"))
    publish(mosquitto.port, [(f"{topics.PREFIX}/{SITE}/_hall/incident", snapshot(summary="still down"), False)])
    await wait_until(lambda: side.incidents(summary="still down"), what="the hall's next snapshot")
    [row] = await side.incidents()
    assert row.acked_by == "it.chen"  # the hall's snapshot, which knows no acknowledgement, keeps the centre's

    publish(mosquitto.port, [(lead_topic(SITE), b'{"state":"offline"}', True)])
    paged = await wait_until(lambda: side.notifications(step="opened"), what="the centre to take over")
    assert paged[0].ref == f"incident:{row.id}"
    [row] = await side.incidents()
    assert row.step == "acted"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"{", "json_invalid"), (snapshot(site="other", key="other/k1"), "site 'other'")],
)
async def test_a_bad_hall_snapshot_is_dead_lettered_with_its_reason(
    centre: tuple[Hall, ManualClock], mosquitto: LocalMosquitto, payload: bytes, reason: str
) -> None:
    """GIVEN a centre WHEN a hall incident message is not JSON, or names another site than its topic's THEN it
    is kept as a dead letter saying why, and no incident is recorded."""
    side, _ = centre
    publish(mosquitto.port, [(f"{topics.PREFIX}/{SITE}/_hall/incident", payload, False)])
    [dead] = await wait_until(lambda: side.store.fetch(sa.select(dead_letters)), what="the dead letter")
    assert reason in dead.detail and dead.raw == payload
    assert await side.incidents() == []


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"hall": {"site": SITE}, "rules": {"enabled": False}}, "rules.enabled"),
        ({"hall": {"site": SITE}, "sites": {"other": {}}}, "sites:"),
        ({"hall": {"site": "no/slash"}}, "hall.site"),
        ({"hall": {"site": SITE}, "ingest": {"require_signatures": "all"}}, "ingest.require_signatures"),
    ],
)
def test_a_hall_consumer_that_would_not_fit_its_site_is_refused_by_field(fields: dict[str, Any], named: str) -> None:
    """GIVEN a hall consumer with its rules off, configuring another site, naming a site no topic can carry, or
    requiring signatures it holds no keys to verify
    WHEN the config is read THEN it is refused, naming the field."""
    with pytest.raises(ValidationError, match=named):
        ConsumerConfig.model_validate({"instance": "x", **fields})


# -- exactly once, whatever the bridge's queue drops -------------------------------------------------------
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.timeout(120)
async def test_punches_the_bridge_queue_drops_during_a_cut_reach_the_centre_once_from_the_agents_outbox(
    tmp_path: Path, mosquitto: LocalMosquitto, consumer: RunningConsumer, http: HttpServer, procs: list[Proc]
) -> None:
    """GIVEN a real agent on the hall's broker, whose bridge may queue only 20 messages, and a hall consumer
    WHEN the WAN is cut while the agent takes 150 punches THEN the hall's store holds them all at once but the
    agent keeps every one (only the centre confirms), the bridge's queue drops some, and after the heal the
    agent's own re-sends bring the centre each punch exactly once and its outbox drains; WHEN the hall consumer
    is stopped THEN the centre leads the site again."""
    n, device = 150, "att-1"
    agent_db = tmp_path / f"agent-{SITE}-{device}.db"
    hall_url = f"sqlite+aiosqlite:///{tmp_path / 'hall.db'}"
    async with TcpProxy(mosquitto.port) as proxy:
        hall_broker = LocalMosquitto(tmp_path / "hall-broker", extra_conf=bridge_conf(proxy.port, queue=20))
        hall_broker.start()
        store = await Store.open(hall_url)
        hall = Consumer(hall_config(hall_broker.port, hall_url, http), store)
        task = asyncio.create_task(hall.run())
        try:
            await wait_for(lambda: SITE in (consumer.consumer.leads or ()), 15, "the hall's lead at the centre")
            proxy.cut()
            agent = agent_proc(tmp_path, hall_broker.port, SITE, device, events_n=n, rate=50, heartbeat_s=600,
                               keepalive_s=2, confirm_timeout_s=3)  # fmt: skip
            procs.append(agent.start())
            await wait_for(lambda: _punches(store, device, n), 30, "every punch in the hall's store")
            assert outbox_state(agent_db)["depth"] >= n, "the hall consumer confirmed: devices would forget events"
            await wait_for(lambda: hall.counters.broker_dropped > 0, 15, "the bridge's queue to drop")
            proxy.heal()
            await wait_for(lambda: drained(agent_db, n), 60, "the agent's outbox to drain through the centre")
            await assert_exactly_once(consumer.store, agent_db, device, n)

            hall.stop()  # on purpose: the hall consumer hands the site back to the centre at once
            await asyncio.wait_for(task, 15)
            await wait_for(lambda: SITE not in (consumer.consumer.leads or ()), 10, "the centre to lead the site")
        finally:
            hall.stop()
            await asyncio.wait_for(task, 15)
            await store.close()
            hall_broker.stop()


async def _punches(store: Store, device: str, n: int) -> bool:
    q = sa.select(sa.func.count()).where(events.c.device == device, events.c.type == "attendance.punch")
    return int(await store.scalar(q) or 0) >= n


# -- the hall's local dashboard ----------------------------------------------------------------------------
async def test_the_api_on_a_hall_consumers_config_reads_and_refuses_every_change_but_the_login(
    tmp_path: Path, http: HttpServer
) -> None:
    """GIVEN the API run against a hall consumer's config and store WHEN a technician logs in THEN the incidents
    and devices are read as at the centre, and an acknowledgement, a command or a new user is refused with 403
    saying why, before any route runs."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'hall.db'}"
    store = await Store.open(url)
    try:
        await add_user(store, "tech.qp", "correct horse battery", "technician", (SITE,), datetime.now(UTC))
        app = create_app(ApiConfig(centre=hall_config(1883, url, http), cookie_secure=False), store, None)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hall.test") as client:
            r = await client.post("/api/login", json={"username": "tech.qp", "password": "correct horse battery"})
            assert r.status_code == 200, r.text
            h = {"Authorization": f"Bearer {r.json()['token']}"}
            assert (await client.get("/api/incidents?state=all", headers=h)).json()["total"] == 0
            assert (await client.get("/api/devices", headers=h)).status_code == 200
            for path, body in [
                ("/api/incidents/x/ack", {}),
                ("/api/commands", {"device": f"{SITE}/k1", "name": "restart_app"}),
                ("/api/users", {"username": "x", "password": "y", "role": "readonly", "sites": ["*"]}),
            ]:
                r = await client.post(path, json=body, headers=h)
                assert r.status_code == 403 and "只读" in r.json()["detail"], (path, r.text)
            assert (await client.post("/api/logout", headers=h)).status_code == 204
    finally:
        await store.close()
