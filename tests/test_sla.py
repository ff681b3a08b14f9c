"""The kiosk SLA end to end: devices over the real broker, the consumer on both stores, hall time on a
manual clock, pages caught by real HTTP receivers (one per role)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from broker.alerts.routing import AlertsConfig, Router
from broker.audit.verify import verify as verify_chain
from broker.calendar import CalendarConfig, TimetableConfig
from broker.duties.policy import DutiesPolicy, NetCheckDuty
from broker.mosquitto.local import LocalMosquitto
from broker.reports.sla import build_sla_report
from broker.rules import actions
from broker.rules.devices import Registered, register_devices
from broker.rules.incidents import IncidentRules, Signal
from broker.rules.sla import SlaClock
from broker.sites import HallOutagePolicy, SiteConfig, Sites, SlaPolicy
from broker.store.db import Batch, StatusUpdate, Store
from broker.store.keys import DeviceKey
from broker.store.schema import (
    commands,
    dispatches,
    incident_conditions,
    incident_timeline,
    incidents,
    notifications,
    tasks,
)
from protocol import topics
from protocol.envelope import Envelope, Presence, StatusMessage
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE
from tests.support.hall import Device, Hall, ManualClock, consumer_config, posted, start_hall, wait_until
from tests.support.http_receiver import HttpServer, Reply
from tests.support.mqtt import publish
from tests.support.statements import Statements

TUESDAY_10 = datetime(2026, 11, 24, 10, 0, tzinfo=HALL_ZONE)
FRIDAY_1650 = datetime(2026, 11, 27, 16, 50, tzinfo=HALL_ZONE)

QINGPU = SiteConfig(
    name="青浦区政务服务中心",
    calendar=CalendarConfig(
        timetables=[TimetableConfig(name="非夏令", start="01-01", end="12-31", sessions=["08:30-11:30", "13:00-17:00"])]
    ),
    sla=SlaPolicy(act_after_s=30, verify_s=5),
    hall_outage=HallOutagePolicy(min_devices=3, min_fraction=0.5),
    # These kiosks send no daily network check: the consumer's duties job (tests/test_duties_*.py) would page
    # for each at 10:00 beside the SLA's pages, which are what these tests count.
    duties=DutiesPolicy(netcheck=NetCheckDuty(device_classes=[])),
)


def alerts(http: HttpServer, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "channels": {
            "tech": {"type": "webhook", "url": http.url("/tech")},
            "staff": {"type": "webhook", "url": http.url("/staff")},
            "it": {"type": "webhook", "url": http.url("/it")},
        },
        "recipients": {
            "zhang": {"role": "technician", "channel": "tech"},
            "li": {"role": "site_staff", "channel": "staff"},
            "wang": {"role": "it_section", "channel": "it"},
        },
        "retry": {"initial_s": 10, "max_s": 60},
    }
    for k, v in extra.items():
        cfg[k] = cfg[k] | v if isinstance(v, dict) else v
    return cfg


class Scene:
    def __init__(self, mosquitto: LocalMosquitto, store_url: str, http: HttpServer, clock: ManualClock) -> None:
        self.mosquitto, self.store_url, self.http, self.clock = mosquitto, store_url, http, clock
        self.hall: Hall | None = None
        self.alerts = alerts(http)

    async def start(self, instance: str = "sla") -> Hall:
        cfg = consumer_config(self.mosquitto.port, self.store_url, {"qp": QINGPU}, self.alerts, instance)
        self.hall = await start_hall(cfg, self.clock)
        return self.hall

    async def register_24_hour(self, *names: str) -> None:
        """IT registers these kiosks as 24-hour devices before they connect (devices.hours24, written as `hallfleet
        provision sync` writes it): a kiosk's name says nothing about its hours."""
        store = await Store.open(self.store_url)
        try:
            async with store.engine.begin() as conn:
                entries = [Registered("qp", n, "kiosk", True) for n in names]
                await register_devices(conn, entries, by="wang.li", at=self.clock.now())
        finally:
            await store.close()

    def device(self, name: str) -> Device:
        return Device(self.mosquitto.port, "qp", name, self.clock)

    def pages(self, path: str) -> list[dict[str, Any]]:
        return posted([r for r in self.http.requests if r.path == path])


@pytest.fixture
async def scene(mosquitto: LocalMosquitto, store_url: str, http: HttpServer) -> AsyncIterator[Scene]:
    s = Scene(mosquitto, store_url, http, ManualClock(TUESDAY_10))
    yield s
    if s.hall is not None:
        await s.hall.stop()


async def one_incident(hall: Hall, state: str, **where: Any) -> Any:
    async def check() -> Any:
        rows = await hall.incidents(**where)
        return rows[0] if len(rows) == 1 and rows[0].state == state else None

    return await wait_until(check, what=f"one {state} incident {where}")


async def _conditions(hall: Hall, incident_id: str, n: int) -> list[Any]:
    rows = await hall.store.fetch(
        sa.select(incident_conditions).where(incident_conditions.c.incident_id == incident_id)
    )
    return rows if len(rows) == n else []


