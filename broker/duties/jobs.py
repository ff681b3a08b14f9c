"""What the consumer does for the daily duties on its own, on a timer (``DutyJobs.tick``): judge today's (and, just
after midnight, yesterday's) duties of every configured site and tell the people concerned, once each, of what
went wrong, plus the lockers' items left too long (broker/access/lockers.py).

Safe on several consumers: a notice's reference names the site, day, duty and subject, so the notifications'
unique key sends it once whoever judges it first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.access.lockers import check_lockers
from broker.alerts.routing import Router
from broker.duties.netcheck import netcheck_day
from broker.duties.patrol import patrol_day
from broker.duties.power import power_day
from broker.rules.incidents import IncidentRules
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store.db import Store

log = logging.getLogger(__name__)

NET_ZH = {"failed": "网络日常检查未通过", "missing": "网络日常检查未执行"}
NET_EN = {"failed": "daily network check failed", "missing": "daily network check did not run"}


class DutyJobs:
    def __init__(self, store: Store, sites: Sites, router: Router) -> None:
        self.store = store
        self.sites = sites
        self.router = router

    async def tick(self, now: datetime) -> list[Notice]:
        notices: list[Notice] = []
        async with self.store.engine.begin() as conn:
            notices += await check_lockers(conn, self.sites, IncidentRules(self.sites, self.store.roles), now)
            for site in self.sites.names():
                zone = self.sites[site].site_calendar.zone
                today = now.astimezone(zone).date()
                for day in (today - timedelta(days=1), today):
                    notices += await self.judge(conn, site, day, now)
            for n in notices:
                await self.router.enqueue(conn, n, now)
        return notices

    async def judge(self, conn: AsyncConnection, site: str, day: date, now: datetime) -> list[Notice]:
        cfg = self.sites[site]
        out: list[Notice] = []
        for n in await netcheck_day(conn, site, cfg, day, now):
            if n.verdict in NET_ZH:
                why = f" ({', '.join(n.failed)})" if n.failed else ""
                out.append(
                    _notice(
                        site,
                        day,
                        f"netcheck_{n.verdict}",
                        n.device,
                        "kiosk",
                        NET_ZH[n.verdict] + why,
                        NET_EN[n.verdict] + why,
                    )
                )
        for p in await power_day(conn, site, cfg, day, now):
            if p.on == "not_on":
                out.append(
                    _notice(
                        site,
                        day,
                        "power_not_on",
                        p.device,
                        p.department,
                        f"{p.department}: 自助服务区计算机今日未开机",
                        f"{p.department}: not switched on",
                    )
                )
            if p.off in ("not_off", "unclean"):
                zh = "下班后未关机" if p.off == "not_off" else "未正常关机 (断电或断网)"
                en = "left on after hours" if p.off == "not_off" else "went off without a clean shutdown"
                out.append(
                    _notice(
                        site,
                        day,
                        f"power_{p.off}",
                        p.device,
                        p.department,
                        f"{p.department}: {zh}",
                        f"{p.department}: {en}",
                    )
                )
        for r in await patrol_day(conn, site, cfg, day, now):
            if r.verdict == "missed":
                left = ", ".join(r.missing[:10]) + (" ..." if len(r.missing) > 10 else "")
                out.append(
                    _notice(
                        site,
                        day,
                        "patrol_missed",
                        "*",
                        r.name,
                        f"{r.name}巡查未完成 (覆盖 {r.coverage_pct:.0f}%), 未到: {left}",
                        f"{r.name} patrol round missed ({r.coverage_pct:.0f}% covered), not reached: {left}",
                    )
                )
        return out


def _notice(site: str, day: date, step: str, device: str, subject: str, zh: str, en: str) -> Notice:
    """A duty notice; its reference (site, day, step, subject) makes it once per day and subject."""
    who = device if device != "*" else subject
    return Notice(
        ref=f"duty:{site}:{day.isoformat()}:{who}"[:80],
        step=step,
        site=site,
        device=device,
        device_class="duty",
        kind=step,
        severity="minor",
        summary_zh=zh,
        summary_en=en,
        facts={"day": day.isoformat(), "subject": subject},
    )


@dataclass(slots=True)
class DutyChecks:
    """The duties as a job of the consumer's runner (broker/jobs/runner.py's ``Job``): the stages-built consumer
    starts it as it starts QueueChecks, every ``rules.duties_every_s`` real seconds."""

    jobs: DutyJobs
    interval_s: float
    name: str = "duties"

    async def run_once(self, now: datetime) -> None:
        await self.jobs.tick(now)
