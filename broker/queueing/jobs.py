"""What the consumer does for queue ticketing on its own, on a timer (``QueueJobs.tick``):

- fold the ticket steps that arrived since the last tick into each ticket's waits (fold.py);
- tell window management, while it happens, of a service whose tickets wait past their class's limit (QP 000:368
  「10,30,60」, rule.py): once per episode (from the first ticket past its limit until none is), naming how many
  and the longest;
- tell window management once of a window whose tickets wait while its rating pad shows 暂停服务 (QP 000:99) or
  while neither its A nor its B post is at the post (QP 000:107, the coverage of attendance/ab.py): ONE alert
  with the pause, the absence and the waits, not three. The pad's pause alert and the A/B alert leave such a
  window to this job (windows.py); the waits of the services that window calls are in this alert, so no
  separate over-limit alert goes for them. When a window counts as unattended, and when it is told, is
  unattended.py's, which the dashboard's queue view shows too.

Safe on several consumers: folding writes the same rows, and every notice is deduplicated by its notification key
(the episode's first ticket; for a window, the earlier of the pause's first event and the A/B gap's start, so a
second reason joining is no second alert). An instance keeps its cursor and its episodes in memory; a new one
starts with a look-back, and what it sends again is a no-op.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import sqlalchemy as sa

from broker.alerts.routing import Router
from broker.queueing.fold import fold_arrived, legs_between, waiting_on, windows_serving
from broker.queueing.policy import CLASS_ZH, SEED, QueuePolicy, queue_policy_of
from broker.queueing.rule import Leg
from broker.queueing.unattended import (
    Late,
    Unattended,
    away_windows,
    episode_ref,
    is_due,
    late_legs,
    pad_runs,
    paused_windows,
)
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import queue_waits

log = logging.getLogger(__name__)

DEVICE_CLASS = "queue"
FIRST_LOOKBACK = timedelta(days=1)  # steps a new instance folds again (idempotent)
OVERLAP = timedelta(minutes=10)  # re-read behind the cursor: a consumer batch commits after its receive times


class QueueJobs:
    def __init__(self, store: Store, sites: Sites, router: Router) -> None:
        self.store = store
        self.sites = sites
        self.router = router
        self._since: datetime | None = None

    async def tick(self, now: datetime) -> list[Notice]:
        await self.fold(now)
        sent: list[Notice] = []
        for site in await self._sites_waiting():
            sent += await self.check_site(site, now)
        return sent

    async def fold(self, now: datetime) -> int:
        since = now - FIRST_LOOKBACK if self._since is None else self._since - OVERLAP
        async with self.store.engine.begin() as conn:
            touched = await fold_arrived(conn, self.sites, since)
        self._since = now
        return len(touched)

    async def _sites_waiting(self) -> list[str]:
        w = queue_waits.c
        rows = await self.store.fetch(sa.select(w.site).where(w.outcome == "waiting").distinct())
        return sorted(r.site for r in rows)

    # -- one site ----------------------------------------------------------------------------------
    async def check_site(self, site: str, now: datetime) -> list[Notice]:
        """The notices this call sent for ``site``."""
        policy = queue_policy_of(self.sites[site])
        if not policy.enabled:
            return []
        today = now.astimezone(self.sites[site].site_calendar.zone).date()
        async with self.store.engine.connect() as conn:
            waiting = await waiting_on(conn, site, today)
            day = [leg for _, leg in await legs_between(conn, site, today, today)]
        if not waiting:
            return []
        serving = windows_serving(day, {s: c.windows for s, c in policy.services.items()})
        late = {(x.leg.ticket, x.leg.leg): x for x in late_legs(waiting, policy, now)}
        notices, covered = await self._unattended(site, today, waiting, serving, late, policy, now)
        by_service: defaultdict[str, list[Late]] = defaultdict(list)
        for x in late.values():
            if x.leg.service not in covered:
                by_service[x.leg.service].append(x)
        notices += [self._over_limit(site, today, s, xs, policy, now) for s, xs in sorted(by_service.items())]
        sent = []
        async with self.store.engine.begin() as conn:
            for n in notices:
                if await self.router.enqueue(conn, n, now):
                    sent.append(n)
                    log.warning("queueing: %s", n.summary_en)
        return sent

    async def _unattended(
        self,
        site: str,
        today: date,
        waiting: Sequence[Leg],
        serving: dict[str, set[str]],
        late: dict[tuple[str, int], Late],
        policy: QueuePolicy,
        now: datetime,
    ) -> tuple[list[Notice], set[str]]:
        """Combined notices for windows with tickets waiting that nobody serves, and the services they cover."""
        windows = sorted({w for leg in waiting for w in serving.get(leg.service, ())})
        if not windows:
            return [], set()
        paused = paused_windows(await pad_runs(self.store, self.sites, site, today))
        away = await away_windows(self.store, self.sites, site, today, now)
        notices: list[Notice] = []
        covered: set[str] = set()
        for window in windows:
            why = Unattended(paused.get(window), away.get(window))
            theirs = [leg for leg in waiting if window in serving.get(leg.service, ())]
            theirs_late = [late[(leg.ticket, leg.leg)] for leg in theirs if (leg.ticket, leg.leg) in late]
            if not is_due(why, bool(theirs_late), policy, now):
                continue
            notices.append(self._combined(site, window, why, theirs, theirs_late, policy, now))
            covered |= {leg.service for leg in theirs}
        return notices, covered

    # -- notices -----------------------------------------------------------------------------------
    def _combined(
        self,
        site: str,
        window: str,
        why: Unattended,
        theirs: Sequence[Leg],
        late: Sequence[Late],
        policy: QueuePolicy,
        now: datetime,
    ) -> Notice:
        zone = self.sites[site].site_calendar.zone
        reasons_zh, reasons_en = [], []
        if why.paused is not None:
            since = f"{why.paused.at.astimezone(zone):%H:%M}"
            reasons_zh.append(f"评价器自 {since} 起显示“暂停服务”")
            reasons_en.append(f"its rating pad has shown 'paused' since {since}")
        if why.away is not None:
            since, holders = f"{why.away.start.astimezone(zone):%H:%M}", "、".join(why.away.holders)
            reasons_zh.append(f"A、B 岗 ({holders}) 自 {since} 起均不在岗")
            reasons_en.append(f"neither A nor B post ({', '.join(why.away.holders)}) at work since {since}")
        longest = max(theirs, key=lambda leg: leg.waited(now) or timedelta(0))
        wait_min = int((longest.waited(now) or timedelta(0)) / timedelta(minutes=1))
        limit = policy.limit_min(longest.service)
        over_zh = f", 其中 {len(late)} 张已超时" if late else ""
        over_en = f", {len(late)} past their limit" if late else ""
        return Notice(
            ref=episode_ref(site, window, why, zone),
            step="window_unattended",
            site=site,
            device=why.paused.device if why.paused is not None else "*",
            device_class=DEVICE_CLASS,
            kind="window_unattended",
            severity="major",
            summary_zh=f"{window} 窗口有 {len(theirs)} 张号在等候{over_zh} (最长 {longest.ticket} 已等 {wait_min} 分钟,"
            f" 上限 {limit:g} 分钟), 但{'; '.join(reasons_zh)}; 请安排人员接待 ({SEED} 「10,30,60」)",
            summary_en=f"window {window}: {len(theirs)} ticket(s) waiting{over_en} (longest {longest.ticket},"
            f" {wait_min} min, limit {limit:g}), but {'; '.join(reasons_en)}; send someone to serve them",
            facts={"at": now.isoformat(), "window": window, "waiting": [leg.ticket for leg in theirs][:50],
                   "late": [x.leg.ticket for x in late][:50], "longest_min": wait_min,
                   "paused_since": why.paused.at.isoformat() if why.paused else None,
                   "ab_away_since": why.away.start.isoformat() if why.away else None},
        )  # fmt: skip

    def _over_limit(
        self, site: str, today: date, service: str, late: Sequence[Late], policy: QueuePolicy, now: datetime
    ) -> Notice:
        first = min(late, key=lambda x: x.leg.queued_at or now)
        longest = max(late, key=lambda x: x.waited)
        cfg = policy.service(service)
        label = f"{cfg.name} ({service})" if cfg.name else service
        cls = cfg.wait_class
        return Notice(
            # One notice per episode: keyed by the ticket that waited longest when it began. A new episode
            # (after every late ticket was called) is a new notice.
            ref=f"queue_wait:{site}:{today.isoformat()}:{service}:{first.leg.ticket}:{first.leg.leg}",
            step="queue_wait",
            site=site,
            device="*",
            device_class=DEVICE_CLASS,
            kind="wait_over_limit",
            severity="major",
            summary_zh=f"{label} ({CLASS_ZH[cls]}事项, 上限 {first.limit_min:g} 分钟) {len(late)} 张号等候超时, 最长"
            f" {longest.leg.ticket} 已等 {longest.minutes} 分钟 ({SEED} 「10,30,60」)",
            summary_en=f"service {label} ({cls}, limit {first.limit_min:g} min): {len(late)} ticket(s) past the"
            f" limit, longest {longest.leg.ticket} waiting {longest.minutes} min (QP 000:368 '10,30,60')",
            facts={"at": now.isoformat(), "service": service, "class": cls, "limit_min": first.limit_min,
                   "late": [x.leg.ticket for x in late][:50], "longest_min": longest.minutes},
        )  # fmt: skip