async def steps_of(hall: Hall, incident_id: str) -> list[str]:
    rows = await hall.store.fetch(
        sa.select(incident_timeline.c.text).where(incident_timeline.c.incident_id == incident_id)
    )
    return [r.text for r in rows]


async def test_an_app_crash_that_heals_itself_closes_its_incident_without_paging_anyone(scene: Scene) -> None:
    await scene.register_24_hour("kiosk-24h-1")
    hall = await scene.start()
    kiosk = scene.device("kiosk-24h-1")
    kiosk.birth()
    kiosk.state("down", "ticket", "print")
    opened = await one_incident(hall, "open", kind="kiosk_down")
    assert opened.hours24 and opened.device_class == "kiosk"

    scene.clock.advance(seconds=3)  # the agent restarted the app: well inside the 30 s group wait
    kiosk.event("app.restart", {"app": "kiosk-app", "attempt": 1, "trigger": "exited", "ok": True})
    kiosk.state("up")
    await one_incident(hall, "recovering", kind="kiosk_down")
    scene.clock.advance(seconds=6)
    kiosk.heartbeat()
    closed = await one_incident(hall, "closed", kind="kiosk_down")
    assert closed.recovery == "self_healed"

    scene.clock.advance(minutes=40)  # long past every step: a closed incident takes none
    await hall.settle()
    assert await hall.notifications() == []
    assert scene.http.requests == []
    assert await hall.store.fetch(sa.select(commands)) == [], "no remediation for what healed itself"


async def test_a_hard_fault_walks_t0_warning_breach_and_dispatch_with_the_right_pages(scene: Scene) -> None:
    hall = await scene.start()
    kiosk = scene.device("kiosk-24h-1")
    kiosk.birth()
    kiosk.state("down", "ticket", "print")
    incident = await one_incident(hall, "open", kind="kiosk_down")

    scene.clock.advance(seconds=31)  # T+0: remediation and the first pages
    await wait_until(lambda: hall.notifications(step="opened", state="sent"), what="T+0 pages")
    await hall.settle()
    assert {n.recipient for n in await hall.notifications(step="opened")} == {"zhang", "li"}
    remediation = await hall.store.fetch(sa.select(commands))
    assert [(c.name, c.issuer, c.key) for c in remediation] == [("restart_app", "sla-rules", "qp/kiosk-24h-1")]
    tech = scene.pages("/tech")
    assert len(tech) == 1 and "严重" in tech[0]["subject"] and "kiosk-24h-1" in tech[0]["subject"]

    scene.clock.advance(minutes=19)  # T+19:31: nothing new yet
    await hall.settle()
    assert await hall.notifications(step="warning") == []
    scene.clock.advance(minutes=1)  # T+20:31
    await wait_until(lambda: hall.notifications(step="warning", state="sent"), what="the warning")
    assert [n.recipient for n in await hall.notifications(step="warning")] == ["zhang"]

    scene.clock.advance(minutes=10)  # T+30:31: breach, dispatch; and nobody acknowledged for 15 min
    await wait_until(lambda: hall.notifications(step="dispatch", state="sent"), what="the dispatch page")
    await hall.settle()
    assert {n.recipient for n in await hall.notifications(step="breach")} == {"zhang", "wang"}
    assert [n.recipient for n in await hall.notifications(step="escalation1")] == ["wang"]
    (dispatch,) = await hall.store.fetch(sa.select(dispatches))
    assert dispatch.incident_id == incident.id
    assert dispatch.due_at == datetime(2026, 11, 24, 17, 0, tzinfo=HALL_ZONE), "due by the end of the working day"
    row = (await hall.incidents(id=incident.id))[0]
    assert row.step == "breached" and row.breached_at is not None and "30 分钟内未能远程恢复" in row.breach_reason
    timeline = await steps_of(hall, incident.id)
    assert any("自动远程处置: restart_app" in t for t in timeline)
    assert any(t.startswith("派单上门") for t in timeline)


async def test_the_kiosk_down_and_its_application_fault_are_one_outage_one_breach_one_dispatch(scene: Scene) -> None:
    """The application down makes the kiosk down (critical) and an app fault (major): one outage, so one
    incident whose clock starts when the fault began (its ``since``, before the kiosk said it was down), one
    breach and one dispatch (seen in the demo as three incidents, three breaches for one kiosk)."""
    hall = await scene.start()
    kiosk = scene.device("kiosk-24h-1")
    kiosk.birth()
    began = scene.clock.now()
    scene.clock.advance(seconds=20)
    kiosk.event("kiosk.fault", {"component": "app", "code": "unhealthy", "since": began.isoformat()})
    kiosk.state("down", "ticket", "print")
    incident = await one_incident(hall, "open", device="kiosk-24h-1")
    await wait_until(lambda: _conditions(hall, incident.id, 2), what="both conditions on the one incident")
    incident = (await hall.incidents(id=incident.id))[0]
    assert incident.detected_at == began, "the outage starts when the first fault began"
    assert (incident.kind, incident.severity) == ("kiosk_down", "critical"), "named by its gravest condition"

    scene.clock.advance(seconds=11)  # T+0 counts from the fault's start: 31 s
    await wait_until(lambda: hall.notifications(step="opened", state="sent"), what="T+0 pages")
    scene.clock.advance(minutes=20)
    await wait_until(lambda: hall.notifications(step="warning", state="sent"), what="the warning")
    scene.clock.advance(minutes=10)
    await wait_until(lambda: hall.notifications(step="dispatch", state="sent"), what="the dispatch page")
    await hall.settle()
    (row,) = await hall.incidents()
    assert row.breached_at == began + timedelta(minutes=30, seconds=31), "breached once, 30 min after it began"
    assert [d.incident_id for d in await hall.store.fetch(sa.select(dispatches))] == [row.id]
    assert {n.step for n in await hall.notifications(recipient="wang")} >= {"breach"}
    assert len(await hall.notifications(step="breach", recipient="wang")) == 1


