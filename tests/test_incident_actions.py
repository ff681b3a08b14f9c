"""People's actions on incidents, and how a recovery is classified, on both stores (no broker needed:
the rules and the SLA clock run on the store with a fixed hall time)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.alerts.routing import AlertsConfig, Router
from broker.ingest.rules_stage import RulesStage
from broker.rules import actions
from broker.rules.incidents import IncidentRules, Signal
from broker.rules.sla import SlaClock
from broker.sites import SiteConfig, Sites, SlaPolicy
from broker.store import commands as cmd_sql
from broker.store.db import Batch, StatusUpdate, Store, Written
from broker.store.keys import DeviceKey
from broker.store.schema import audit_log, commands, incident_conditions, incident_timeline, incidents, notifications
from hallfleet.cli import main
from protocol.commands import CommandAck, CommandState
from protocol.envelope import Presence, StatusMessage
from runtime.clock import HALL_ZONE

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=HALL_ZONE)
KEY = "qp/kiosk-24h-1"
DEV = DeviceKey("qp", "kiosk-24h-1")
SITES = Sites({"qp": SiteConfig(sla=SlaPolicy(act_after_s=30, verify_s=5))})


class Rig:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.rules = IncidentRules(SITES, store.roles)
        self.clock = SlaClock(store.engine, SITES, Router(AlertsConfig()))

    async def online(self, at: datetime) -> None:
        status = StatusMessage(state=Presence.ONLINE, session=1, boot_id="b", ts=at, heartbeat_s=60, role="kiosk")
        b = Batch(statuses=[StatusUpdate("qp", "kiosk-24h-1", status, False, at)])
        b.seen[DEV] = at
        await self.store.write(b, self.after)

    async def heard(self, at: datetime) -> None:
        await self.store.write(Batch(seen={DEV: at}), self.after)

    async def after(self, conn: AsyncConnection, written: Written) -> None:
        """The consumer's rules stage: presence transitions the write made become incidents."""
        await RulesStage(self.rules).after_commit(conn, written, ())

    async def signal(self, active: bool, at: datetime, kind: str = "kiosk_down") -> None:
        async with self.store.engine.begin() as conn:
            await self.rules.apply(conn, [Signal("qp", "kiosk-24h-1", kind, active, "critical", at, at, "test")])

    async def incident(self) -> sa.Row:
        (row,) = await self.store.fetch(sa.select(incidents))
        return row


@pytest.fixture
async def rig(store_url: str) -> AsyncIterator[Rig]:
    store = await Store.open(store_url)
    try:
        yield Rig(store)
    finally:
        await store.close()


async def test_a_remote_command_that_succeeded_makes_it_a_remote_recovery(rig: Rig) -> None:
    await rig.online(T0)
    await rig.signal(True, T0)
    await rig.clock.tick(T0 + timedelta(seconds=31))  # T+0: restart_app queued by the rules
    (cmd,) = await rig.store.fetch(sa.select(commands))
    async with rig.store.engine.begin() as conn:
        for state in (CommandState.DELIVERED, CommandState.RUNNING, CommandState.SUCCEEDED):
            ack = CommandAck(command_id=cmd.id, name=cmd.name, state=state)
            await cmd_sql.apply_ack(conn, KEY, ack, T0 + timedelta(seconds=40))
    await rig.signal(False, T0 + timedelta(seconds=45))
    await rig.heard(T0 + timedelta(seconds=50))
    await rig.clock.tick(T0 + timedelta(seconds=51))
    row = await rig.incident()
    assert (row.state, row.recovery, row.recovered_by) == ("closed", "remote", "restart_app (sla-rules)")


async def test_no_heartbeat_after_the_clear_means_no_verified_recovery(rig: Rig) -> None:
    await rig.online(T0)
    await rig.signal(True, T0)
    await rig.signal(False, T0 + timedelta(seconds=5))
    await rig.clock.tick(T0 + timedelta(minutes=5))
    assert (await rig.incident()).state == "recovering", "the device went quiet: recovery unproven"
    await rig.heard(T0 + timedelta(minutes=5, seconds=1))
    await rig.clock.tick(T0 + timedelta(minutes=5, seconds=2))
    assert (await rig.incident()).state == "closed"


async def test_an_older_clear_does_not_close_a_newer_failure(rig: Rig) -> None:
    """Shared subscriptions may deliver one device's events out of order across consumers."""
    await rig.online(T0)
    await rig.signal(True, T0 + timedelta(seconds=10))
    await rig.signal(False, T0 + timedelta(seconds=5))
    assert (await rig.incident()).state == "open"


