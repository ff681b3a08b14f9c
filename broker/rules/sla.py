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
from collections import defaultdict
from collections.abc import Callable
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
    step_due,
    timeline_row,
    timelines,
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


STEPS_PER_TICK = 2000  # due steps (and recoveries) taken per tick; the rest are due on the next one
NEXT_STEP = {"new": "acted", "acted": "warned", "warned": "breached"}


@dataclass(slots=True)
class TickResult:
    commands: list[tuple[DeviceKey, Command]] = field(default_factory=list)  # (device, command) to publish
    notices: list[Notice] = field(default_factory=list)


@dataclass(slots=True)
class _Pass:
    """What one transaction of the clock writes beyond its conditional updates (timeline entries, commands with
    their audit rows, notices), gathered so that each kind goes to the store in one statement: after a storm a
    tick acts on a thousand incidents, and a statement per incident per kind took seconds."""

    timeline: list[dict[str, Any]] = field(default_factory=list)
    commands: list[tuple[DeviceKey, Command]] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)

    def note(self, incident_id: str, at: datetime, entry: str, text: str, **detail: Any) -> None:
        self.timeline.append(timeline_row(incident_id, at, entry, text, **detail))


@dataclass(frozen=True, slots=True)
class _Known:
    """What the steps of one tick read about their incidents, read once for all of them."""

    open_on: dict[str, list[tuple[str, str]]]  # device key -> (severity, kind) of its incidents not closed
    conditions: dict[str, set[str]]  # incident id -> kinds of its active conditions
    presence: dict[str, str]  # device key -> presence

    @classmethod
    async def load(cls, conn: AsyncConnection, rows: list[Any]) -> _Known:
        c, k, d = incidents.c, incident_conditions.c, devices.c
        keys = sorted({r.key for r in rows})
        ids = [r.id for r in rows]
        open_on: dict[str, list[tuple[str, str]]] = defaultdict(list)
        graver = sa.select(c.key, c.severity, c.kind).where(c.key.in_(keys), c.state != "closed")
        for key, severity, kind in await conn.execute(graver):
            open_on[key].append((severity, kind))
        conditions: dict[str, set[str]] = defaultdict(set)
        active = sa.select(k.incident_id, k.kind).where(k.incident_id.in_(ids), k.open_key.is_not(None))
        for incident_id, kind in await conn.execute(active):
            conditions[incident_id].add(kind)
        here = sa.select(d.key, d.presence).where(d.key.in_(keys))
        presence = {key: state for key, state in await conn.execute(here)}
        return cls(open_on, conditions, presence)

    def inhibited(self, row: Any) -> str | None:
        """Why this incident should not page: a hall-wide outage covers it, or its device has a graver
        incident open (a kiosk that is offline need not also page for its printer)."""
        if row.parent_id is not None:
            return "covered by the hall-wide outage"
        rank = SEVERITY_RANK[row.severity]
        graver = sorted(kind for severity, kind in self.open_on.get(row.key, ()) if SEVERITY_RANK[severity] > rank)
        return f"device has a graver incident open ({graver[0]})" if graver else None