def command_ack(kiosk: Device, command_id: str, name: str, state: str) -> None:
    """What the agent's command runner publishes when a command changes state."""
    env = Envelope(
        v=1,
        id=uuid7(),
        site=kiosk.site,
        device=kiosk.device,
        type="command.ack",
        seq=next(kiosk.seq),
        boot_id="b1",
        ts=kiosk.clock.now(),
        clock_synced=True,
        data={"command_id": command_id, "name": name, "state": state},
    )
    publish(kiosk.port, [(topics.cmd_ack(kiosk.site, kiosk.device), env.model_dump_json().encode(), False)])


def app_fault(kiosk: Device, code: str, active: bool, since: datetime) -> None:
    data = {"component": "app", "code": code, "active": active, "since": since.isoformat()}
    kiosk.event("device.fault" if code == "restart_failed" else "kiosk.fault", data)


async def test_one_outage_through_self_heal_remote_restart_and_on_site_repair_counts_once(scene: Scene) -> None:
    """GIVEN a kiosk application that fails its probes, comes back on the agent's own restart, fails again two
    minutes later, is restarted by the centre to no effect, is given up on by the agent (restart_failed) and is
    fixed by a technician on site; THEN one incident with one clock from the first failure, one breach, one
    dispatch, resolved on site (not "self-healed"); and the month's report counts one outage, one breach, one
    on-site recovery, and as downtime only the time the kiosk was down."""
    hall = await scene.start()
    kiosk = scene.device("kiosk-24h-1")
    kiosk.birth()
    t0 = scene.clock.now()
    app_fault(kiosk, "unhealthy", True, t0)
    kiosk.state("down", "ticket")
    first = await one_incident(hall, "open", device="kiosk-24h-1")

    scene.clock.advance(seconds=3)  # the agent's own restart brings it back
    kiosk.event("app.restart", {"app": "kiosk-app", "attempt": 1, "trigger": "probe", "ok": True})
    app_fault(kiosk, "unhealthy", False, scene.clock.now())
    kiosk.state("up")
    await one_incident(hall, "recovering", device="kiosk-24h-1")
    scene.clock.advance(seconds=6)
    kiosk.heartbeat()
    await one_incident(hall, "closed", device="kiosk-24h-1")

    scene.clock.advance(minutes=2)  # down again inside the flap window: the same outage, the same clock
    again_at = scene.clock.now()
    app_fault(kiosk, "unhealthy", True, again_at)
    kiosk.state("down", "ticket")
    again = await one_incident(hall, "open", device="kiosk-24h-1")
    assert (again.id, again.detected_at, again.flaps) == (first.id, t0, 1)

    async def restart_command() -> Any:
        rows = await hall.store.fetch(sa.select(commands).where(commands.c.name == "restart_app"))
        return rows[0] if rows else None

    command = await wait_until(restart_command, what="the centre's restart_app (T+0 long past)")
    scene.clock.advance(minutes=1)
    command_ack(kiosk, command.id, "restart_app", "succeeded")  # it ran; the application fails again
    scene.clock.advance(minutes=15)
    app_fault(kiosk, "restart_failed", True, again_at)  # the agent gives up
    await wait_until(lambda: _conditions(hall, first.id, 5), what="the given-up fault joining the outage")

    scene.clock.advance(minutes=13)  # t0 + 30:09: breach and dispatch, once
    await wait_until(lambda: hall.notifications(step="dispatch", state="sent"), what="the dispatch page")
    scene.clock.advance(minutes=15)
    await actions.dispatch_update(hall.store, first.id[:12], "on_site", by="tech.zhang", at=scene.clock.now())
    scene.clock.advance(minutes=5)  # fixed on site
    app_fault(kiosk, "restart_failed", False, scene.clock.now())
    app_fault(kiosk, "unhealthy", False, scene.clock.now())
    kiosk.state("up")
    fixed_at = scene.clock.now()
    await one_incident(hall, "recovering", device="kiosk-24h-1")
    scene.clock.advance(seconds=6)
    kiosk.heartbeat()
    closed = await one_incident(hall, "closed", device="kiosk-24h-1")

    assert (closed.id, closed.recovery, closed.recovered_by) == (first.id, "on_site", "tech.zhang")
    assert closed.breached_at is not None and closed.step == "breached"
    assert len(await hall.store.fetch(sa.select(dispatches))) == 1
    assert sorted(n.recipient for n in await hall.notifications(step="breach")) == ["wang", "zhang"]
    story = await steps_of(hall, first.id)
    assert any(t.startswith("抖动") for t in story) and any("自动远程处置: restart_app" in t for t in story)
    assert any(t.startswith("同一故障的又一表现") and "restart_failed" in t for t in story)

    report = await build_sla_report(hall.store, Sites({"qp": QINGPU}), "qp", "2026-11", now=scene.clock.now())
    (row,) = [d for d in report.devices if d.device == "kiosk-24h-1"]
    assert (row.incidents, row.breaches, row.self_healed, row.remote, row.on_site) == (1, 1, 0, 0, 1)
    assert row.down_s == pytest.approx(3 + (fixed_at - again_at).total_seconds()), "down while down, not between"
    assert row.mttr_s == pytest.approx((fixed_at - t0).total_seconds()), "restored when the outage ended"
    totals = report.totals()
    assert (totals.incidents, totals.breaches, totals.compliance_pct) == (1, 1, 0.0)


