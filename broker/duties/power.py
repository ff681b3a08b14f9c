"""The departmental self-service machines' daily power-on and power-off (WZ 002:491 「各专区配备的专属本部门业务
权限的自助服务区计算机设备的每日开关机由各职能部门自行负责,消除安全隐患,确保用电安全」), checked from what the
machines' agents say: every event carries the kernel's ``boot_id``, so a new boot id is a power-on; the status
message says ``shutdown`` on a clean stop.

Per working day, per machine of a department (policy ``departments``):
- on: ``ok`` booted by ``on_by``; ``late`` booted after it; ``left_on`` no new boot but running from the day
  before (yesterday's off verdict says so); ``not_on`` nothing heard all day (after ``on_by``); ``pending``.
- off: ``not_off`` the day's last boot still spoke after ``off_by``; ``ok`` it went quiet with a clean
  ``shutdown``; ``unclean`` it went quiet without one (power pulled, or the network lost and never back with
  that boot); ``pending`` until ``off_by`` plus the grace for a last heartbeat; ``none`` never switched on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.duties.common import at_local, day_bounds, site_devices
from broker.sites import SiteConfig
from broker.store.schema import events, presence_history

OnVerdict = Literal["ok", "late", "left_on", "not_on", "pending"]
OffVerdict = Literal["ok", "not_off", "unclean", "none", "pending"]
GRACE = timedelta(minutes=10)  # a machine shut down at off_by may still have a heartbeat on the way


@dataclass(frozen=True, slots=True)
class Boot:
    boot_id: str
    first: datetime  # its first event that day
    last: datetime  # its last event (up to now)


@dataclass(frozen=True, slots=True)
class PowerDay:
    department: str
    device: str
    day: date
    on: OnVerdict
    off: OffVerdict
    booted_at: datetime | None
    off_at: datetime | None


def on_verdict(boots: list[Boot], carried: str | None, on_by: datetime, now: datetime) -> OnVerdict:
    """``boots``: the boots heard that day, in order; ``carried``: the boot running when the day began."""
    fresh = [b for b in boots if b.boot_id != carried]
    if fresh:
        return "ok" if fresh[0].first <= on_by else "late"
    if boots:
        return "left_on"
    return "pending" if now < on_by else "not_on"


def off_verdict(boots: list[Boot], shutdowns: list[datetime], off_by: datetime, now: datetime) -> OffVerdict:
    if not boots:
        return "none"
    last = boots[-1]
    if last.last > off_by:
        return "not_off"
    if now < off_by + GRACE:
        return "pending"
    return "ok" if any(t >= last.last - GRACE for t in shutdowns) else "unclean"


async def power_day(conn: AsyncConnection, site: str, cfg: SiteConfig, day: date, now: datetime) -> list[PowerDay]:
    policy = cfg.duties.power
    if not policy.departments or not cfg.site_calendar.is_working_day(day):
        return []
    zone = cfg.site_calendar.zone
    start, end = day_bounds(day, zone)
    on_by, off_by = at_local(day, policy.on_by, zone), at_local(day, policy.off_by, zone)
    out = []
    for d in await site_devices(conn, site, cfg, end):
        department = policy.department_of(d.device)
        if department is None:
            continue
        boots, carried = await _boots(conn, site, d.device, start, end)
        shutdowns = await _shutdowns(conn, d.key, start, end + GRACE)
        on, off = on_verdict(boots, carried, on_by, now), off_verdict(boots, shutdowns, off_by, now)
        fresh = [b.first for b in boots if b.boot_id != carried]
        off_at = boots[-1].last if boots and off in ("ok", "unclean") else None
        out.append(PowerDay(department, d.device, day, on, off, fresh[0] if fresh else None, off_at))
    return out


async def _boots(
    conn: AsyncConnection, site: str, device: str, start: datetime, end: datetime
) -> tuple[list[Boot], str | None]:
    e = events.c
    mine = sa.and_(e.site == site, e.device == device)
    carried = await conn.scalar(sa.select(e.boot_id).where(mine, e.ts < start).order_by(e.ts.desc()).limit(1))
    rows = await conn.execute(
        sa.select(e.boot_id, sa.func.min(e.ts).label("first"), sa.func.max(e.ts).label("last"))
        .where(mine, e.ts >= start, e.ts < end)
        .group_by(e.boot_id)
        .order_by(sa.func.min(e.ts))
    )
    return [Boot(r.boot_id, r.first, r.last) for r in rows], carried


async def _shutdowns(conn: AsyncConnection, key: str, start: datetime, end: datetime) -> list[datetime]:
    p = presence_history.c
    rows = await conn.execute(
        sa.select(p.at).where(p.key == key, p.state == "shutdown", p.at >= start, p.at < end).order_by(p.at)
    )
    return [r.at for r in rows]
