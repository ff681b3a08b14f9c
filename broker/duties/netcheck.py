"""The kiosks' daily network check (QP 000:389 「网络日常检查」): each kiosk's agent checks gateway, DNS, the centre
and the extranet itself once a day (agent/netcheck.py); the centre flags a kiosk whose check failed, or whose
check had not arrived by ``due``.

Verdict of one device and day, from the checks it took that day (device time): ``ok`` if any passed; ``failed``
if all it took failed; ``missing`` once ``due`` passed without any; ``pending`` before.

On a day the hall is closed only the 24-hour devices owe a check: a hall kiosk switched off for the weekend
cannot run one, and telling technicians of every such kiosk every Saturday would bury the real misses. A hall
kiosk that did check that day is still judged (a failed check is worth knowing whenever it was taken).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.duties.common import at_local, day_bounds, day_events, of_classes, site_devices
from broker.sites import SiteConfig

NetVerdict = Literal["ok", "failed", "missing", "pending"]


@dataclass(frozen=True, slots=True)
class NetCheckDay:
    device: str
    day: date
    verdict: NetVerdict
    checked_at: datetime | None  # the last check of the day
    failed: tuple[str, ...]  # the targets the last failing check could not reach


def verdict(checks: list[dict[str, Any]], now: datetime, due: datetime) -> NetVerdict:
    if any(c.get("ok") for c in checks):
        return "ok"
    if checks:
        return "failed"
    return "pending" if now < due else "missing"


async def netcheck_day(
    conn: AsyncConnection, site: str, cfg: SiteConfig, day: date, now: datetime
) -> list[NetCheckDay]:
    zone = cfg.site_calendar.zone
    start, end = day_bounds(day, zone)
    due = at_local(day, cfg.duties.netcheck.due, zone)
    found = of_classes(await site_devices(conn, site, cfg, end), cfg.duties.netcheck.device_classes)
    checks: dict[str, list[tuple[datetime, dict[str, Any]]]] = {}
    for device, ts, data in await day_events(conn, site, "duty.netcheck", start, end):
        checks.setdefault(device, []).append((ts, data))
    if not cfg.site_calendar.is_working_day(day):
        found = [d for d in found if d.hours24 or d.device in checks]
    out = []
    for d in found:
        mine = checks.get(d.device, [])
        failing = [data for _, data in mine if not data.get("ok")]
        failed = tuple(p["target"] for p in failing[-1]["probes"] if not p["ok"]) if failing else ()
        v = verdict([data for _, data in mine], now, due)
        out.append(NetCheckDay(d.device, day, v, mine[-1][0] if mine else None, failed if v == "failed" else ()))
    return out