async def test_acknowledging_stops_escalation(scene: Scene) -> None:
    hall = await scene.start()
    kiosk = scene.device("kiosk-24h-1")
    kiosk.birth()
    kiosk.state("down")
    incident = await one_incident(hall, "open", kind="kiosk_down")
    scene.clock.advance(seconds=31)
    await wait_until(lambda: hall.notifications(step="opened", state="sent"), what="T+0 pages")
    await actions.ack(hall.store, incident.id[:12], by="zhang", at=scene.clock.now())
    scene.clock.advance(minutes=16)
    await hall.settle()
    assert await hall.notifications(step="escalation1") == []
    assert (await hall.incidents(id=incident.id))[0].acked_by == "zhang"


async def advance_alive(scene: Scene, devices: list[Device], hours: float) -> None:
    """Move hall time in steps a heartbeat covers, the devices heard at each step (as a live kiosk is)."""
    hall = scene.hall
    assert hall is not None
    while hours > 0:
        step = min(hours, 5.0)
        scene.clock.advance(hours=step)
        hours -= step
        for d in devices:
            d.heartbeat()
        from broker.store.schema import devices as devices_t

        async def heard() -> bool:
            rows = await hall.store.fetch(sa.select(devices_t.c.last_seen))
            return all(r.last_seen == scene.clock.now() for r in rows)

        await wait_until(heard, what="heartbeats at the new hall time")


async def test_outside_opening_hours_a_non_24_hour_kiosks_clock_pauses(scene: Scene) -> None:
    scene.clock.t = FRIDAY_1650
    hall = await scene.start()
    kiosk = scene.device("kiosk-1")  # not a 24-hour kiosk: opening hours only
    kiosk.birth()
    kiosk.state("down")
    incident = await one_incident(hall, "open", kind="kiosk_down")
    assert not incident.hours24

    scene.clock.advance(minutes=1)
    await wait_until(lambda: hall.notifications(step="opened"), what="T+0 at 16:50:30")
    await advance_alive(scene, [kiosk], hours=0.5)  # 17:21 Friday: 10 counted minutes only
    await advance_alive(scene, [kiosk], hours=63.3)  # Monday 08:39: 19 counted minutes
    await hall.settle()
    assert await hall.notifications(step="warning") == []
    assert (await hall.incidents(id=incident.id))[0].next_step_at == datetime(2026, 11, 30, 8, 40, tzinfo=HALL_ZONE)

    await advance_alive(scene, [kiosk], hours=2 / 60)  # Monday 08:41: the 20 counted minutes passed
    await wait_until(lambda: hall.notifications(step="warning"), what="the Monday-morning warning")
    row = (await hall.incidents(id=incident.id))[0]
    assert row.next_step_at == datetime(2026, 11, 30, 8, 50, tzinfo=HALL_ZONE), "breach at 30 counted minutes"
    assert await hall.notifications(step="breach") == []


