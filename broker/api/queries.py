"""What the API and the dashboard read from the store, scoped to the sites a user sees. Both routes.py (JSON)
and pages.py (HTML, the live stream) call these, so a page never shows what the API would refuse."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa

from broker.api.fleet_queries import OPEN_STATES
from broker.ratings.model import Rating, ratings_between
from broker.reports.sla import sla_elapsed_s, sla_started_at
from broker.rules.incidents import hours_of
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import (
    commands,
    consumable_levels,
    dead_letters,
    devices,
    events,
    incident_timeline,
    incidents,
    notifications,
    presence_history,
    rating_flags,
    rating_followups,
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
    elapsed_s: float  # SLA time to restoration (or now): opening hours, or wall-clock time for a 24-hour device
    warn_at: datetime
    breach_at: datetime
    next_step_at: datetime | None
    breached: bool
    counts_wall_clock: bool


def sla_of(row: Any, sites: Sites, now: datetime) -> Sla:
    """The incident's one clock as the monthly report counts it (broker/reports/sla.py): its elapsed time is the
    report's time to restore once the outage ended, so the dashboard and the workbook show one figure."""
    site = sites[row.site]
    hours = hours_of(site, bool(row.hours24))
    start = sla_started_at(row)
    breach_at = hours.add_open_time(start, site.sla.breach_after_min * 60)
    return Sla(
        started_at=start,
        elapsed_s=sla_elapsed_s(row, site, now),
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
        q = q.where(c.state.in_(OPEN_STATES))  # a list, not != 'closed': the state index serves it
    elif state is not None:
        q = q.where(c.state == state)
    return q if site is None else q.where(c.site == site)


def stream_incidents_query(sites: list[str] | None, since: datetime) -> sa.Select[Any]:
    """What the live stream re-reads every poll: the open incidents and those closed since it began (each side
    of the OR has its index, so a year of closed incidents is never walked)."""
    c = incidents.c
    return incidents_query(sites).where(c.state.in_(OPEN_STATES) | (c.closed_at >= since)).limit(500)


async def incident_row(store: Store, incident_id: str) -> Any:
    rows = await store.fetch(sa.select(incidents).where(incidents.c.id == incident_id))
    return rows[0] if rows else None


async def incident_timeline_rows(store: Store, incident_id: str) -> list[Any]:
    t = incident_timeline.c
    return await store.fetch(sa.select(incident_timeline).where(t.incident_id == incident_id).order_by(t.id))


# -- commands, consumables --------------------------------------------------------------------------
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


# -- ratings (好差评) ---------------------------------------------------------------------------------------
def followup_state(row: Any) -> str:
    """What a negative rating still owes: a reply (real-name only), a decision whether it is objective, the
    rectification of an objective one; else done."""
    if row.real_name and row.replied_at is None:
        return "reply"
    if row.objective is None:
        return "classify"
    if row.objective and row.rectified_at is None:
        return "rectify"
    return "done"


def followup_overdue(row: Any, now: datetime) -> bool:
    late_reply = row.replied_at is None and row.reply_due is not None and row.reply_due < now
    late_fix = row.objective is True and row.rectified_at is None and row.rectify_due is not None
    return late_reply or (late_fix and row.rectify_due < now)


def followups_query(sites: list[str] | None, site: str | None = None, state: str = "open") -> sa.Select[Any]:
    c = rating_followups.c
    q = sa.select(rating_followups).where(_in_sites(c.site, sites)).order_by(c.rated_at.desc(), c.event_id)
    if site is not None:
        q = q.where(c.site == site)
    owes_reply = c.real_name.is_(True) & c.replied_at.is_(None)
    owes_fix = c.objective.is_(True) & c.rectified_at.is_(None)
    owes = owes_reply | c.objective.is_(None) | owes_fix
    if state == "open":
        q = q.where(owes)
    elif state == "done":
        q = q.where(sa.not_(owes))
    return q


async def followup_row(store: Store, event_id: str) -> Any:
    rows = await store.fetch(sa.select(rating_followups).where(rating_followups.c.event_id == event_id))
    return rows[0] if rows else None


async def ratings_on(store: Store, sites: Sites, site_ids: list[str], day: date) -> list[Rating]:
    """The sites' ratings counted on ``day`` (each site's local day), newest first."""
    out: list[Rating] = []
    async with store.engine.connect() as conn:
        for site in site_ids:
            zone = sites[site].site_calendar.zone
            start = datetime.combine(day, time(), zone)
            out += await ratings_between(conn, site, start, start + timedelta(days=1))
    return sorted(out, key=lambda r: (r.at, r.event_id), reverse=True)


async def rating_marks(store: Store, event_ids: list[str]) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """For these ratings: their proxy flags, and their follow-up rows."""
    flags: dict[str, list[Any]] = {}
    ledger: dict[str, Any] = {}
    for chunk in (event_ids[i : i + 500] for i in range(0, len(event_ids), 500)):
        for f in await store.fetch(sa.select(rating_flags).where(rating_flags.c.event_id.in_(chunk))):
            flags.setdefault(f.event_id, []).append(f)
        for r in await store.fetch(sa.select(rating_followups).where(rating_followups.c.event_id.in_(chunk))):
            ledger[r.event_id] = r
    return flags, ledger


def flags_query(sites: list[str] | None, site: str | None = None) -> sa.Select[Any]:
    """Proxy-rating flags nobody has reviewed yet, newest first."""
    c = rating_flags.c
    q = sa.select(rating_flags).where(_in_sites(c.site, sites), c.verdict.is_(None))
    q = q.order_by(c.rated_at.desc(), c.event_id, c.pattern)
    return q if site is None else q.where(c.site == site)


async def known_sites(store: Store, sites: Sites) -> list[str]:
    """Every site the centre knows: configured, or heard from."""
    heard = await store.fetch(sa.select(devices.c.site).distinct())
    return sorted(set(sites.names()) | {r.site for r in heard})


# -- consumables' history ----------------------------------------------------------------------------------
async def level_history(
    store: Store, keys: list[str], since: datetime, limit: int = 50_000
) -> dict[tuple[str, str], list[tuple[datetime, float]]]:
    """(key, consumable) -> the levels the kiosks reported since ``since`` (kiosk.consumable events), by time."""
    out: dict[tuple[str, str], list[tuple[datetime, float]]] = {}
    if not keys:
        return out
    e = events.c
    pairs = [tuple(k.split("/", 1)) for k in keys]
    sites = sorted({s for s, _ in pairs})
    q = (
        sa.select(e.site, e.device, e.ts, e.data)
        .where(e.type == "kiosk.consumable", e.ts >= since, e.site.in_(sites))
        .order_by(e.ts)
        .limit(limit)
    )
    wanted = set(keys)
    for r in await store.fetch(q):
        key = f"{r.site}/{r.device}"
        if key not in wanted:
            continue
        try:
            data = json.loads(r.data)
        except ValueError:
            continue
        level = data.get("level_pct")
        if isinstance(level, int | float) and not isinstance(level, bool):
            out.setdefault((key, str(data.get("consumable", ""))), []).append((r.ts, float(level)))
    return out
