"""Staff-day verdicts from the raw punches, recomputed on every call.

Punches are immutable ``attendance.punch`` events; nothing derived from them is stored. A punch that an offline
terminal delivers days late therefore changes the verdict of its day the next time anyone asks, until that day
is locked: a lock (the correction deadline passed, §1.3, §1.4) freezes the verdict that stood, whatever arrives
afterwards.

Which time a punch counts at: the terminal's clock when it was synchronised and the site trusts the terminal
(``authoritative = "device"``, e.g. Nanshan's fingerprint recorder is the record, §1.1), else the centre's receive
time; a punch read at the receive time because the terminal's clock was not synchronised is marked untrusted, so
the verdict says so.

Nobody is judged before the system or the person existed: days before the site's go-live date (``go_live``, else
the day of its first stored punch) and before a person's roster start date (入职日期) get no verdict at all, so
they are neither reported nor locked; ``Period.judged_from`` says where judging starts, for the reports to say so.
Today is judged as it stands now (``verdicts`` rule 8: provisional until the day is over).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.attendance.ab import apply_handover
from broker.attendance.exceptions import exceptions_for, locks_for
from broker.attendance.faults import fault_windows
from broker.attendance.labels import VERDICT_ZH
from broker.attendance.model import Exception_, FaultWindow, Punch, StaffDay, Verdict
from broker.attendance.policy import PunchPolicy
from broker.attendance.proxy_clocking import confirmed_proxy, left_out_notes, without_confirmed
from broker.attendance.roster import StaffMember, roster
from broker.attendance.verdicts import EXCUSED_NOTE, judge_day
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import events

log = logging.getLogger(__name__)

PUNCH = "attendance.punch"
# The device-clock window is widened by this much, so that a punch whose synchronised clock and receive time
# straddle the period's edge is read once and judged by the right time below.
MARGIN = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Period:
    """What the reports of a site and period are drawn from."""

    site: str
    site_name: str
    first: date
    last: date  # the last day judged: the period's end or today, whichever is earlier
    zone: tzinfo
    members: list[StaffMember]
    days: list[StaffDay]
    faults: list[FaultWindow]
    judged_from: date | None = None  # the site's go-live (None: not live yet, nothing judged)


# -- punches ---------------------------------------------------------------------------------------------
async def load_punches(
    conn: AsyncConnection, site: str, start: datetime, end: datetime, policy: PunchPolicy
) -> dict[str, list[Punch]]:
    """The site's punches whose counted time lies in ``[start, end)``, per staff member in time order.

    Two reads: by the device clock through the (type, ts) index, and by the receive time for the punches whose
    device clock cannot be used (unsynchronised, or the centre's clock is authoritative) and lies outside the
    first read's window: a terminal with a dead clock battery stamps 1970."""
    centre = policy.authoritative == "centre"
    rows = [*(await conn.execute(_by_device_clock(site, start, end))).all()]
    rows += (await conn.execute(_by_receive_time(site, start, end, centre))).all()
    out: defaultdict[str, list[Punch]] = defaultdict(list)
    for p in _unique_punches(rows, centre):
        if start <= p.at < end:
            out[p.staff_id].append(p)
    for punches in out.values():
        punches.sort(key=lambda p: (p.at, p.event_id))
    return dict(out)


def _columns() -> list[Any]:
    c = events.c
    return [c.device, c.id, c.ts, c.clock_synced, c.received_at, c.data]


def _by_device_clock(site: str, start: datetime, end: datetime) -> sa.Select[Any]:
    c = events.c
    return sa.select(*_columns()).where(c.type == PUNCH, c.ts >= start - MARGIN, c.ts < end + MARGIN, c.site == site)


def _by_receive_time(site: str, start: datetime, end: datetime, centre: bool) -> sa.Select[Any]:
    c = events.c
    query = sa.select(*_columns()).where(
        c.type == PUNCH,
        c.site == site,
        c.received_at >= start,
        c.received_at < end,
        sa.or_(c.ts < start - MARGIN, c.ts >= end + MARGIN),  # not read by the device-clock query already
    )
    return query if centre else query.where(c.clock_synced == sa.false())


def _unique_punches(rows: Iterable[Any], centre: bool) -> Iterator[Punch]:
    seen: set[tuple[str, str]] = set()
    for r in rows:
        if (r.device, r.id) in seen:
            continue
        seen.add((r.device, r.id))
        p = _punch(r, centre)
        if p is not None:
            yield p


def _punch(r: Any, centre: bool) -> Punch | None:
    try:
        data = json.loads(r.data)
        staff_id, method = str(data["staff_id"]), str(data.get("method", ""))
    except (ValueError, KeyError, TypeError):  # the consumer validated it; an unreadable row costs one punch
        log.error("attendance.punch %s/%s is unreadable and was left out", r.device, r.id)
        return None
    synced = bool(r.clock_synced)
    return Punch(
        event_id=r.id,
        staff_id=staff_id,
        at=r.ts if synced and not centre else r.received_at,
        method=method,
        device=r.device,
        trusted=synced,
        device_ts=r.ts,
        received_at=r.received_at,
    )


# -- staff-days ------------------------------------------------------------------------------------------
async def staff_days(
    store: Store, sites: Sites, site: str, first: date, last: date, *, now: datetime
) -> list[StaffDay]:
    """Every employed staff member's verdict on every day of ``[first, last]`` up to today, locks applied."""
    return (await load_period(store, sites, site, first, last, now=now)).days


async def load_period(store: Store, sites: Sites, site: str, first: date, last: date, *, now: datetime) -> Period:
    cfg = sites[site]
    cal = cfg.site_calendar
    policy = cfg.attendance
    async with store.engine.connect() as conn:
        live = await go_live(conn, cfg, site)
    judged_first = max(first, live) if live is not None else last + timedelta(days=1)
    judged_last = min(last, now.astimezone(cal.zone).date())  # days after now have nothing to judge yet
    if not policy.enabled:  # a hall without an attendance rule (G17): nothing is judged, so nothing gets locked
        judged_last = judged_first - timedelta(days=1)
    start, end = day_bounds(first, last, cal.zone)
    async with store.engine.connect() as conn:
        members = await roster(conn, site, first, last)
        stored = await load_punches(conn, site, start, end, policy) if judged_first <= judged_last else {}
        punches = without_confirmed(stored, await confirmed_proxy(conn, site, start, end), cfg.proxy_clocking)
        exceptions = await exceptions_for(conn, site, first, last, zone=cal.zone)
        faults = await fault_windows(conn, site, start, end)
        locks = await locks_for(conn, site, first, last)
    left_out = left_out_notes(stored, punches, cal.zone)
    days: list[StaffDay] = []
    for m in members:
        by_day = _by_local_day(punches.get(m.staff_id, []), cal.zone)
        own = exceptions.get(m.staff_id, [])
        for day in employed_days(m, judged_first, judged_last):
            verdict = judge_day(m.staff_id, day, cal, policy, _around(by_day, day), own, faults, now)
            if (note := left_out.get((m.staff_id, day))) is not None:
                verdict = replace(verdict, notes=(*verdict.notes, note))
            days.append(_apply_lock(verdict, locks.get((m.staff_id, day))))
    days = _handover(days, members, exceptions, cfg, now)
    judged_from = live if live is not None and policy.enabled else None
    return Period(site, cfg.name or site, first, judged_last, cal.zone, members, days, faults, judged_from)


async def go_live(conn: AsyncConnection, cfg: SiteConfig, site: str) -> date | None:
    """The first day judged: the configured go-live date, else the local day of the site's first punch stamped by a
    synchronised clock (a terminal with a dead clock battery stamps 1970); None while the site has none."""
    if cfg.go_live is not None:
        return cfg.go_live
    c = events.c
    first = await conn.scalar(
        sa.select(sa.func.min(c.ts)).where(c.type == PUNCH, c.site == site, c.clock_synced == sa.true())
    )
    return None if first is None else first.astimezone(cfg.site_calendar.zone).date()


def _handover(
    days: list[StaffDay],
    members: list[StaffMember],
    exceptions: dict[str, list[Exception_]],
    cfg: SiteConfig,
    now: datetime,
) -> list[StaffDay]:
    """Ningshan's handover rule needs a window's holders side by side, so it runs per day after judging."""
    if cfg.attendance.ab.handover == "notify" or not days:
        return days
    cal = cfg.site_calendar
    by_day: defaultdict[date, list[StaffDay]] = defaultdict(list)
    for d in days:
        by_day[d.day].append(d)
    out: list[StaffDay] = []
    for day, group in sorted(by_day.items()):
        judged = [d for d in group if not d.locked]  # a locked day keeps the verdict frozen at its deadline
        out += apply_handover(judged, members, exceptions, cal.sessions_on(day), cfg.attendance.ab, cal.zone, now)
        out += [d for d in group if d.locked]
    return out


def employed_days(m: StaffMember, first: date, last: date) -> Iterator[date]:
    day = max(first, m.start_date) if m.start_date else first
    until = min(last, m.end_date) if m.end_date else last
    while day <= until:
        yield day
        day += timedelta(days=1)


def day_bounds(first: date, last: date, zone: tzinfo) -> tuple[datetime, datetime]:
    """The first instant of ``first`` and of the day after ``last``, in the site's zone."""
    return datetime.combine(first, time(), zone), datetime.combine(last + timedelta(days=1), time(), zone)


def _by_local_day(punches: list[Punch], zone: tzinfo) -> dict[date, list[Punch]]:
    out: defaultdict[date, list[Punch]] = defaultdict(list)
    for p in punches:
        out[p.at.astimezone(zone).date()].append(p)
    return out


def _around(by_day: dict[date, list[Punch]], day: date) -> list[Punch]:
    """The day's punches and its neighbours': a wide sign-in or sign-out window may reach across midnight."""
    return [p for d in (day - timedelta(days=1), day, day + timedelta(days=1)) for p in by_day.get(d, ())]


def _apply_lock(day: StaffDay, lock: tuple[Any, str] | None) -> StaffDay:
    """A locked day keeps the verdict frozen at its deadline (非正常考勤); what the punches say now is a note when it
    differs. Proof can no longer excuse it, so no note may say it did."""
    if lock is None:
        return day
    verdict, reason = Verdict(lock[0]), lock[1]
    notes = tuple(n for n in day.notes if not n.startswith(EXCUSED_NOTE))
    if verdict is not day.verdict:
        notes = (*notes, f"按原始打卡重算为{VERDICT_ZH[day.verdict]}, 已锁定, 不改")
    return replace(day, verdict=verdict, reason=reason, locked=True, notes=notes)


__all__ = [
    "MARGIN",
    "PUNCH",
    "Period",
    "day_bounds",
    "employed_days",
    "load_period",
    "load_punches",
    "staff_days",
]