async def test_a_hall_wide_outage_is_one_incident_and_one_page_not_twenty(scene: Scene) -> None:
    hall = await scene.start()
    kiosks = [scene.device(f"k{i:02d}") for i in range(20)]
    for k in kiosks:
        k.birth()
    await wait_until(lambda: hall.store.scalar(sa.text("SELECT count(*) = 20 FROM devices")), what="20 devices")
    for k in kiosks:
        k.will()  # the hall's switch lost power: every link dies at once
    await wait_until(lambda: hall.incidents(kind="hall_outage"), what="the hall outage")

    async def all_adopted() -> bool:
        rows = await hall.incidents(kind="offline")
        return len(rows) == 20 and all(r.parent_id for r in rows)

    await wait_until(all_adopted, what="20 device incidents under the hall incident")
    scene.clock.advance(minutes=1)
    await wait_until(lambda: hall.notifications(step="opened", state="sent"), what="the hall page")
    await hall.settle()
    top = [r for r in await hall.incidents() if r.parent_id is None]
    assert [(r.kind, r.device) for r in top] == [("hall_outage", "*")]
    opened = await hall.notifications(step="opened")
    assert {(n.ref, n.recipient) for n in opened} == {
        (f"incident:{top[0].id}", "zhang"),
        (f"incident:{top[0].id}", "li"),
    }
    assert len(scene.pages("/tech")) == 1 and "大厅整体故障" in scene.pages("/tech")[0]["subject"]

    for k in kiosks:  # power is back
        k.reconnect()
    await wait_until(lambda: _none_open(hall), what="every device back")
    scene.clock.advance(seconds=6)
    for k in kiosks:
        k.heartbeat()  # heard from after the recovery: it can be verified

    async def all_closed() -> bool:
        scene.clock.advance(seconds=1)  # hall time passes while recovery is verified
        return all(r.state == "closed" for r in await hall.incidents())

    await wait_until(all_closed, within_s=20, what="every incident closed")
    hall_row = (await hall.incidents(kind="hall_outage"))[0]
    assert hall_row.recovery == "self_healed"
    resolved = await hall.notifications(step="resolved")
    assert {(n.ref, n.recipient) for n in resolved} == {
        (f"incident:{hall_row.id}", "zhang"),
        (f"incident:{hall_row.id}", "li"),
    }


async def test_failed_deliveries_are_retried_and_shown_never_lost(scene: Scene, http: HttpServer) -> None:
    scene.alerts = alerts(
        http,
        channels={
            "mail": {"type": "smtp", "host": "127.0.0.1", "port": 9, "security": "none", "sender": "hf@example.cn"}
        },
        recipients={"chen": {"role": "technician", "channel": "mail", "address": "chen@example.cn"}},
    )
    http.replies_for["/tech"] = [Reply(status=500), Reply(status=500)]  # zhang's webhook fails twice
    hall = await scene.start()
    kiosk = scene.device("kiosk-24h-1")
    kiosk.birth()
    kiosk.state("down")
    await one_incident(hall, "open", kind="kiosk_down")
    scene.clock.advance(seconds=31)

    async def failed_once() -> Any:
        rows = await hall.notifications(recipient="zhang")
        return rows and rows[0].attempts == 1 and rows[0].state == "pending" and rows

    (zhang,) = await wait_until(failed_once, what="a first failed attempt")
    assert "500" in zhang.last_error
    await wait_until(lambda: _attempted(hall, "chen"), what="the SMTP attempt")
    (chen,) = await hall.notifications(recipient="chen")
    assert chen.state == "pending" and chen.last_error, "SMTP down: kept, with the reason"

    scene.clock.advance(seconds=11)  # first retry: 500 again
    await wait_until(lambda: _attempted(hall, "zhang", 2), what="the second attempt")
    scene.clock.advance(seconds=21)  # second retry: delivered
    await wait_until(lambda: hall.notifications(recipient="zhang", state="sent"), what="delivery after retries")
    assert len(scene.pages("/tech")) == 3
    (chen,) = await hall.notifications(recipient="chen")
    assert chen.state == "pending" and chen.attempts >= 2, "still being retried while SMTP is down"


async def _all_sent(hall: Hall, n: int) -> bool:
    rows = await hall.notifications()
    return len(rows) == n and all(r.state == "sent" for r in rows)


async def _none_open(hall: Hall) -> bool:
    return not [r for r in await hall.incidents(kind="offline") if r.state == "open"]


async def _attempted(hall: Hall, recipient: str, n: int = 1) -> bool:
    rows = await hall.notifications(recipient=recipient)
    return bool(rows) and rows[0].attempts >= n and rows[0].claimed_until is None


async def test_a_consumer_restart_mid_incident_keeps_the_clock(scene: Scene) -> None:
    hall = await scene.start()
    kiosk = scene.device("kiosk-24h-1")
    kiosk.birth()
    kiosk.state("down")
    incident = await one_incident(hall, "open", kind="kiosk_down")
    scene.clock.advance(seconds=31)
    await wait_until(lambda: _all_sent(hall, 2), what="T+0 pages")
    await hall.stop()
    scene.hall = None

    scene.clock.advance(minutes=21)  # the consumer was away across the warning time
    hall = await scene.start()
    await wait_until(lambda: hall.notifications(step="warning", state="sent"), what="the warning after restart")
    await hall.settle()
    row = (await hall.incidents(id=incident.id))[0]
    assert row.detected_at == incident.detected_at and row.step == "warned"
    assert len(await hall.notifications(step="opened")) == 2, "T+0 pages were not sent again"
    assert len(scene.pages("/tech")) == 2


