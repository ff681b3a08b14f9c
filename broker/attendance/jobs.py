"""What the consumer does for attendance on its own, on a timer:

- lock every staff-day whose correction deadline has passed (QP 000:34, 000:43: after 2 working days an
  unexplained exception stands as 非正常考勤);
- while the hall is open, tell window management of every stretch of at least ``ab.min_gap_min`` minutes in which
  no A/B holder of a window is at the post (QP 000:107, WZ 002:181, SJ 001:947): by time, so both away the same
  morning is a gap even when both are back in the afternoon (``ab.py``).

Both are safe on several consumers: locks are insert-ignore, and each gap's notice is deduplicated by its
notification key (site, window and the gap's start).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, tzinfo

import sqlalchemy as sa

from broker.alerts.routing import Router
from broker.attendance.ab import Gap, coverage_gaps
from broker.attendance.clocking_jobs import ClockingScan
from broker.attendance.locking import lock_due
from broker.attendance.model import StaffDay
from broker.attendance.service import load_period, staff_days
from broker.queueing.windows import told_unattended, windows_with_waiting
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import staff

log = logging.getLogger(__name__)


class AttendanceJobs:
    def __init__(self, store: Store, sites: Sites, router: Router) -> None:
        self.store = store
        self.sites = sites
        self.router = router
        self.clocking = ClockingScan(store, sites, router)  # proxy-clocking flags (clocking_jobs.py)

    async def tick(self, now: datetime) -> None:
        async def compute(site: str, first: date, last: date) -> list[StaffDay]:
            return await staff_days(self.store, self.sites, site, first, last, now=now)

        locked = await lock_due(self.store, self.sites, now, compute)
        if locked:
            log.info("attendance: %d staff-day(s) locked at their correction deadline", locked)
        for site in await self._sites_with_staff():
            await self._ab_check(site, now)
        await self.clocking.tick(now)

    async def _sites_with_staff(self) -> list[str]:
        return [r.site for r in await self.store.fetch(sa.select(staff.c.site).distinct())]

    async def _ab_check(self, site: str, now: datetime) -> None:
        cfg = self.sites[site]
        if not cfg.attendance.enabled:
            return
        cal = cfg.site_calendar
        today = now.astimezone(cal.zone).date()
        sessions = cal.sessions_on(today)
        if not sessions or now <= sessions[0][0]:
            return
        p = await load_period(self.store, self.sites, site, today, today, now=now)
        gaps = coverage_gaps(p.members, p.days, today, sessions, cfg.attendance.ab, now=now)
        if gaps:  # a gap running at a window where tickets wait is the queue job's to tell, with the waits, once
            queued = await windows_with_waiting(self.store, self.sites, site, now)
            gaps = [g for g in gaps if not (g.window in queued and g.end >= now)]
        # A gap the queue job told with its window's tickets is not told again once they are called.
        pending = [(g, _gap_notice(site, g, now, p.zone)) for g in gaps]
        pending = [(g, n) for g, n in pending if not await told_unattended(self.store, n.ref)]
        if not pending:
            return
        async with self.store.engine.begin() as conn:
            for gap, notice in pending:
                who = await self.router.enqueue(conn, notice, now)
                if who:
                    log.warning("attendance: %s window %s uncovered since %s; told %s", site, gap.window,
                                gap.start.isoformat(), ", ".join(who))  # fmt: skip


def _gap_notice(site: str, gap: Gap, now: datetime, zone: tzinfo) -> Notice:
    start, end = gap.start.astimezone(zone), gap.end.astimezone(zone)
    running = gap.end >= now  # still uncovered at the time of the check
    span_zh = f"{start:%m-%d %H:%M} 起" if running else f"{start:%m-%d %H:%M}-{end:%H:%M}"
    span_en = f"since {start:%m-%d %H:%M}" if running else f"{start:%m-%d %H:%M}-{end:%H:%M}"
    holders = "、".join(gap.holders)
    return Notice(
        ref=f"ab:{site}:{gap.window}:{start.isoformat()}",
        step="ab_uncovered",
        site=site,
        device="*",
        device_class="attendance",
        kind="ab_uncovered",
        severity="major",
        summary_zh=f"{gap.window} 窗口 A、B 岗 ({holders}) {span_zh} 均不在岗 ({gap.minutes} 分钟), 请安排顶岗"
        " (QP 000:107, WZ 002:181)",
        summary_en=f"window {gap.window}: neither A nor B post ({holders}) at work {span_en} ({gap.minutes} min);"
        " assign someone to cover",
        facts={"at": now.isoformat(), "window": gap.window, "start": start.isoformat(), "end": end.isoformat(),
               "minutes": gap.minutes, "holders": list(gap.holders)},
    )  # fmt: skip
