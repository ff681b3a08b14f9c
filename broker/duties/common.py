"""What every duty reads: the site's devices of some classes, a local day's bounds, a day's events of a type."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.sites import SiteConfig
from broker.store.schema import devices, events


@dataclass(frozen=True, slots=True)
class SiteDevice:
    key: str
    device: str
    device_class: str
    hours24: bool  # serves every day (the 24-hour area), not only the hall's working days


def at_local(day: date, hhmm: str, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time.fromisoformat(hhmm), zone)


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(0), zone)
    return start, datetime.combine(day + timedelta(days=1), time(0), zone)


async def site_devices(conn: AsyncConnection, site: str, cfg: SiteConfig, before: datetime) -> list[SiteDevice]:
    """The site's devices first heard of before ``before`` (a device installed later is not judged for that day)."""
    d = devices.c
    rows = await conn.execute(
        sa.select(d.key, d.device, d.role, d.hours24).where(d.site == site, d.first_seen < before).order_by(d.device)
    )
    return [
        SiteDevice(r.key, r.device, cfg.device_class(r.device, r.role), cfg.is_always_on(r.device, r.hours24))
        for r in rows
    ]


def of_classes(found: Iterable[SiteDevice], classes: list[str]) -> list[SiteDevice]:
    return [x for x in found if x.device_class in classes]


async def day_events(
    conn: AsyncConnection, site: str, event_type: str, start: datetime, end: datetime
) -> list[tuple[str, datetime, dict[str, Any]]]:
    """(device, device time, payload) of a type in [start, end): the duty counts when it was done, not received."""
    e = events.c
    rows = await conn.execute(
        sa.select(e.device, e.ts, e.data)
        .where(e.type == event_type, e.site == site, e.ts >= start, e.ts < end)
        .order_by(e.ts)
    )
    return [(r.device, r.ts, json.loads(r.data)) for r in rows]
