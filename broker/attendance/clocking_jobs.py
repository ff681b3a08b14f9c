"""The consumer's timer job for proxy clocking (broker/attendance/proxy_clocking.py has the patterns and the
flags): every tick, each site's last ``lookback_days`` local days are read again, punches a terminal sent late
included, and what they raise is recorded. Flags are insert-ignore on (punch, pattern), so several consumers may
run it; a notice tells window management of new flags, from the transaction that inserted them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from broker.alerts.routing import Router
from broker.attendance.exceptions import exceptions_for
from broker.attendance.proxy_clocking import PATTERN_ZH, ClockingFlag, days_to_scan, detect, record_flags, refusals
from broker.attendance.service import day_bounds, load_punches
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store.db import Store

log = logging.getLogger(__name__)


class ClockingScan:
    """Scans each site whose attendance and proxy-clocking checks are on."""

    def __init__(self, store: Store, sites: Sites, router: Router) -> None:
        self.store = store
        self.sites = sites
        self.router = router

    async def tick(self, now: datetime) -> list[ClockingFlag]:
        new: list[ClockingFlag] = []
        for site in self.sites.names():
            cfg = self.sites[site]
            if cfg.attendance.enabled and cfg.proxy_clocking.enabled:
                new += await self.scan(site, now)
        return new

    async def scan(self, site: str, now: datetime) -> list[ClockingFlag]:
        cfg = self.sites[site]
        policy, zone = cfg.proxy_clocking, cfg.site_calendar.zone
        first, last = days_to_scan(now.astimezone(zone).date(), policy)
        start, end = day_bounds(first, last, zone)
        reach = timedelta(seconds=max(policy.travel_s, policy.fallback_s, policy.chain_gap_s))
        async with self.store.engine.connect() as conn:
            by_staff = await load_punches(conn, site, start - reach, end, cfg.attendance)
            refused = await refusals(conn, site, start - reach, end)
            leave = await exceptions_for(conn, site, first, last, zone=zone)
        punches = [p for ps in by_staff.values() for p in ps]
        flagged = detect(punches, refused, leave, policy, zone, cfg.site_calendar.sessions_on)
        found = [f for f in flagged if f.punch.at >= start]
        if not found:
            return []
        async with self.store.engine.begin() as conn:
            added = await record_flags(conn, site, found, now)
            if added:
                await self.router.enqueue(conn, _notice(site, added, now), now)
        if added:
            log.info("attendance: %s: %d proxy-clocking flag(s) raised", site, len(added))
        return added


def _notice(site: str, flags: Sequence[ClockingFlag], now: datetime) -> Notice:
    events_ = sorted({f.punch.event_id for f in flags})
    patterns = sorted({f.pattern for f in flags})
    devices = sorted({f.punch.device for f in flags})
    what_zh, what_en = "、".join(PATTERN_ZH[p] for p in patterns), ", ".join(patterns)
    return Notice(
        ref=f"clocking:{events_[0]}",
        step="proxy_suspect",
        site=site,
        device=devices[0] if len(devices) == 1 else "*",
        device_class="attendance",
        kind="proxy_clocking",
        severity="minor",
        summary_zh=f"{len(events_)} 次打卡疑似代打卡 ({what_zh}), 请在考勤页核实",
        summary_en=f"{len(events_)} punch(es) look like proxy clocking ({what_en}); review them on the attendance page",
        facts={
            "at": now.isoformat(),
            "events": events_,
            "patterns": patterns,
            "details": sorted({f.detail for f in flags}),
        },
    )
