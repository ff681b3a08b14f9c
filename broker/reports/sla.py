"""The monthly kiosk SLA report: availability per device, incidents with their time to restore and
breaches, on-site dispatches, consumables refilled and usage by function (requirements §2.4, §11.4, §11.6).

Availability counts the device's own SLA hours: the hall's opening hours, or wall-clock time for a 24-hour
device. The report counts outages, not rows: one incident per outage (broker/rules/incidents.py), whose
conditions are its timeline. Downtime is the union of the times the device could not serve (its offline, kiosk
down, staff-reported, door controller or locker board offline conditions, [began, cleared)) clipped to the
month, so the minutes between a flap's recovery and its return are not downtime, and two conditions at once are
not counted twice. Time to restore runs
on the incident's one clock, from the outage's first fault to its last clear (``sla_elapsed_s``: the dashboard's
clock of an incident is the same function, so the two never disagree). Incidents, breaches, recoveries and
MTTR count the outages (severity major or critical); lesser incidents (a printer's minor fault, a consumable) are
listed, not counted. A hall-wide outage is listed but not counted again: each device it covers has its own
outage, and the site's totals are the sums of the device rows, so the sheets add up.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

import sqlalchemy as sa

from broker.audit.heads import MonthHeads, month_heads
from broker.reports.model import DeviceRow, IncidentRow, SlaReport
from broker.rules.incidents import HALL_OUTAGE, hours_of, on_the_clock
from broker.rules.incidents import OUTAGE_KINDS as DEVICE_OUTAGES
from broker.sites import SiteConfig, Sites
from broker.store.db import Store, heard_from
from broker.store.schema import devices, dispatches, events, incident_conditions, incidents, service_records

# The kiosk cannot serve. "reported": site staff reported an outage hallfleet did not see (broker/rules).
# What counts as downtime: the rules' outage kinds, and the hall-wide outage (listed, never a device's).
OUTAGE_KINDS = frozenset({*DEVICE_OUTAGES, HALL_OUTAGE})
HALL = "*"  # the device of a hall-wide outage
_MONTH = re.compile(r"(\d{4})-(\d{2})")

Span = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class _Window:
    start: datetime
    end: datetime  # the next month's first instant
    until: datetime  # what is counted: the month up to now


@dataclass(slots=True)
class _DeviceData:
    role: str = ""
    first_seen: datetime | None = None
    hours24: bool | None = None  # as registered; None: the site's deprecated name patterns decide
    down: list[Span] = field(default_factory=list)  # when it could not serve (outage conditions)
    incidents: list[IncidentRow] = field(default_factory=list)
    dispatches: list[Any] = field(default_factory=list)
    refills: Counter[str] = field(default_factory=Counter)
    usage: dict[str, int] = field(default_factory=dict)


async def build_sla_report(store: Store, sites: Sites, site: str, month: str, *, now: datetime) -> SlaReport:
    cfg = sites[site]
    zone = cfg.site_calendar.zone
    start, end = month_bounds(month, zone)
    win = _Window(start, end, max(start, min(end, now)))
    data: defaultdict[str, _DeviceData] = defaultdict(_DeviceData)
    d = devices.c
    # A device registered ahead of its first connection was not in service: not counted until it speaks.
    in_service = sa.select(d.device, d.role, d.first_seen, d.hours24).where(d.site == site, heard_from())
    for r in await store.fetch(in_service):
        data[r.device].role, data[r.device].first_seen, data[r.device].hours24 = r.role, r.first_seen, r.hours24
    rows = [_incident_row(r, cfg, zone) for r in await store.fetch(_incidents_query(site, win))]
    for row in rows:
        if row.device != HALL:
            data[row.device].incidents.append(row)
    for r in await store.fetch(_down_query(site, win)):
        data[r.device].down.append((r.began_at.astimezone(zone), _local(r.cleared_at, zone) or win.until))
    for r in await store.fetch(_dispatches_query(site, win)):
        data[r.key.partition("/")[2]].dispatches.append(r)
    for r in await store.fetch(_refills_query(site, win)):
        data[r.key.partition("/")[2]].refills[r.item] += 1
    for device, used in _usage(await store.fetch(_usage_query(site, win))).items():
        data[device].usage = used
    data.pop(HALL, None)  # a dispatch for the hall as a whole belongs to no device row
    return SlaReport(
        site=site,
        site_name=cfg.name or site,
        month=month,
        start=start,
        end=end,
        devices=[_device_row(cfg, site, name, win, data[name]) for name in sorted(data)],
        incidents=rows,
        generated_at=now.astimezone(zone),
        heads=await _heads(store, month),
    )


async def _heads(store: Store, month: str) -> MonthHeads:
    async with store.engine.connect() as conn:
        return await month_heads(conn, month)


def month_bounds(month: str, zone: tzinfo) -> Span:
    """``"2026-11"`` -> the first instants of November and of December in ``zone``."""
    m = _MONTH.fullmatch(month)
    if m is None or not 1 <= int(m.group(2)) <= 12:
        raise ValueError(f"month {month!r} is not YYYY-MM (e.g. 2026-11)")
    year, mon = int(m.group(1)), int(m.group(2))
    next_year, next_mon = (year + 1, 1) if mon == 12 else (year, mon + 1)
    return datetime(year, mon, 1, tzinfo=zone), datetime(next_year, next_mon, 1, tzinfo=zone)


# -- queries -------------------------------------------------------------------------------------------
def _incidents_query(site: str, win: _Window) -> sa.Select[Any]:
    """Every incident whose downtime touches the month: detected before its end, not cleared before its start."""
    c = incidents.c
    not_over = sa.or_(
        c.cleared_at >= win.start,
        sa.and_(c.cleared_at.is_(None), sa.or_(c.closed_at.is_(None), c.closed_at >= win.start)),
    )
    return sa.select(incidents).where(c.site == site, c.detected_at < win.end, not_over).order_by(c.detected_at, c.id)


def _down_query(site: str, win: _Window) -> sa.Select[Any]:
    """The conditions during which a device could not serve that touch the month."""
    c, k = incidents.c, incident_conditions.c
    return (
        sa.select(c.device, k.began_at, k.cleared_at)
        .select_from(incident_conditions.join(incidents, c.id == k.incident_id))
        .where(c.site == site, c.device != HALL, k.kind.in_(DEVICE_OUTAGES), k.began_at < win.end)
        .where(sa.or_(k.cleared_at.is_(None), k.cleared_at >= win.start))
    )


def _dispatches_query(site: str, win: _Window) -> sa.Select[Any]:
    c = dispatches.c
    return sa.select(dispatches).where(
        c.site == site, c.opened_at >= win.start, c.opened_at < win.end, c.state != "cancelled"
    )


def _refills_query(site: str, win: _Window) -> sa.Select[Any]:
    c = service_records.c
    return sa.select(c.key, c.item).where(c.site == site, c.kind == "refill", c.at >= win.start, c.at < win.end)


def _usage_query(site: str, win: _Window) -> sa.Select[Any]:
    c = events.c
    return (
        sa.select(c.device, c.data)
        .where(c.type == "kiosk.usage", c.site == site, c.ts >= win.start, c.ts < win.end)
        .order_by(c.device, c.ts, c.seq)
    )


# -- rows ----------------------------------------------------------------------------------------------
def sla_started_at(r: Any) -> datetime:
    """Where an incident's clock starts: the outage's first fault, or site staff's report if that came first
    (the regulation's own start of the 30 minutes, broker/rules/actions.py)."""
    return min(r.detected_at, r.staff_reported_at or r.detected_at)


def restored_at(r: Any) -> datetime | None:
    """When the outage ended: its last condition cleared (the verification after it is not downtime)."""
    return r.cleared_at or r.closed_at


def sla_elapsed_s(r: Any, cfg: SiteConfig, now: datetime) -> float:
    """SLA time of an incident on its one clock, from its start to its restoration, or to ``now`` while it is
    still down: the report's time to restore and the dashboard's clock (broker/api/queries.py) are this."""
    return hours_of(cfg, bool(r.hours24)).open_seconds(sla_started_at(r), restored_at(r) or now)


def _incident_row(r: Any, cfg: SiteConfig, zone: tzinfo) -> IncidentRow:
    restored = restored_at(r)
    return IncidentRow(
        id=r.id,
        device=r.device,
        kind=r.kind,
        severity=r.severity,
        detected_at=r.detected_at.astimezone(zone),
        cleared_at=_local(r.cleared_at, zone),
        closed_at=_local(r.closed_at, zone),
        ttr_s=sla_elapsed_s(r, cfg, restored) if restored is not None else None,
        breached=r.breached_at is not None,
        breach_reason=r.breach_reason,
        recovery=r.recovery,
        staff_reported_at=_local(r.staff_reported_at, zone),
        outage=r.device != HALL and on_the_clock(r.severity),
        in_hall_outage=r.parent_id is not None,
    )


def _device_row(cfg: SiteConfig, site: str, device: str, win: _Window, d: _DeviceData) -> DeviceRow:
    hours = cfg.hours_for(device, d.hours24)
    # A device installed (first heard of) during the month is counted from then, not from the 1st.
    since = max(win.start, d.first_seen) if d.first_seen is not None else win.start
    counted = hours.open_seconds(since, win.until) if since < win.until else 0.0
    spans = [(max(s, win.start), min(e, win.until)) for s, e in d.down]
    down = sum(hours.open_seconds(s, e) for s, e in _merge(spans))
    own = [r for r in d.incidents if r.outage and win.start <= r.detected_at < win.end]
    ttrs = [r.ttr_s for r in own if r.ttr_s is not None]
    recoveries = Counter(r.recovery for r in own)
    return DeviceRow(
        site=site,
        device=device,
        device_class=cfg.device_class(device, d.role),
        hours24=cfg.is_always_on(device, d.hours24),
        counted_s=counted,
        down_s=down,
        availability_pct=100.0 * (1.0 - down / counted) if counted > 0 else None,
        incidents=len(own),
        breaches=sum(r.breached for r in own),
        mttr_s=sum(ttrs) / len(ttrs) if ttrs else None,
        max_ttr_s=max(ttrs) if ttrs else None,
        self_healed=recoveries["self_healed"],
        remote=recoveries["remote"],
        on_site=recoveries["on_site"],
        dispatches=len(d.dispatches),
        dispatches_late=sum(_late(r, win.until) for r in d.dispatches),
        refills=dict(sorted(d.refills.items())),
        usage=d.usage,
    )


def _merge(spans: Iterable[Span]) -> list[Span]:
    """Overlapping or touching spans joined, empty ones dropped, in time order."""
    out: list[Span] = []
    for s, e in sorted(x for x in spans if x[1] > x[0]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def _late(r: Any, until: datetime) -> bool:
    """Nobody on site by the due time. Arrival decides (§2.4: "go on-site within the working day"); a row
    without an arrival time falls back to its completion; one with neither is late once the due time passed."""
    visited = r.arrived_at or r.done_at
    return bool(visited > r.due_at) if visited is not None else bool(r.due_at < until)


def _usage(readings: Iterable[Any]) -> dict[str, dict[str, int]]:
    """Uses per device and counter from cumulative readings in time order: the sum of the increases between
    the month's readings. A counter that goes down was reset (the application restarted), so the reading
    after the reset counts whole."""
    last: dict[tuple[str, str], int] = {}
    used: defaultdict[str, dict[str, int]] = defaultdict(dict)
    for r in readings:
        for name, value in _counters(r.data).items():
            prev = last.get((r.device, name))
            step = 0 if prev is None else value - prev if value >= prev else value
            used[r.device][name] = used[r.device].get(name, 0) + step
            last[(r.device, name)] = value
    return {device: dict(sorted(c.items())) for device, c in used.items()}


def _counters(data: str) -> dict[str, int]:
    try:
        counters = json.loads(data).get("counters", {})
    except (ValueError, AttributeError):  # the consumer validated it; an unreadable row costs one reading
        return {}
    if not isinstance(counters, dict):
        return {}
    return {k: v for k, v in counters.items() if isinstance(v, int) and not isinstance(v, bool) and v >= 0}


def _local(t: datetime | None, zone: tzinfo) -> datetime | None:
    return t.astimezone(zone) if t is not None else None
