"""What the API and the dashboard read from the store, scoped to the sites a user sees. Both routes.py (JSON)
and pages.py (HTML, the live stream) call these, so a page never shows what the API would refuse."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from broker.calendar import WallClockHours
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import (
    audit_log,
    commands,
    consumable_levels,
    dead_letters,
    devices,
    incident_timeline,
    incidents,
    notifications,
    presence_history,
)


def _in_sites(column: Any, sites: list[str] | None) -> Any:
    return sa.true() if sites is None else column.in_(sites)


async def page_of(store: Store, query: sa.Select[Any], page: int, size: int) -> tuple[list[Any], int]:
    total = int(await store.scalar(sa.select(sa.func.count()).select_from(query.order_by(None).subquery())) or 0)
    rows = await store.fetch(query.limit(size).offset((page - 1) * size))
    return rows, total


# -- devices -----------------------------------------------------------------------------------------
def devices_query(sites: list[str] | None, site: str | None = None) -> sa.Select[Any]:
    c = devices.c
    q = sa.select(devices).where(_in_sites(c.site, sites)).order_by(c.site, c.device)
    return q if site is None else q.where(c.site == site)


async def device_row(store: Store, key: str) -> Any:
    rows = await store.fetch(sa.select(devices).where(devices.c.key == key))
    return rows[0] if rows else None


async def presence_changes(store: Store, key: str, since: datetime, limit: int = 1000) -> list[Any]:
    h = presence_history.c
    q = sa.select(presence_history).where(h.key == key, h.at >= since).order_by(h.at, h.id).limit(limit)
    return await store.fetch(q)


async def state_before(store: Store, key: str, at: datetime) -> str:
    h = presence_history.c
    q = sa.select(h.state).where(h.key == key, h.at < at).order_by(h.at.desc(), h.id.desc()).limit(1)
    return str(await store.scalar(q) or "unknown")


# -- incidents and their SLA -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Sla:
    started_at: datetime
    elapsed_s: float  # SLA time: opening hours, or wall-clock time for a 24-hour device
    warn_at: datetime
    breach_at: datetime
    next_step_at: datetime | None
    breached: bool
    counts_wall_clock: bool


def sla_of(row: Any, sites: Sites, now: datetime) -> Sla:
    site = sites[row.site]
    hours = WallClockHours() if row.hours24 else site.site_calendar
    start = min(row.detected_at, row.staff_reported_at or row.detected_at)
    end = row.closed_at or now
    breach_at = hours.add_open_time(start, site.sla.breach_after_min * 60)
    return Sla(
        started_at=start,
        elapsed_s=hours.open_seconds(start, end),
        warn_at=hours.add_open_time(start, site.sla.warn_after_min * 60),
        breach_at=breach_at,
        next_step_at=row.next_step_at,
        breached=row.breached_at is not None or (row.state != "closed" and now >= breach_at),
        counts_wall_clock=bool(row.hours24),
    )


def incidents_query(sites: list[str] | None, state: str | None = None, site: str | None = None) -> sa.Select[Any]:
    c = incidents.c
    q = sa.select(incidents).where(_in_sites(c.site, sites)).order_by(c.detected_at.desc(), c.id)
    if state == "open":  # what still needs someone: open, or recovering but not yet verified
        q = q.where(c.state != "closed")
    elif state is not None:
        q = q.where(c.state == state)
    return q if site is None else q.where(c.site == site)


async def incident_row(store: Store, incident_id: str) -> Any:
    rows = await store.fetch(sa.select(incidents).where(incidents.c.id == incident_id))
    return rows[0] if rows else None


async def incident_timeline_rows(store: Store, incident_id: str) -> list[Any]:
    t = incident_timeline.c
    return await store.fetch(sa.select(incident_timeline).where(t.incident_id == incident_id).order_by(t.id))


# -- commands, consumables, audit --------------------------------------------------------------------
def recent_commands_query(sites: list[str] | None, since: datetime) -> sa.Select[Any]:
    c = commands.c
    q = sa.select(commands).where(c.issued_at >= since).order_by(c.issued_at.desc()).limit(50)
    if sites is not None:
        q = q.where(sa.or_(*[c.key.startswith(f"{s}/", autoescape=True) for s in sites]))
    return q


def consumables_query(sites: list[str] | None, site: str | None = None) -> sa.Select[Any]:
    c = consumable_levels.c
    q = sa.select(consumable_levels).order_by(c.key, c.consumable)
    if sites is not None:
        q = q.where(sa.or_(*[c.key.startswith(f"{s}/", autoescape=True) for s in sites]))
    if site is not None:
        q = q.where(c.key.startswith(f"{site}/", autoescape=True))
    return q


def audit_query(sites: list[str] | None, target: str | None = None) -> sa.Select[Any]:
    a = audit_log.c
    q = sa.select(audit_log).order_by(a.id.desc())
    if sites is not None:
        # Audit rows name a device or an incident's key ({site}/...): people see their sites' rows only.
        q = q.where(sa.or_(*[a.target.startswith(f"{s}/", autoescape=True) for s in sites]))
    if target is not None:
        q = q.where(a.target == target)
    return q


# -- what /metrics counts ----------------------------------------------------------------------------
async def fleet_counts(store: Store) -> dict[str, list[Any]]:
    d, i, n = devices.c, incidents.c, notifications.c
    return {
        "devices": await store.fetch(sa.select(d.site, d.presence, sa.func.count()).group_by(d.site, d.presence)),
        "incidents": await store.fetch(
            sa.select(i.site, i.severity, sa.func.count()).where(i.state != "closed").group_by(i.site, i.severity)
        ),
        "notifications": await store.fetch(
            sa.select(n.state, sa.func.count()).where(n.state.in_(["pending", "failed"])).group_by(n.state)
        ),
        "dead_letters": await store.fetch(sa.select(dead_letters.c.reason, sa.func.count()).group_by("reason")),
    }


def day_start(now: datetime, hours: float = 24) -> datetime:
    return now - timedelta(hours=hours)