async def test_two_consumers_take_each_step_once(scene: Scene) -> None:
    first = await scene.start("a")
    second = await start_hall(
        consumer_config(scene.mosquitto.port, scene.store_url, {"qp": QINGPU}, scene.alerts, "b"), scene.clock
    )
    try:
        kiosk = scene.device("kiosk-24h-1")
        kiosk.birth()
        kiosk.state("down")
        await one_incident(first, "open", kind="kiosk_down")
        scene.clock.advance(seconds=31)
        await wait_until(lambda: first.notifications(step="opened", state="sent"), what="T+0 pages")
        scene.clock.advance(minutes=20)
        await wait_until(lambda: first.notifications(step="warning", state="sent"), what="the warning")
        await asyncio.sleep(0.5)
        assert len(await first.store.fetch(sa.select(commands))) == 1
        assert len(scene.pages("/tech")) == 2 and len(scene.pages("/staff")) == 1
    finally:
        await second.stop()


async def test_a_flapping_kiosk_keeps_one_incident_and_one_clock(scene: Scene) -> None:
    hall = await scene.start()
    kiosk = scene.device("kiosk-24h-1")
    kiosk.birth()
    kiosk.state("down")
    first = await one_incident(hall, "open", kind="kiosk_down")
    scene.clock.advance(seconds=2)
    kiosk.state("up")
    await one_incident(hall, "recovering", kind="kiosk_down")
    scene.clock.advance(seconds=6)
    kiosk.heartbeat()
    await one_incident(hall, "closed", kind="kiosk_down")
    scene.clock.advance(minutes=3)  # inside the 10-minute flap window
    kiosk.state("down")
    again = await one_incident(hall, "open", kind="kiosk_down")
    assert again.id == first.id and again.flaps == 1 and again.detected_at == first.detected_at


async def test_a_forecast_raises_the_restock_task_before_a_24_hour_kiosk_runs_dry_overnight(scene: Scene) -> None:
    await scene.register_24_hour("kiosk-24h-1")
    hall = await scene.start()
    kiosk = scene.device("kiosk-24h-1")
    kiosk.birth()
    for hour in range(7):  # 10:00 .. 16:00, 20 tickets an hour
        if hour:
            scene.clock.advance(hours=1)
        kiosk.event("kiosk.usage", {"counters": {"tickets": 20 * hour}})
        kiosk.event("kiosk.consumable", {"consumable": "thermal_paper", "state": "ok"})
        await hall.settle(2)
    assert await hall.store.fetch(sa.select(tasks)) == [], "paper ok: nothing to do"

    scene.clock.advance(minutes=5)  # 16:05 (hall time only moves forward: planning is paced by it)
    kiosk.event("kiosk.consumable", {"consumable": "thermal_paper", "state": "low"})  # near-end: ~150 left
    scene.clock.advance(minutes=1)

    async def restock() -> Any:
        scene.clock.advance(seconds=1)  # planning runs every plan_every_s of hall time
        rows = await hall.store.fetch(sa.select(tasks).where(tasks.c.kind == "restock"))
        return rows[0] if rows else None

    task = await wait_until(restock, what="a restock task")
    assert task.item == "thermal_paper" and task.state == "open"
    assert task.due_at <= datetime(2026, 11, 24, 17, 0, tzinfo=HALL_ZONE), "before the staff leave"
    await wait_until(lambda: hall.notifications(step="restock", state="sent"), what="the restock notice")
    assert [n.recipient for n in await hall.notifications(step="restock")] == ["li"]
    assert "热敏纸" in scene.pages("/staff")[0]["text"]

    kiosk.event("kiosk.consumable", {"consumable": "thermal_paper", "state": "ok"})  # staff put a new roll in
    await wait_until(lambda: _task_state(hall, task.id, "done"), what="the refill closing the task")


async def _task_state(hall: Hall, task_id: str, state: str) -> bool:
    rows = await hall.store.fetch(sa.select(tasks.c.state).where(tasks.c.id == task_id))
    return rows[0].state == state


async def test_a_kiosk_named_24h_that_nobody_registered_counts_opening_hours_until_it_is_registered(
    store_url: str,
) -> None:
    """GIVEN kiosk-24h-1 in service since Monday 00:00 at a site with the default settings, its 24-hour status not
    registered WHEN its SLA time is counted on Friday 16:50 THEN the hall's opening hours count (its name decides
    nothing, issue 17 item 6: the default always_on is empty); once IT registers it as a 24-hour device
    (register_devices, as `hallfleet provision sync` writes it) wall-clock time counts, for the incident rules'
    reads and the monthly report alike."""
    from broker.rules.incident_reads import BatchReads
    from broker.store.schema import devices as devices_t

    monday, site = datetime(2026, 11, 23, tzinfo=HALL_ZONE), SiteConfig()
    sites = Sites({"qp": site})
    row = {"key": "qp/kiosk-24h-1", "site": "qp", "device": "kiosk-24h-1", "role": "kiosk", "presence": "online"}

    async def counted() -> tuple[bool, bool, float]:
        async with store.engine.begin() as conn:
            hours24 = await BatchReads(conn, sites).hours24("qp", "kiosk-24h-1")
        (device,) = (await build_sla_report(store, sites, "qp", "2026-11", now=FRIDAY_1650)).devices
        return hours24, device.hours24, device.counted_s

    store = await Store.open(store_url)
    try:
        async with store.engine.begin() as conn:
            await conn.execute(devices_t.insert().values(**row, first_seen=monday, last_seen=FRIDAY_1650))
        assert site.always_on == []
        assert await counted() == (False, False, site.site_calendar.open_seconds(monday, FRIDAY_1650))
        async with store.engine.begin() as conn:
            await register_devices(conn, [Registered("qp", "kiosk-24h-1", "kiosk", True)], by="wang.li", at=monday)
        assert await counted() == (True, True, (FRIDAY_1650 - monday).total_seconds())
    finally:
        await store.close()


