"""What the consumer does for the daily duties on its own, on a timer (``DutyJobs.tick``): judge today's (and, just
after midnight, yesterday's) duties of every configured site and tell the people concerned, once each, of what
went wrong, plus the lockers' items left too long (broker/access/lockers.py).

Safe on several consumers: a notice's reference names the site, day, duty and subject, so the notifications'
unique key sends it once whoever judges it first.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.access.lockers import check_lockers
from broker.alerts.messages import step_label
from broker.alerts.routing import Router
from broker.api.hall_words import HALL_EN, HALL_ZH
from broker.duties.netcheck import NetCheckDay, netcheck_day
from broker.duties.patrol import RoundDay, patrol_day
from broker.duties.power import PowerDay, power_day
from broker.rules.incidents import IncidentRules
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store.db import Store

log = logging.getLogger(__name__)

# The words of a duty notice are its step's (broker/alerts/messages.py), so the subject and the first line agree.
ZH, EN = "zh-CN", "en"
HALL_WORDS = {ZH: HALL_ZH, EN: HALL_EN}  # the network targets in words, as the duties page shows them


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
        out = [x for n in await netcheck_day(conn, site, cfg, day, now) if (x := net_notice(site, n))]
        for p in await power_day(conn, site, cfg, day, now):
            out += power_notices(site, p)
        out += [x for r in await patrol_day(conn, site, cfg, day, now) if (x := patrol_notice(site, r))]
        return out


def net_notice(site: str, n: NetCheckDay) -> Notice | None:
    """A kiosk whose check failed (with the targets it could not reach, in words) or never came."""
    if n.verdict not in ("failed", "missing"):
        return None
    step = f"netcheck_{n.verdict}"
    zh, en = (", ".join(HALL_WORDS[lang][f"target_{t}"] for t in n.failed) for lang in (ZH, EN))
    return _notice(
        site,
        n.day,
        step,
        n.device,
        "kiosk",
        step_label(step, ZH) + (f" (未通: {zh})" if zh else ""),
        step_label(step, EN) + (f" (not reached: {en})" if en else ""),
    )


def power_notices(site: str, p: PowerDay) -> list[Notice]:
    """A departmental machine never switched on, or left on / gone off uncleanly (WZ 002:491)."""
    steps = (["power_not_on"] if p.on == "not_on" else []) + (
        [f"power_{p.off}"] if p.off in ("not_off", "unclean") else []
    )
    return [
        _notice(
            site,
            p.day,
            step,
            p.device,
            p.department,
            f"{p.department}: {step_label(step, ZH)}",
            f"{p.department}: {step_label(step, EN)}",
        )
        for step in steps
    ]


def patrol_notice(site: str, r: RoundDay) -> Notice | None:
    """A round missed, with its coverage and (the first ten of) the points not reached."""
    if r.verdict != "missed":
        return None
    left = ", ".join(r.missing[:10]) + (" ..." if len(r.missing) > 10 else "")
    return _notice(
        site,
        r.day,
        "patrol_missed",
        "*",
        r.name,
        f"{r.name}{step_label('patrol_missed', ZH)} (覆盖 {r.coverage_pct:.0f}%), 未到: {left}",
        f"{r.name}: {step_label('patrol_missed', EN)} ({r.coverage_pct:.0f}% covered), not reached: {left}",
    )


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
