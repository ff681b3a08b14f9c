"""What the consumer does for attendance on its own, on a timer:

- lock every staff-day whose correction deadline has passed (QP 000:34, 000:43: after 2 working days an
  unexplained exception stands as 非正常考勤);
- once a working day, after sign-in, tell window management which windows have neither their A nor
  their B post at work (QP 000:107-113, WZ 002:168-182).

Both are safe on several consumers: locks are insert-ignore, and the A/B notice is deduplicated by its
notification key (one per site, day and recipient).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from broker.alerts.routing import Router
from broker.attendance.ab import uncovered_windows
from broker.attendance.exceptions import lock_due
from broker.attendance.model import StaffDay
from broker.attendance.roster import roster
from broker.attendance.service import staff_days
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import staff

log = logging.getLogger(__name__)

AB_CHECK_AFTER = timedelta(minutes=30)  # after the first session starts: people arriving late have punched


class AttendanceJobs:
    def __init__(self, store: Store, sites: Sites, router: Router) -> None:
        self.store = store
        self.sites = sites
        self.router = router

    async def tick(self, now: datetime) -> None:
        async def compute(site: str, first: date, last: date) -> list[StaffDay]:
            return await staff_days(self.store, self.sites, site, first, last, now=now)

        locked = await lock_due(self.store, self.sites, now, compute)
        if locked:
            log.info("attendance: %d staff-day(s) locked at their correction deadline", locked)
        for site in await self._sites_with_staff():
            await self._ab_check(site, now)

    async def _sites_with_staff(self) -> list[str]:
        return [r.site for r in await self.store.fetch(sa.select(staff.c.site).distinct())]

    async def _ab_check(self, site: str, now: datetime) -> None:
        cfg = self.sites[site]
        if not cfg.attendance.enabled:
            return
        cal = cfg.site_calendar
        today = now.astimezone(cal.zone).date()
        sessions = cal.sessions_on(today)
        if not sessions or now < sessions[0][0] + AB_CHECK_AFTER:
            return
        days = await staff_days(self.store, self.sites, site, today, today, now=now)
        async with self.store.engine.connect() as conn:
            members = await roster(conn, site, today, today)
        empty = uncovered_windows(members, days, today)
        if not empty:
            return
        notice = Notice(
            ref=f"ab:{site}:{today.isoformat()}",
            step="ab_uncovered",
            site=site,
            device="*",
            device_class="attendance",
            kind="ab_uncovered",
            severity="major",
            summary_zh=f"{today:%m-%d} 以下窗口 A、B 岗均未到岗: {', '.join(empty)}",
            summary_en=f"{today:%m-%d}: neither the A nor the B post is at work at windows {', '.join(empty)}",
            facts={"at": now.isoformat(), "windows": empty},
        )
        async with self.store.engine.begin() as conn:
            who = await self.router.enqueue(conn, notice, now)
        if who:
            log.warning("attendance: %s windows uncovered at %s; told %s", len(empty), site, ", ".join(who))