class SlaClock:
    def __init__(
        self,
        engine: AsyncEngine,
        sites: Sites,
        router: Router,
        plan_every_s: float = 300.0,
        hall_led: Callable[[], frozenset[str]] | None = None,
    ) -> None:
        self.engine = engine
        self.sites = sites
        self.router = router
        self.plan_every_s = plan_every_s
        self.hall_led = hall_led  # the centre's: sites whose own hall consumer runs this clock (broker/hall/)
        self._last_plan: datetime | None = None

    def _ours(self, site: sa.ColumnElement[str]) -> sa.ColumnElement[bool]:
        """Incidents this clock acts on: not those of a hall-led site, which its hall consumer steps, pages and
        closes (the centre keeps the hall's record of them: docs/hall-autonomy.md)."""
        led = sorted(self.hall_led()) if self.hall_led is not None else []
        return site.not_in(led) if led else sa.true()

    async def tick(self, now: datetime) -> TickResult:
        """A bounded number of statements however many incidents are due (tests/test_sla.py counts them)."""
        out = TickResult()
        async with self.engine.begin() as conn:
            p = _Pass()
            await self._hall_outages(conn, p, now)
            await self._flush(conn, p, now, out)
        async with self.engine.begin() as conn:
            p = _Pass()
            await self._steps(conn, p, now)
            await self._flush(conn, p, now, out)
        async with self.engine.begin() as conn:
            p = _Pass()
            await self._verify(conn, p, now)
            await self._escalate(conn, p, now)
            await self._dispatches_overdue(conn, p, now)
            await self._flush(conn, p, now, out)
        return out

    async def plan(self, now: datetime) -> TickResult:
        """Restock and maintenance planning, at most every ``plan_every_s`` of hall time: a job of its own beside
        the tick (``central.Ticking("planning", ...)``), since it reads every device's levels and history (after
        a storm, seconds) and the SLA's timers must not wait for it."""
        out = TickResult()
        if self._last_plan is not None and (now - self._last_plan).total_seconds() < self.plan_every_s:
            return out
        self._last_plan = now
        async with self.engine.begin() as conn:
            p = _Pass()
            p.notices += await consumables.plan_restock(conn, now, self.sites)
            p.notices += await maintenance.check_maintenance(conn, now, self.sites)
            await self._flush(conn, p, now, out)
        return out

    async def _flush(self, conn: AsyncConnection, p: _Pass, now: datetime, out: TickResult) -> None:
        """The pass's commands, notices and timeline, one statement each, in the pass's transaction."""
        await cmd_sql.insert_commands(conn, [(key.text, cmd) for key, cmd in p.commands])
        out.commands += p.commands
        for n, who in zip(p.notices, await self.router.enqueue_many(conn, p.notices, now), strict=True):
            out.notices.append(n)
            if who and n.ref.startswith("incident:"):
                p.note(n.ref.removeprefix("incident:"), now, "notify", f"通知 {', '.join(who)} ({n.step})")
        await timelines(conn, p.timeline)

    # -- notices ------------------------------------------------------------------------------------
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

    # -- steps --------------------------------------------------------------------------------------
    async def _steps(self, conn: AsyncConnection, p: _Pass, now: datetime) -> None:
        c = incidents.c
        due = await conn.execute(
            sa.select(incidents)
            .where(c.state == "open", c.next_step_at <= now, self._ours(c.site))
            .order_by(c.next_step_at)
            .limit(STEPS_PER_TICK)
        )
        planned = []
        for row in due.all():
            new_step = NEXT_STEP.get(row.step)
            if new_step is None:
                continue
            site = self.sites[row.site]
            # One clock from the outage's start, on the hours decided when it opened.
            nxt = step_due(site.sla, hours_of(site, row.hours24), row.detected_at, new_step)
            planned.append((row, new_step, nxt))
        taken = await self._take(conn, planned)
        if not taken:
            return
        known = await _Known.load(conn, [row for row, _ in taken])
        for row, new_step in taken:
            await getattr(self, f"_step_{new_step}")(conn, p, known, row, now)

    @staticmethod
    async def _take(conn: AsyncConnection, planned: list[tuple[Any, str, datetime | None]]) -> list[tuple[Any, str]]:
        """Each step by a conditional UPDATE (``WHERE step = <the step read>``), one per kind of step: only the
        rows it changed are this consumer's to act on (another consumer may have taken the rest)."""
        c = incidents.c
        ids: dict[tuple[str, str], list[str]] = defaultdict(list)
        for row, new_step, _ in planned:
            ids[(row.step, new_step)].append(row.id)
        mine: set[str] = set()
        for (old, new), group in ids.items():
            moved = await conn.execute(
                incidents.update().where(c.id.in_(group), c.step == old).values(step=new).returning(c.id)
            )
            mine.update(moved.scalars())
        taken = [(row, new_step, nxt) for row, new_step, nxt in planned if row.id in mine]
        if taken:
            await conn.execute(
                incidents.update().where(c.id == sa.bindparam("b_id")).values(next_step_at=sa.bindparam("b_next")),
                [{"b_id": row.id, "b_next": nxt} for row, _, nxt in taken],
            )
        return [(row, new_step) for row, new_step, _ in taken]

    async def _step_acted(self, conn: AsyncConnection, p: _Pass, known: _Known, row: Any, now: datetime) -> None:
        self._remediate(p, known, row, now)
        self._page(p, known, row, "opened", now, f"{kind_label(row.kind)}: {row.summary}", row.summary)

    async def _step_warned(self, conn: AsyncConnection, p: _Pass, known: _Known, row: Any, now: datetime) -> None:
        sla = self.sites[row.site].sla
        zh = f"已持续 {sla.warn_after_min:g} 分钟未恢复, {sla.breach_after_min:g} 分钟时超时: {row.summary}"
        en = f"not restored after {sla.warn_after_min:g} min; SLA breach at {sla.breach_after_min:g} min: {row.summary}"
        self._page(p, known, row, "warning", now, zh, en)

    async def _step_breached(self, conn: AsyncConnection, p: _Pass, known: _Known, row: Any, now: datetime) -> None:
        site = self.sites[row.site]
        reason = f"{site.sla.breach_after_min:g} 分钟内未能远程恢复: {row.summary}"
        await conn.execute(
            incidents.update().where(incidents.c.id == row.id).values(breached_at=now, breach_reason=reason[:500])
        )
        p.note(row.id, now, "step", f"超时: {reason}")
        self._page(p, known, row, "breach", now, reason, f"SLA breached: not restored remotely: {row.summary}")
        if site.sla.dispatch_on_breach and row.device != "*":
            if (why := known.inhibited(row)) is not None:
                # One trip for one device: the graver incident's dispatch (or the hall's) covers this one.
                p.note(row.id, now, "step", f"不单独派单 ({why})")
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
            local_due = due.astimezone(site.site_calendar.zone)
            p.note(row.id, now, "step", f"派单上门, 须在 {local_due:%Y-%m-%d %H:%M} 前到场")
            zh = f"请在 {local_due:%m-%d %H:%M} 前到现场处理: {row.summary}"
            en = f"go on site before {local_due:%m-%d %H:%M}: {row.summary}"
            self._page(p, known, row, "dispatch", now, zh, en, dispatch_id=dispatch_id, due_at=due.isoformat())

    def _page(
        self, p: _Pass, known: _Known, row: Any, step: str, now: datetime, zh: str, en: str, **facts: Any
    ) -> None:
        why = known.inhibited(row)
        if why is not None:
            p.note(row.id, now, "step", f"{step}: 不单独通知 ({why})")
            return
        p.notices.append(self._notice(row, step, now, zh, en, **facts))

    def _remediate(self, p: _Pass, known: _Known, row: Any, now: datetime) -> None:
        """T+0: the remote fix the hall's rules ask for first (e.g. restart_app), if the device can hear it and
        its application is what failed (the kiosk down, or an application fault)."""
        if not any(_remediable(kind) for kind in known.conditions.get(row.id, ())):
            return
        presence = known.presence.get(row.key)
        if presence != "online":
            p.note(row.id, now, "step", f"设备{presence or '未知'}, 无法远程处置")
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
            p.commands.append((DeviceKey(row.site, row.device), cmd))
            p.note(row.id, now, "command", f"自动远程处置: {name}", command_id=cmd.id)

    # -- recovery -----------------------------------------------------------------------------------
    async def _verify(self, conn: AsyncConnection, p: _Pass, now: datetime) -> None:
        """Close what stayed clear for ``verify_s`` while the device was heard from after it cleared."""
        c, d = incidents.c, devices.c
        rows = await conn.execute(
            sa.select(incidents, d.presence, d.last_seen)
            .select_from(incidents.outerjoin(devices, d.key == c.key))
            .where(c.state == "recovering", self._ours(c.site))
            .limit(STEPS_PER_TICK)
        )
        closing = []
        for row in rows.all():
            verify_s = self.sites[row.site].sla.verify_s
            if row.cleared_at > now - timedelta(seconds=verify_s):
                continue
            if row.device != "*" and not (
                row.presence == "online" and row.last_seen and row.last_seen > row.cleared_at
            ):
                continue
            closing.append(row)
        if closing:
            await self._close(conn, p, closing, now)

    async def _close(self, conn: AsyncConnection, p: _Pass, rows: list[Any], now: datetime) -> None:
        how = await self._how_recovered(conn, rows)
        c = incidents.c
        closed = await conn.execute(
            incidents.update()
            .where(c.id.in_([r.id for r in rows]), c.state == "recovering")
            .values(state="closed", open_key=None, closed_at=now, next_step_at=None)
            .returning(c.id)
        )
        mine = set(closed.scalars())
        rows = [r for r in rows if r.id in mine]  # another consumer closed the rest
        if not rows:
            return
        await conn.execute(
            incidents.update()
            .where(c.id == sa.bindparam("b_id"))
            .values(recovery=sa.bindparam("b_recovery"), recovered_by=sa.bindparam("b_by")),
            [{"b_id": r.id, "b_recovery": how[r.id][0], "b_by": how[r.id][1][:140]} for r in rows],
        )
        labels = {"self_healed": "自愈", "remote": "远程处置", "on_site": "现场处置"}
        for r in rows:
            recovery, by = how[r.id]
            p.note(r.id, now, "state", f"恢复已确认, 关闭 ({labels[recovery]} {by})".strip())
        await conn.execute(
            dispatches.update()
            .where(dispatches.c.incident_id.in_([r.id for r in rows]), dispatches.c.state == "open")
            .values(state="cancelled", note="recovered before anyone went on site")
        )
        await self._resolved(conn, p, rows, now, {r.id: labels[how[r.id][0]] for r in rows})

    @staticmethod
    async def _how_recovered(conn: AsyncConnection, rows: list[Any]) -> dict[str, tuple[str, str]]:
        """By incident: on site (a technician arrived before it cleared), remote (a command that succeeded after
        the outage last showed a new condition), or self-healed. Three queries for all of them."""
        ids = [r.id for r in rows]
        d, k, m = dispatches.c, incident_conditions.c, commands.c
        visits: dict[str, list[Any]] = defaultdict(list)
        arrived = sa.select(d.incident_id, d.technician, d.arrived_at).where(
            d.incident_id.in_(ids), d.arrived_at.is_not(None)
        )
        for v in await conn.execute(arrived.order_by(d.arrived_at)):
            visits[v.incident_id].append(v)
        last_seen = sa.select(k.incident_id, sa.func.max(k.seen_at)).where(k.incident_id.in_(ids))
        onsets = {incident_id: at for incident_id, at in await conn.execute(last_seen.group_by(k.incident_id))}
        fixes: dict[str, list[Any]] = defaultdict(list)
        succeeded = sa.select(m.key, m.name, m.issuer, m.issued_at, m.updated_at).where(
            m.key.in_(sorted({r.key for r in rows})),
            m.state == CommandState.SUCCEEDED.value,
            m.issued_at >= min(r.detected_at for r in rows),
        )
        for f in await conn.execute(succeeded.order_by(m.updated_at.desc())):
            fixes[f.key].append(f)
        out = {}
        for r in rows:
            visit = next((v for v in visits[r.id] if v.arrived_at <= r.cleared_at), None)
            # A command fixed it only if it succeeded after the outage last showed a new condition: a restart
            # that "succeeded" before the application failed again (or the agent gave up) restored nothing.
            since = onsets.get(r.id) or r.detected_at
            fix = next(
                (f for f in fixes[r.key] if r.detected_at <= f.issued_at <= r.cleared_at and f.updated_at >= since),
                None,
            )
            if visit is not None:
                out[r.id] = ("on_site", visit.technician)
            elif fix is not None:
                out[r.id] = ("remote", f"{fix.name} ({fix.issuer})")
            else:
                out[r.id] = ("self_healed", "")
        return out

    async def _resolved(
        self, conn: AsyncConnection, p: _Pass, rows: list[Any], now: datetime, labels: dict[str, str]
    ) -> None:
        """Tell whoever was paged; pages still waiting (quiet hours, group wait) are no longer needed."""
        n = notifications.c
        refs = {f"incident:{r.id}": r for r in rows}
        await conn.execute(
            notifications.update()
            .where(n.ref.in_(list(refs)), n.state == "pending", n.step != "resolved")
            .values(state="suppressed", last_error="resolved before delivery")
        )
        paged = await conn.execute(
            sa.select(n.ref).where(n.ref.in_(list(refs)), n.state == "sent", n.step == "opened").distinct()
        )
        was_paged = set(paged.scalars())
        for ref, row in refs.items():
            if ref not in was_paged:
                continue
            zh = f"{kind_label(row.kind)}已恢复 ({labels[row.id]})"
            en = f"{kind_label(row.kind, 'en')} resolved ({labels[row.id]})"
            p.notices.append(self._notice(row, "resolved", now, zh, en))

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

    async def _hall_outages(self, conn: AsyncConnection, p: _Pass, now: datetime) -> None:
        c = incidents.c
        down = self._down().subquery()
        counts = await conn.execute(
            sa.select(down.c.site, sa.func.count(sa.distinct(down.c.key)).label("n")).group_by(down.c.site)
        )
        led = self.hall_led() if self.hall_led is not None else frozenset()
        by_site = {r.site: r for r in counts.all() if r.site not in led}
        open_halls = await conn.execute(
            sa.select(incidents).where(c.kind == HALL_OUTAGE, c.state != "closed", self._ours(c.site))
        )
        for hall in open_halls.all():
            await self._hall_still_down(conn, p, hall, by_site.get(hall.site), now)
            by_site.pop(hall.site, None)
        for site, r in by_site.items():
            await self._maybe_hall_outage(conn, p, site, r.n, now)

    async def _maybe_hall_outage(self, conn: AsyncConnection, p: _Pass, site: str, n_down: int, now: datetime) -> None:
        policy = self.sites[site].hall_outage
        k = incident_conditions.c
        recent_q = self._down(incidents.c.site == site, k.seen_at >= now - timedelta(seconds=policy.window_s))
        recent = await conn.scalar(sa.select(sa.func.count(sa.distinct(recent_q.subquery().c.key))))
        total = await conn.scalar(sa.select(sa.func.count()).where(devices.c.site == site, heard_from())) or 0
        if (recent or 0) < policy.min_devices or n_down < policy.min_fraction * total:
            return
        hall_id = uuid7()
        hours24 = await self._any_hours24(conn, site, await self._down_devices(conn, site))
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
        p.note(hall_id, now, "signal", f"大厅整体故障: {n_down}/{total} 台设备同时故障")
        await self._adopt(conn, p, site, hall_id, now)

    async def _down_devices(self, conn: AsyncConnection, site: str) -> list[str]:
        rows = await conn.execute(self._down(incidents.c.site == site))
        return sorted({r.device for r in rows})

    async def _any_hours24(self, conn: AsyncConnection, site: str, down: list[str]) -> bool:
        """Whether any of these devices counts wall-clock time (the devices' ``hours24``, read in one query)."""
        d = devices.c
        keys = {DeviceKey(site, device).text: device for device in down}
        found = await conn.execute(sa.select(d.key, d.hours24).where(d.key.in_(list(keys))))
        registered = {key: hours24 for key, hours24 in found}
        return any(self.sites[site].is_always_on(device, registered.get(key)) for key, device in keys.items())

    async def _adopt(self, conn: AsyncConnection, p: _Pass, site: str, hall_id: str, now: datetime) -> None:
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
            p.note(r.id, now, "state", "归入大厅整体故障, 不再单独通知", hall_incident=hall_id)
        if refs:
            n = notifications.c
            await conn.execute(
                notifications.update()
                .where(n.ref.in_(refs), n.state == "pending")
                .values(state="suppressed", last_error="covered by the hall-wide outage")
            )

    async def _hall_still_down(self, conn: AsyncConnection, p: _Pass, hall: Any, down: Any, now: datetime) -> None:
        c = incidents.c
        if down is not None and down.n >= self.sites[hall.site].hall_outage.min_devices:
            await self._adopt(conn, p, hall.site, hall.id, now)  # devices failing later join it
            if hall.state == "recovering":
                await conn.execute(
                    incidents.update()
                    .where(c.id == hall.id, c.state == "recovering")
                    .values(state="open", cleared_at=None, flaps=c.flaps + 1)
                )
                p.note(hall.id, now, "signal", f"再次出现: {down.n} 台设备故障")
            return
        if hall.state == "open":
            await conn.execute(
                incidents.update().where(c.id == hall.id, c.state == "open").values(state="recovering", cleared_at=now)
            )
            p.note(hall.id, now, "signal", "多数设备已恢复, 待确认")

    # -- escalation and dispatches -----------------------------------------------------------------
    async def _escalate(self, conn: AsyncConnection, p: _Pass, now: datetime) -> None:
        c = incidents.c
        rows = await conn.execute(
            sa.select(incidents).where(
                c.state == "open", c.acked_at.is_(None), c.notified_at.is_not(None), self._ours(c.site)
            )
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
                p.notices.append(self._notice(row, f"escalation{level + 1}", now, zh, en))

    async def _dispatches_overdue(self, conn: AsyncConnection, p: _Pass, now: datetime) -> None:
        d = dispatches.c
        rows = await conn.execute(
            sa.select(dispatches.c.id.label("dispatch_id"), dispatches.c.due_at, incidents)
            .select_from(dispatches.join(incidents, incidents.c.id == d.incident_id))
            .where(d.state == "open", d.due_at < now, d.overdue_notified.is_(sa.false()), self._ours(incidents.c.site))
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
                p.notices.append(self._notice(row, "dispatch_overdue", now, zh, en))


def _remediable(kind: str) -> bool:
    """Conditions a remote restart of the application can cure: the kiosk down, an application fault."""
    return kind == "kiosk_down" or kind.startswith("fault.app.")
