"""Which windows have tickets waiting now: where the queue job speaks for the window.

The rule: one thing wrong at a window while tickets wait is one alert. The rating pad's pause alert
(broker/ratings/jobs.py) and the A/B coverage alert (broker/attendance/jobs.py) ask this module first and leave a
window with tickets waiting to the queue job (jobs.py), which tells window management once, with the pause, the
A/B absence and the waits in the same message. A pause or an A/B gap told that way stays told
(``told_unattended``): once the tickets are called, a pad still showing the pause (its resume not yet arrived, or
nobody pressed it) or posts still away is no second alert.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from broker.queueing.fold import legs_between, waiting_on, windows_serving
from broker.queueing.policy import queue_policy_of
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import notifications


async def windows_with_waiting(store: Store, sites: Sites, site: str, now: datetime) -> set[str]:
    """Windows that call a service whose tickets wait now (today's, at the site)."""
    policy = queue_policy_of(sites[site])
    if not policy.enabled:
        return set()
    today = now.astimezone(sites[site].site_calendar.zone).date()
    async with store.engine.connect() as conn:
        waiting = await waiting_on(conn, site, today)
        if not waiting:
            return set()
        day = [leg for _, leg in await legs_between(conn, site, today, today)]
    serving = windows_serving(day, {s: c.windows for s, c in policy.services.items()})
    return {w for leg in waiting for w in serving.get(leg.service, ())}


async def told_unattended(store: Store, ref: str) -> bool:
    """Whether the queue job told the episode this reason began in a window's combined alert. ``ref`` is the
    reason's own notice key, which unattended.episode_ref gives the episode too: ``pad_paused:{first event}`` or
    ``ab:{site}:{window}:{gap start}``."""
    n = notifications.c
    found = await store.fetch(sa.select(n.id).where(n.ref == ref, n.step == "window_unattended").limit(1))
    return bool(found)