async def test_a_kiosk_registered_24_hour_before_it_ever_connected_is_timed_wall_clock_from_its_first_event(
    scene: Scene,
) -> None:
    """GIVEN the registry's 24-hour status pushed to the centre days before the kiosks connect (kiosk-1 moved into
    the 24-hour area; kiosk-24h-1 registered as an opening-hours kiosk although its name matches the deprecated
    pattern) WHEN both first connect on Friday 16:40 and go down at once THEN kiosk-1's clock counts wall-clock
    time (breach at 17:10, after closing: on site by Monday's close) and kiosk-24h-1's pauses at 17:00; before
    their first event neither is a device in service (not in the report) and each life starts at its first
    event, not at its registration; each registration is audited."""
    from broker.store.db import Store
    from broker.store.schema import audit_log
    from broker.store.schema import devices as devices_t

    registered_at = TUESDAY_10
    store = await Store.open(scene.store_url)
    try:
        entries = [Registered("qp", "kiosk-1", "kiosk", True), Registered("qp", "kiosk-24h-1", "kiosk", False)]
        async with store.engine.begin() as conn:
            changes = await register_devices(conn, entries, by="wang.li", at=registered_at)
            assert [(ch.key, ch.before, ch.after, ch.created) for ch in changes] == [
                ("qp/kiosk-1", None, True, True),
                ("qp/kiosk-24h-1", None, False, True),
            ]
            assert await register_devices(conn, entries, by="wang.li", at=registered_at) == [], "already so"
        report = await build_sla_report(store, Sites({"qp": QINGPU}), "qp", "2026-11", now=FRIDAY_1650)
        assert report.devices == [], "registered but never connected: not in service"
    finally:
        await store.close()

    scene.clock.t = FRIDAY_1650 - timedelta(minutes=10)
    hall = await scene.start()  # a consumer started after the registration
    moved, named = scene.device("kiosk-1"), scene.device("kiosk-24h-1")
    for k in (moved, named):
        k.birth()
        k.state("down")
    a = await one_incident(hall, "open", device="kiosk-1")
    b = await one_incident(hall, "open", device="kiosk-24h-1")
    assert (a.hours24, b.hours24) == (True, False)
    rows = await hall.store.fetch(sa.select(devices_t.c.key, devices_t.c.first_seen).order_by(devices_t.c.key))
    assert [(r.key, r.first_seen) for r in rows] == [("qp/kiosk-1", scene.clock.t), ("qp/kiosk-24h-1", scene.clock.t)]

    scene.clock.advance(minutes=21)  # 17:01: both warned (20 counted minutes), then kiosk-24h-1's clock stops
    await wait_until(lambda: hall.notifications(step="warning"), what="the warnings")
    for _ in range(2):
        scene.clock.advance(minutes=5)  # 17:11: kiosk-1 breached at 17:10 wall-clock, kiosk-24h-1 paused at 17:00
        for k in (moved, named):
            k.heartbeat()
        await hall.settle()
    await wait_until(lambda: hall.notifications(step="dispatch"), what="kiosk-1's dispatch")
    steps = {r.device: r.step for r in await hall.incidents()}
    assert (steps["kiosk-1"], steps["kiosk-24h-1"]) == ("breached", "warned")
    (dispatch,) = await hall.store.fetch(sa.select(dispatches))
    assert dispatch.key == "qp/kiosk-1"
    assert dispatch.due_at == datetime(2026, 11, 30, 17, 0, tzinfo=HALL_ZONE), "after closing: next working day"
    a_ = audit_log.c
    audits = await hall.store.fetch(sa.select(a_.action, a_.target, a_.at).where(a_.action == "device.hours24"))
    assert [tuple(r) for r in audits] == [
        ("device.hours24", "qp/kiosk-1", registered_at),
        ("device.hours24", "qp/kiosk-24h-1", registered_at),
    ]


def _hall(d: str, hm: str) -> datetime:
    return datetime.fromisoformat(f"{d}T{hm}").replace(tzinfo=HALL_ZONE)


