"""When a window with tickets waiting counts as unattended, and which tickets are past their limit: the one
definition the queue job alerts on (jobs.py) and the dashboard's queue view shows (board.py).

The rule: a window is unattended while its rating pad shows 暂停服务/请稍后 (QP 000:99, the pause as the pad job
folds it: broker/ratings/jobs.py) or while neither its A nor its B post is at the post (QP 000:107, the gaps of
broker/attendance/ab.py, at least ``ab.min_gap_min`` long). With tickets waiting for it, that is told to window
management once (``is_due``): an A/B gap at once, a pause once it has lasted ``unattended_after_min`` or a ticket
of the window is already past its limit. A ticket is past its limit when its wait so far breaks QP 000:368's
「10,30,60」 for its service's class (rule.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo

from broker.attendance.ab import Gap, coverage_gaps
from broker.attendance.service import load_period
from broker.queueing.policy import QueuePolicy
from broker.queueing.rule import Leg, within
from broker.ratings.jobs import PadRun
from broker.ratings.model import PadState, pad_states_arrived
from broker.sites import Sites
from broker.store.db import Store


@dataclass(frozen=True, slots=True)
class Late:
    """A waiting ticket and how long it has waited against its limit."""

    leg: Leg
    waited: timedelta
    limit_min: float

    @property
    def minutes(self) -> int:
        return int(self.waited / timedelta(minutes=1))


@dataclass(frozen=True, slots=True)
class Unattended:
    """Why a window with tickets waiting is not serving them: its pad's pause and/or its A/B posts' absence."""

    paused: PadState | None
    away: Gap | None


def episode_ref(site: str, window: str, why: Unattended, zone: tzinfo) -> str:
    """The key of a window's unattended episode, so it is told once: its earlier reason (the pause's first event,
    or the A/B gap's start). A second reason joining while the first lasts is the same episode, not a new alert;
    the episode ends with the reason that began it."""
    if why.paused is not None and (why.away is None or why.paused.at <= why.away.start):
        return f"pad_paused:{why.paused.event_id}"
    if why.away is None:
        raise ValueError("a window with neither reason is not unattended")
    return f"ab:{site}:{window}:{why.away.start.astimezone(zone).isoformat()}"


def late_legs(waiting: Sequence[Leg], policy: QueuePolicy, now: datetime) -> list[Late]:
    """The waiting legs whose wait so far is past their service's limit."""
    out = []
    for leg in waiting:
        waited = leg.waited(now)
        limit = policy.limit_min(leg.service)
        if waited is not None and not within(waited, limit):
            out.append(Late(leg, waited, limit))
    return out


def is_due(why: Unattended, any_late: bool, policy: QueuePolicy, now: datetime) -> bool:
    """A window nobody serves is told once its pause has lasted ``unattended_after_min`` or a ticket of it is
    past its limit; an A/B gap is one already (attendance/ab.py counts only gaps of ``ab.min_gap_min``)."""
    if why.away is not None:
        return True
    if why.paused is None:
        return False
    return any_late or now - why.paused.at >= timedelta(minutes=policy.unattended_after_min)


async def pad_runs(store: Store, sites: Sites, site: str, today: date) -> dict[str, PadRun]:
    """Device -> what each of the site's pads shows now and since when it is paused (today's states)."""
    start = datetime.combine(today, datetime.min.time(), sites[site].site_calendar.zone)
    async with store.engine.connect() as conn:
        states = [s for s in await pad_states_arrived(conn, start) if s.site == site]
    runs: dict[str, PadRun] = {}
    for s in sorted(states, key=lambda s: (s.at, s.event_id)):
        run = runs.get(s.device)
        if run is None:
            runs[s.device] = PadRun(s, s if s.paused else None)
        else:
            run.fold(s)
    return runs


def paused_windows(runs: dict[str, PadRun]) -> dict[str, PadState]:
    """Window -> the first state of the pause its pad shows now."""
    return {r.latest.window: r.paused_since for r in runs.values() if r.paused_since is not None}


async def away_windows(store: Store, sites: Sites, site: str, today: date, now: datetime) -> dict[str, Gap]:
    """Window -> the A/B gap running now (attendance/ab.py: at least ``ab.min_gap_min`` long)."""
    cfg = sites[site]
    sessions = cfg.site_calendar.sessions_on(today)
    if not cfg.attendance.enabled or not sessions or now <= sessions[0][0]:
        return {}
    p = await load_period(store, sites, site, today, today, now=now)
    gaps = coverage_gaps(p.members, p.days, today, sessions, cfg.attendance.ab, now=now)
    return {g.window: g for g in gaps if g.end >= now - timedelta(seconds=1)}
