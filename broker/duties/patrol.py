"""Patrol rounds (QP 000:120 「每天两次巡查」, contents incl. 「电子评价器显示情况」 QP 000:122; WZ 002:133 定时巡查
上午 9:30, 下午 13:40): a round is made when the duty officers' scans (``patrol.scan``, agent/roles/patrol.py)
within its window reach at least ``min_coverage_pct`` of the site's patrol points (its devices of
``point_classes``). After the window ends, a round short of that is ``missed`` and reported with the points it
did not reach; before, ``pending``. Only on working days: the rounds are the hall's, not the 24-hour area's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.duties.common import at_local, day_bounds, day_events, of_classes, site_devices
from broker.duties.policy import PatrolRound
from broker.sites import SiteConfig

RoundVerdict = Literal["done", "missed", "pending"]


@dataclass(frozen=True, slots=True)
class RoundDay:
    day: date
    name: str
    start: datetime
    end: datetime
    verdict: RoundVerdict
    coverage_pct: float
    points: int  # the site's patrol points that day
    missing: tuple[str, ...]  # points not scanned in the window
    officers: tuple[str, ...]
    issues: tuple[str, ...]  # points the officer marked with a problem


def judge(
    rnd: tuple[datetime, datetime], scans: list[tuple[datetime, dict[str, Any]]], points: list[str], min_pct: float,
    now: datetime,
) -> tuple[RoundVerdict, float, tuple[str, ...]]:  # fmt: skip
    start, end = rnd
    seen = {s["point"] for t, s in scans if start <= t <= end}
    missing = tuple(p for p in points if p not in seen)
    pct = 100.0 if not points else 100.0 * (len(points) - len(missing)) / len(points)
    if pct >= min_pct:
        return "done", pct, missing
    return ("pending" if now < end else "missed"), pct, missing


async def patrol_day(conn: AsyncConnection, site: str, cfg: SiteConfig, day: date, now: datetime) -> list[RoundDay]:
    policy = cfg.duties.patrol
    if not policy.rounds or not cfg.site_calendar.is_working_day(day):
        return []
    zone = cfg.site_calendar.zone
    start, end = day_bounds(day, zone)
    points = [d.device for d in of_classes(await site_devices(conn, site, cfg, end), policy.point_classes)]
    scans = [(ts, data) for _, ts, data in await day_events(conn, site, "patrol.scan", start, end)]
    return [_round(day, r, scans, points, policy.min_coverage_pct, now, zone) for r in policy.rounds]


def _round(
    day: date, r: PatrolRound, scans: list[tuple[datetime, dict[str, Any]]], points: list[str], min_pct: float,
    now: datetime, zone: Any,
) -> RoundDay:  # fmt: skip
    window = (at_local(day, r.start, zone), at_local(day, r.end, zone))
    verdict, pct, missing = judge(window, scans, points, min_pct, now)
    inside = [s for t, s in scans if window[0] <= t <= window[1]]
    officers = tuple(sorted({s["officer"] for s in inside}))
    issues = tuple(sorted({s["point"] for s in inside if s.get("finding") == "issue"}))
    return RoundDay(day, r.name, window[0], window[1], verdict, pct, len(points), missing, officers, issues)