# QP 000:401 「远程无法解决的问题, 技术公司工作人员在工作日内及时到达」: on site within the working day; with less than
# onsite_min_open_min (60) of opening time left, within the next one. Qingpu's test hours: 08:30-11:30, 13:00-17:00.
ONSITE_CASES = [
    # (opened at, onsite_min_open_min, due by, why)
    ("2026-11-24T10:00", 60, "2026-11-24T17:00", "Tuesday morning: today's close"),
    ("2026-11-24T12:00", 60, "2026-11-24T17:00", "lunch break: four open hours left today"),
    ("2026-11-24T16:00", 60, "2026-11-24T17:00", "exactly an hour left: still today"),
    ("2026-11-24T16:01", 60, "2026-11-25T17:00", "59 minutes left: tomorrow's close"),
    ("2026-11-24T16:59", 60, "2026-11-25T17:00", "a minute before closing: tomorrow's close"),
    ("2026-11-24T16:59", 0, "2026-11-24T17:00", "onsite_min_open_min 0: same day while open"),
    ("2026-11-24T17:00", 0, "2026-11-25T17:00", "at closing: the next working day"),
    ("2026-11-24T21:30", 60, "2026-11-25T17:00", "after closing (a 24-hour kiosk): the next working day"),
    ("2026-11-27T16:59", 60, "2026-11-30T17:00", "Friday a minute before closing: Monday"),
    ("2026-11-28T10:00", 60, "2026-11-30T17:00", "Saturday: Monday"),
    ("2026-05-08T16:30", 60, "2026-05-09T17:00", "Friday before the 调休 Saturday (2026-05-09 works): Saturday"),
    ("2026-05-08T17:30", 60, "2026-05-09T17:00", "Friday evening before the 调休 Saturday: Saturday"),
    ("2026-09-30T16:30", 60, "2026-10-08T17:00", "before National Day: the first working day after the holiday"),
]


@pytest.mark.parametrize(("opened", "min_open", "due", "why"), ONSITE_CASES, ids=[c[3] for c in ONSITE_CASES])
def test_the_on_site_deadline_is_within_the_working_day_or_the_next_when_too_little_is_left(
    opened: str, min_open: float, due: str, why: str
) -> None:
    site = QINGPU.model_copy(update={"sla": QINGPU.sla.model_copy(update={"onsite_min_open_min": min_open})})
    assert site.onsite_due(_hall(*opened.split("T"))) == _hall(*due.split("T")), why


# -- after a storm --------------------------------------------------------------------------------
STORM_KIOSKS = 1400  # a 5 % storm over a fleet of 28,000 devices (issue 19)


async def storm(store: Store, rules: IncidentRules, kiosks: int, at: datetime) -> None:
    """``kiosks`` kiosks online, then each one's application down at ``at``: that many open incidents."""
    b = Batch()
    for n in range(kiosks):
        s = StatusMessage(state=Presence.ONLINE, session=1, boot_id="b", ts=at, heartbeat_s=3600, role="kiosk")
        b.statuses.append(StatusUpdate("qp", f"k{n:04d}", s, False, at))
        b.seen[DeviceKey("qp", f"k{n:04d}")] = at
    await store.write(b)
    async with store.engine.begin() as conn:
        down = [Signal("qp", f"k{n:04d}", "kiosk_down", True, "critical", at, at, "down") for n in range(kiosks)]
        await rules.apply(conn, down)


@pytest.mark.parametrize("kiosks", [20, STORM_KIOSKS])
async def test_the_tick_after_a_storm_takes_a_bounded_number_of_statements(store_url: str, kiosks: int) -> None:
    """The first tick after a storm acts on every incident (a remote restart and its audit row, a page, the
    timeline) with the same few statements whether 20 or 1,400 are due: 1,400 x ten statements took seconds."""
    sites = Sites({"qp": QINGPU.model_copy(update={"hall_outage": HallOutagePolicy(min_devices=10_000)})})
    store = await Store.open(store_url)
    try:
        rules = IncidentRules(sites, store.roles)
        await storm(store, rules, kiosks, TUESDAY_10)
        router = Router(AlertsConfig.model_validate(alerts(HttpServer())))
        clock = SlaClock(store.engine, sites, router, plan_every_s=1e9)
        counted = Statements(store)
        result = await clock.tick(TUESDAY_10 + timedelta(seconds=31))  # T+0 of every incident is due

        assert counted.count <= 40, f"{counted.count} statements for {kiosks} incidents"
        assert await store.scalar(sa.select(sa.func.count()).where(incidents.c.step == "acted")) == kiosks
        assert len(result.commands) == kiosks and len(result.notices) == kiosks
        assert await store.scalar(sa.select(sa.func.count()).select_from(commands)) == kiosks
        n = notifications.c
        paged = sa.select(sa.func.count()).where(n.step == "opened", n.recipient == "zhang")
        assert await store.scalar(paged) == kiosks
        notes = sa.select(incident_timeline.c.text).where(incident_timeline.c.incident_id == result.notices[-1].ref[9:])
        texts = [r.text for r in await store.fetch(notes.order_by(incident_timeline.c.id))]
        assert texts[-2:] == ["自动远程处置: restart_app", "通知 li, zhang (opened)"], texts
        async with store.engine.connect() as conn:
            verdict = await verify_chain(conn, "audit", "2026-11")
        assert verdict.ok and verdict.links == kiosks, "the commands' audit rows chain as if written one by one"

        counted.count = 0
        again = await clock.tick(TUESDAY_10 + timedelta(seconds=32))
        assert again.commands == [] and again.notices == [] and counted.count <= 12
    finally:
        await store.close()
