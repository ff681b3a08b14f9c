"""The SLA clock: steps of open incidents, verified recovery, hall-wide outages, escalation, dispatches.

Every timer is a column (``incidents.next_step_at``, ``dispatches.due_at``...), so the clock survives a
consumer restart and runs on several consumers at once: each step is taken by a conditional UPDATE
(``WHERE step = <the step before>``), and only the consumer whose UPDATE changed the row acts on it.

Steps (per site, broker/sites.py SlaPolicy): T+0 (after ``act_after_s``) remediation through the command
channel and the first page; warning at ``warn_after_min``; breach at ``breach_after_min`` with an on-site
dispatch due on site within the working day (``onsite_min_open_min``: the next one's when today is nearly
over). A 24-hour device counts wall-clock time; any other counts only the hall's opening hours, so its clock
pauses at night, at weekends and on holidays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.alerts.routing import Router
from broker.rules import consumables, maintenance
from broker.rules.incidents import (
    HALL_OUTAGE,
    OUTAGE_KINDS,
    SEVERITY_RANK,
    hours_of,
    kind_label,
    registered_hours24,
    step_due,
    timeline,
)
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store import commands as cmd_sql
from broker.store.db import _insert_ignore, heard_from
from broker.store.keys import DeviceKey
from broker.store.schema import commands, devices, dispatches, incident_conditions, incidents, notifications
from protocol.commands import Command, CommandState
from protocol.ids import uuid7

log = logging.getLogger(__name__)

RULES_ACTOR = "sla-rules"
REMEDIATION_TTL_S = 300


@dataclass(slots=True)
class TickResult:
    commands: list[tuple[DeviceKey, Command]] = field(default_factory=list)  # (device, command) to publish
    notices: list[Notice] = field(default_factory=list)


class SlaClock:
    def __init__(self, engine: AsyncEngine, sites: Sites, router: Router, plan_every_s: float = 300.0) -> None:
        self.engine = engine
        self.sites = sites
        self.router = router
        self.plan_every_s = plan_every_s
        self._last_plan: datetime | None = None

    async def tick(self, now: datetime) -> TickResult:
        out = TickResult()
        async with self.engine.begin() as conn:
            await self._hall_outages(conn, now, out)
        async with self.engine.begin() as conn:
            await self._steps(conn, now, out)
        async with self.engine.begin() as conn:
            await self._verify(conn, now, out)
            await self._escalate(conn, now, out)
            await self._dispatches_overdue(conn, now, out)
        if self._last_plan is None or (now - self._last_plan).total_seconds() >= self.plan_every_s:
            self._last_plan = now
            async with self.engine.begin() as conn:
                for n in await consumables.plan_restock(conn, now, self.sites):
                    await self._notify(conn, n, now, out)
                for n in await maintenance.check_maintenance(conn, now, self.sites):
                    await self._notify(conn, n, now, out)
        return out

    # -- notices ------------------------------------------------------------------------------------
    async def _notify(self, conn: AsyncConnection, n: Notice, now: datetime, out: TickResult) -> None:
        out.notices.append(n)
        who = await self.router.enqueue(conn, n, now)
        if who and n.ref.startswith("incident:"):
            await timeline(conn, n.ref.removeprefix("incident:"), now, "notify", f"通知 {', '.join(who)} ({n.step})")

    def _notice(self, row: Any, step: str, now: datetime, summary_zh: str, summary_en: str, **facts: Any) -> Notice:
        return Notice(
            ref=f"incident:{row.id}",
            step=step,
            site=row.site,
            device=row.device,
            device_class=row.device_class,
            kind=row.kind,
            severity=row.severity,
            summary_zh=summary_zh,
            summary_en=summary_en,
            facts={"at": now.isoformat(), "detected_at": row.detected_at.isoformat(), **facts},
        )

    async def _inhibited(self, conn: AsyncConnection, row: Any) -> str | None:
        """Why this incident should not page: a hall-wide outage covers it, or its device has a graver
        incident open (a kiosk that is offline need not also page for its printer)."""
        if row.parent_id is not None:
            return "covered by the hall-wide outage"
        c = incidents.c
        graver = [s for s, rank in SEVERITY_RANK.items() if rank > SEVERITY_RANK[row.severity]]
        other = await conn.scalar(
            sa.select(c.kind).where(c.key == row.key, c.state != "closed", c.severity.in_(graver)).limit(1)
        )
        return f"device has a graver incident open ({other})" if other else None

    # -- steps --------------------------------------------------------------------------------------
    async def _steps(self, conn: AsyncConnection, now: datetime, out: TickResult) -> None:
        c = incidents.c
        due = await conn.execute(
            sa.select(incidents).where(c.state == "open", c.next_step_at <= now).order_by(c.next_step_at).limit(500)
        )
        for row in due.all():
            site = self.sites[row.site]
            new_step = {"new": "acted", "acted": "warned", "warned": "breached"}.get(row.step)
            if new_step is None:
                continue
            # One clock from the outage's start, on the hours decided when it opened.
            nxt = step_due(site.sla, hours_of(site, row.hours24), row.detected_at, new_step)
            changed = await conn.execute(
                incidents.update().where(c.id == row.id, c.step == row.step).values(step=new_step, next_step_at=nxt)
            )
            if changed.rowcount != 1:
                continue  # another consumer took this step
            await getattr(self, f"_step_{new_step}")(conn, row, now, out)

    async def _step_acted(self, conn: AsyncConnection, row: Any, now: datetime, out: TickResult) -> None:
        await self._remediate(conn, row, now, out)
        await self._page(conn, row, "opened", now, out, f"{kind_label(row.kind)}: {row.summary}", row.summary)

    async def _step_warned(self, conn: AsyncConnection, row: Any, now: datetime, out: TickResult) -> None:
        sla = self.sites[row.site].sla
        zh = f"已持续 {sla.warn_after_min:g} 分钟未恢复, {sla.breach_after_min:g} 分钟时超时: {row.summary}"
        en = f"not restored after {sla.warn_after_min:g} min; SLA breach at {sla.breach_after_min:g} min: {row.summary}"
        await self._page(conn, row, "warning", now, out, zh, en)

    async def _step_breached(self, conn: AsyncConnection, row: Any, now: datetime, out: TickResult) -> None:
        site = self.sites[row.site]
        reason = f"{site.sla.breach_after_min:g} 分钟内未能远程恢复: {row.summary}"
        await conn.execute(
            incidents.update().where(incidents.c.id == row.id).values(breached_at=now, breach_reason=reason[:500])
        )
        await timeline(conn, row.id, now, "step", f"超时: {reason}")
        await self._page(conn, row, "breach", now, out, reason, f"SLA breached: not restored remotely: {row.summary}")
        if site.sla.dispatch_on_breach and row.device != "*":
            if (why := await self._inhibited(conn, row)) is not None:
                # One trip for one device: the graver incident's dispatch (or the hall's) covers this one.
                await timeline(conn, row.id, now, "step", f"不单独派单 ({why})")
                return
            due = site.onsite_due(now)
            dispatch_id = uuid7()
            await conn.execute(
                _insert_ignore(conn, dispatches).values(
                    id=dispatch_id,
                    incident_id=row.id,
                    key=row.key,
                    site=row.site,
                    opened_at=now,
                    due_at=due,
                    state="open",
                )
            )
            await timeline(
                conn,
                row.id,
                now,
                "step",
                f"派单上门, 须在 {due.astimezone(site.site_calendar.zone):%Y-%m-%d %H:%M} 前到场",
            )
            zh = f"请在 {due.astimezone(site.site_calendar.zone):%m-%d %H:%M} 前到现场处理: {row.summary}"
            en = f"go on site before {due.astimezone(site.site_calendar.zone):%m-%d %H:%M}: {row.summary}"
            await self._page(conn, row, "dispatch", now, out, zh, en, dispatch_id=dispatch_id, due_at=due.isoformat())

    async def _page(
        self, conn: AsyncConnection, row: Any, step: str, now: datetime, out: TickResult, zh: str, en: str, **facts: Any
    ) -> None:
        why = await self._inhibited(conn, row)
        if why is not None:
            await timeline(conn, row.id, now, "step", f"{step}: 不单独通知 ({why})")
            return
        await self._notify(conn, self._notice(row, step, now, zh, en, **facts), now, out)

    async def _remediate(self, conn: AsyncConnection, row: Any, now: datetime, out: TickResult) -> None:
        """T+0: the remote fix the hall's rules ask for first (e.g. restart_app), if the device can hear it and
        its application is what failed (the kiosk down, or an application fault)."""
        k = incident_conditions.c
        active = await conn.execute(sa.select(k.kind).where(k.incident_id == row.id, k.open_key.is_not(None)))
        if not any(_remediable(r.kind) for r in active):
            return
        presence = await conn.scalar(sa.select(devices.c.presence).where(devices.c.key == row.key))
        if presence != "online":
            await timeline(conn, row.id, now, "step", f"设备{presence or '未知'}, 无法远程处置")
            return
        for name in self.sites[row.site].sla.remediation:
            cmd = Command(
                id=uuid7(),
                name=name,
                args={},
                issuer=RULES_ACTOR,
                reason=f"incident {row.id}: {row.kind}",
                issued_at=now,
                expires_at=now + timedelta(seconds=REMEDIATION_TTL_S),
            )
            await cmd_sql.insert_command(conn, row.key, cmd)
            await timeline(conn, row.id, now, "command", f"自动远程处置: {name}", command_id=cmd.id)
            out.commands.append((DeviceKey(row.site, row.device), cmd))

    # -- recovery -----------------------------------------------------------------------------------
    async def _verify(self, conn: AsyncConnection, now: datetime, out: TickResult) -> None:
        """Close what stayed clear for ``verify_s`` while the device was heard from after it cleared."""
        c, d = incidents.c, devices.c
        rows = await conn.execute(
            sa.select(incidents, d.presence, d.last_seen)
            .select_from(incidents.outerjoin(devices, d.key == c.key))
            .where(c.state == "recovering")
            .limit(500)
        )
        for row in rows.all():
            verify_s = self.sites[row.site].sla.verify_s
            if row.cleared_at > now - timedelta(seconds=verify_s):
                continue
            if row.device != "*" and not (
                row.presence == "online" and row.last_seen and row.last_seen > row.cleared_at
            ):
                continue
            await self._close(conn, row, now, out)

    async def _close(self, conn: AsyncConnection, row: Any, now: datetime, out: TickResult) -> None:
        recovery, by = await self._how_recovered(conn, row)
        c = incidents.c
        closed = await conn.execute(
            incidents.update()
            .where(c.id == row.id, c.state == "recovering")
            .values(
                state="closed",
                open_key=None,
                closed_at=now,
                recovery=recovery,
                recovered_by=by[:140],
                next_step_at=None,
            )
        )
        if closed.rowcount != 1:
            return
        label = {"self_healed": "自愈", "remote": "远程处置", "on_site": "现场处置"}[recovery]
        await timeline(conn, row.id, now, "state", f"恢复已确认, 关闭 ({label} {by})".strip())
        await conn.execute(
            dispatches.update()
            .where(dispatches.c.incident_id == row.id, dispatches.c.state == "open")
            .values(state="cancelled", note="recovered before anyone went on site")
        )
        await self._resolved(conn, row, now, out, label)

    async def _how_recovered(self, conn: AsyncConnection, row: Any) -> tuple[str, str]:
        d = dispatches.c
        visit = (
            await conn.execute(
                sa.select(d.technician).where(
                    d.incident_id == row.id, d.arrived_at.is_not(None), d.arrived_at <= row.cleared_at
                )
            )
        ).first()
        if visit is not None:
            return "on_site", visit.technician
        # A command fixed it only if it succeeded after the outage last showed a new condition: a restart that
        # "succeeded" before the application failed again (or the agent gave up) did not restore anything.
        onset = await conn.scalar(
            sa.select(sa.func.max(incident_conditions.c.seen_at)).where(incident_conditions.c.incident_id == row.id)
        )
        k = commands.c
        fix = (
            await conn.execute(
                sa.select(k.name, k.issuer)
                .where(
                    k.key == row.key,
                    k.state == CommandState.SUCCEEDED.value,
                    k.issued_at >= row.detected_at,
                    k.issued_at <= row.cleared_at,
                    k.updated_at >= (onset or row.detected_at),
                )
                .order_by(k.updated_at.desc())
                .limit(1)
            )
        ).first()
        if fix is not None:
            return "remote", f"{fix.name} ({fix.issuer})"
        return "self_healed", ""

    async def _resolved(self, conn: AsyncConnection, row: Any, now: datetime, out: TickResult, label: str) -> None:
        """Tell whoever was paged; pages still waiting (quiet hours, group wait) are no longer needed."""
        n = notifications.c
        ref = f"incident:{row.id}"
        await conn.execute(
            notifications.update()
            .where(n.ref == ref, n.state == "pending", n.step != "resolved")
            .values(state="suppressed", last_error="resolved before delivery")
        )
        paged = await conn.scalar(sa.select(sa.func.count()).where(n.ref == ref, n.state == "sent", n.step == "opened"))
        if paged:
            zh = f"{kind_label(row.kind)}已恢复 ({label})"
            en = f"{kind_label(row.kind, 'en')} resolved ({label})"
            await self._notify(conn, self._notice(row, "resolved", now, zh, en), now, out)

    # -- hall-wide outage ---------------------------------------------------------------------------
    @staticmethod
    def _down(*where: Any) -> sa.Select[Any]:
        """Devices down now: an outage condition (offline, kiosk down, staff report) active on a device's
        incident, whatever else the incident is made of."""
        c, k = incidents.c, incident_conditions.c
        return (
            sa.select(c.id, c.site, c.device, c.key, k.seen_at)
            .select_from(incident_conditions.join(incidents, c.id == k.incident_id))
            .where(k.open_key.is_not(None), k.kind.in_(OUTAGE_KINDS), c.device != "*", *where)
        )

    async def _hall_outages(self, conn: AsyncConnection, now: datetime, out: TickResult) -> None:
        c = incidents.c
        down = self._down().subquery()
        counts = await conn.execute(
            sa.select(down.c.site, sa.func.count(sa.distinct(down.c.key)).label("n")).group_by(down.c.site)
        )
        by_site = {r.site: r for r in counts.all()}
        open_halls = await conn.execute(sa.select(incidents).where(c.kind == HALL_OUTAGE, c.state != "closed"))
        for hall in open_halls.all():
            await self._hall_still_down(conn, hall, by_site.get(hall.site), now)
            by_site.pop(hall.site, None)
        for site, r in by_site.items():
            await self._maybe_hall_outage(conn, site, r.n, now, out)

    async def _maybe_hall_outage(
        self, conn: AsyncConnection, site: str, n_down: int, now: datetime, out: TickResult
    ) -> None:
        policy = self.sites[site].hall_outage
        k = incident_conditions.c
        recent_q = self._down(incidents.c.site == site, k.seen_at >= now - timedelta(seconds=policy.window_s))
        recent = await conn.scalar(sa.select(sa.func.count(sa.distinct(recent_q.subquery().c.key))))
        total = await conn.scalar(sa.select(sa.func.count()).where(devices.c.site == site, heard_from())) or 0
        if (recent or 0) < policy.min_devices or n_down < policy.min_fraction * total:
            return
        hall_id = uuid7()
        hours24 = False
        for d in await self._down_devices(conn, site):
            hours24 = hours24 or await registered_hours24(conn, self.sites, site, d)
        inserted = await conn.execute(
            _insert_ignore(conn, incidents).values(
                id=hall_id,
                key=f"{site}/*",
                site=site,
                device="*",
                kind=HALL_OUTAGE,
                severity="critical",
                device_class="site",
                hours24=hours24,
                state="open",
                open_key=f"{site}/*|{HALL_OUTAGE}",
                summary=f"{n_down}/{total} 台设备同时故障",
                detected_at=now,
                last_signal_at=now,
                step="new",
                next_step_at=now,
            )
        )
        if inserted.rowcount != 1:
            return
        log.warning("hall-wide outage at %s: %d of %d devices down", site, n_down, total)
        await timeline(conn, hall_id, now, "signal", f"大厅整体故障: {n_down}/{total} 台设备同时故障")
        await self._adopt(conn, site, hall_id, now)

    async def _down_devices(self, conn: AsyncConnection, site: str) -> list[str]:
        rows = await conn.execute(self._down(incidents.c.site == site))
        return sorted({r.device for r in rows})

    async def _adopt(self, conn: AsyncConnection, site: str, hall_id: str, now: datetime) -> None:
        """Put the site's open device incidents under the hall incident: they keep their own clock (for the
        per-device report) but page no more."""
        c = incidents.c
        down_ids = self._down(c.site == site).with_only_columns(c.id)
        adopted = await conn.execute(
            incidents.update()
            .where(c.id.in_(down_ids), c.state != "closed", c.parent_id.is_(None))
            .values(parent_id=hall_id)
            .returning(c.id)
        )
        refs = []
        for r in adopted.all():
            refs.append(f"incident:{r.id}")
            await timeline(conn, r.id, now, "state", "归入大厅整体故障, 不再单独通知", hall_incident=hall_id)
        if refs:
            n = notifications.c
            await conn.execute(
                notifications.update()
                .where(n.ref.in_(refs), n.state == "pending")
                .values(state="suppressed", last_error="covered by the hall-wide outage")
            )

    async def _hall_still_down(self, conn: AsyncConnection, hall: Any, down: Any, now: datetime) -> None:
        c = incidents.c
        if down is not None and down.n >= self.sites[hall.site].hall_outage.min_devices:
            await self._adopt(conn, hall.site, hall.id, now)  # devices failing later join it
            if hall.state == "recovering":
                await conn.execute(
                    incidents.update()
                    .where(c.id == hall.id, c.state == "recovering")
                    .values(state="open", cleared_at=None, flaps=c.flaps + 1)
                )
                await timeline(conn, hall.id, now, "signal", f"再次出现: {down.n} 台设备故障")
            return
        if hall.state == "open":
            await conn.execute(
                incidents.update().where(c.id == hall.id, c.state == "open").values(state="recovering", cleared_at=now)
            )
            await timeline(conn, hall.id, now, "signal", "多数设备已恢复, 待确认")

    # -- escalation and dispatches -----------------------------------------------------------------
    async def _escalate(self, conn: AsyncConnection, now: datetime, out: TickResult) -> None:
        c = incidents.c
        rows = await conn.execute(
            sa.select(incidents).where(c.state == "open", c.acked_at.is_(None), c.notified_at.is_not(None))
        )
        for row in rows.all():
            tiers = self.sites[row.site].sla.escalate_after_min
            level = row.escalation_level
            if level >= len(tiers) or now < row.notified_at + timedelta(minutes=tiers[level]):
                continue
            moved = await conn.execute(
                incidents.update()
                .where(c.id == row.id, c.escalation_level == level, c.acked_at.is_(None))
                .values(escalation_level=level + 1)
            )
            if moved.rowcount == 1:
                mins = tiers[level]
                zh = f"通知后 {mins:g} 分钟无人确认: {kind_label(row.kind)} {row.summary}"
                en = f"nobody acknowledged in {mins:g} min: {kind_label(row.kind, 'en')} {row.summary}"
                await self._notify(conn, self._notice(row, f"escalation{level + 1}", now, zh, en), now, out)

    async def _dispatches_overdue(self, conn: AsyncConnection, now: datetime, out: TickResult) -> None:
        d = dispatches.c
        rows = await conn.execute(
            sa.select(dispatches.c.id.label("dispatch_id"), dispatches.c.due_at, incidents)
            .select_from(dispatches.join(incidents, incidents.c.id == d.incident_id))
            .where(d.state == "open", d.due_at < now, d.overdue_notified.is_(sa.false()))
        )
        for row in rows.all():
            moved = await conn.execute(
                dispatches.update()
                .where(d.id == row.dispatch_id, d.overdue_notified.is_(sa.false()))
                .values(overdue_notified=True)
            )
            if moved.rowcount == 1:
                due = row.due_at.astimezone(self.sites[row.site].site_calendar.zone)
                zh = f"上门处置已超期 (应于 {due:%m-%d %H:%M} 前到场)"
                en = f"on-site dispatch overdue (due {due:%m-%d %H:%M})"
                await self._notify(conn, self._notice(row, "dispatch_overdue", now, zh, en), now, out)


def _remediable(kind: str) -> bool:
    """Conditions a remote restart of the application can cure: the kiosk down, an application fault."""
    return kind == "kiosk_down" or kind.startswith("fault.app.")