async def test_staff_report_records_its_time_or_opens_a_reported_incident(rig: Rig) -> None:
    await rig.online(T0)
    reported = T0 - timedelta(minutes=3)
    opened = await actions.staff_reported(rig.store, SITES, KEY, by="li", at=T0, reported_at=reported, text="屏幕黑屏")
    row = await rig.incident()
    assert (row.id, row.kind, row.staff_reported_at, row.detected_at) == (opened, "reported", reported, reported)
    await rig.signal(True, T0 + timedelta(seconds=1))  # then hallfleet sees it too
    again = await actions.staff_reported(rig.store, SITES, KEY, by="zhou", at=T0, reported_at=T0)
    assert again == opened, "recorded on the open incidents, not a new one"
    audits = await rig.store.fetch(sa.select(audit_log.c.action, audit_log.c.actor))
    assert [tuple(a) for a in audits] == [("incident.reported", "li"), ("incident.reported", "zhou")]
    await actions.clear_reported(rig.store, SITES, KEY, by="zhang", at=T0 + timedelta(minutes=30))
    # One outage: the staff report and what hallfleet saw are its conditions; it is over when both are.
    (row,) = await rig.store.fetch(sa.select(incidents))
    assert (row.id, row.state, row.detected_at) == (opened, "open", reported)
    k = incident_conditions.c
    active = await rig.store.fetch(sa.select(k.kind).where(k.incident_id == opened, k.open_key.is_not(None)))
    assert [r.kind for r in active] == ["kiosk_down"]


async def test_a_technician_on_site_before_recovery_makes_it_an_on_site_recovery(rig: Rig) -> None:
    await rig.online(T0)
    await rig.signal(True, T0)
    for minutes in (0.6, 21, 31):
        await rig.clock.tick(T0 + timedelta(minutes=minutes))
    row = await rig.incident()
    assert row.step == "breached"
    with pytest.raises(actions.ActionError, match="on_site or done"):
        await actions.dispatch_update(rig.store, row.id, "gone", by="zhang", at=T0)
    await actions.dispatch_update(rig.store, row.id[:10], "on_site", by="zhang", at=T0 + timedelta(minutes=90))
    await rig.signal(False, T0 + timedelta(minutes=100))
    await rig.heard(T0 + timedelta(minutes=101))
    await rig.clock.tick(T0 + timedelta(minutes=102))
    row = await rig.incident()
    assert (row.state, row.recovery, row.recovered_by) == ("closed", "on_site", "zhang")
    with pytest.raises(actions.ActionError, match="no incident"):
        await actions.ack(rig.store, "ffff", by="x", at=T0)


async def test_a_failed_notification_can_be_requeued_and_only_a_failed_one(rig: Rig) -> None:
    async with rig.store.engine.begin() as conn:
        await conn.execute(
            notifications.insert().values(
                dedup_key="incident:x|opened|zhang", ref="incident:x", step="opened", recipient="zhang",
                channel="hook", site="qp", severity="critical", subject="s", body="b", state="failed",
                created_at=T0, due_at=T0, attempts=9, last_error="HTTP 404",
            )
        )  # fmt: skip
    (n,) = await rig.store.fetch(sa.select(notifications))
    await actions.retry_notification(rig.store, n.id, by="wang", at=T0 + timedelta(hours=1))
    (n,) = await rig.store.fetch(sa.select(notifications))
    assert (n.state, n.due_at) == ("pending", T0 + timedelta(hours=1))
    with pytest.raises(actions.ActionError, match="not a failed one"):
        await actions.retry_notification(rig.store, n.id, by="wang", at=T0)


async def test_cli_lists_shows_acks_and_notes_in_chinese(
    rig: Rig, store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await rig.online(T0)
    await rig.signal(True, T0)
    row = await rig.incident()
    config = tmp_path / "centre.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n')
    base = ["--config", str(config), "--by", "zhang"]

    async def cli(*args: str) -> int:  # the CLI runs its own event loop, as from a shell
        return await asyncio.to_thread(main, [*args, *base])

    assert await cli("incident", "list") == 0
    assert "停止服务" in capsys.readouterr().out
    assert await cli("incident", "ack", row.id[:12]) == 0
    assert await cli("incident", "note", row.id[:12], "已联系厂家") == 0
    assert await cli("incident", "show", row.id[:12]) == 0
    out = capsys.readouterr().out
    assert "zhang 已确认 (cli)" in out and "已联系厂家" in out
    assert await cli("incident", "ack", "nope") == 1
    assert "no incident 'nope'" in capsys.readouterr().err
    texts = await rig.store.fetch(sa.select(incident_timeline.c.entry).order_by(incident_timeline.c.id))
    assert [t.entry for t in texts] == ["signal", "ack", "note"]
