"""A hall's queue as it stands now, for the dashboard's queue view (broker/api/queue_view.py): per service the
tickets waiting and the longest wait against its class's limit (QP 000:368 「10,30,60」), per window the ticket it
serves, what its rating pad shows, whether its A/B posts are both away and whether the centre tells window
management of it, and the day's figures.

The rule: nothing here judges anew. Waits are the folded legs (fold.py), past-limit and the unattended window are
unattended.py's (what the queue job alerts on), the day's share within the limit is counted by the monthly
report's own tally (report.py), so the view, the alerts and the report never disagree about a ticket.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

from broker.attendance.ab import Gap
from broker.queueing.fold import legs_between, waiting_on, windows_serving
from broker.queueing.policy import QueuePolicy, WaitClass, queue_policy_of
from broker.queueing.report import Tally
from broker.queueing.rule import Leg
from broker.queueing.unattended import (
    Late,
    Unattended,
    away_windows,
    is_due,
    late_legs,
    pad_runs,
    paused_windows,
)
from broker.ratings.jobs import PadRun
from broker.ratings.model import PadState
from broker.sites import Sites
from broker.store.db import Store

AlertState = Literal["told", "pending", "none"]
"""told: the centre tells window management now (its combined alert); pending: paused while tickets wait, not
yet long enough to be told; none: served, or nobody waits for it."""


@dataclass(frozen=True, slots=True)
class DayFigures:
    """One service's (or the hall's) tickets of the day, counted as the monthly report counts them."""

    issued: int
    served: int
    abandoned: int
    judged: int
    within: int

    @property
    def share_pct(self) -> float | None:
        return 100 * self.within / self.judged if self.judged else None


@dataclass(frozen=True, slots=True)
class ServiceNow:
    code: str
    name: str
    wait_class: WaitClass
    limit_min: float
    waiting: int
    late: int
    longest: Leg | None  # the ticket waiting longest (its issue known)
    longest_min: int | None
    today: DayFigures


@dataclass(frozen=True, slots=True)
class WindowNow:
    window: str
    services: tuple[str, ...]  # the services it calls (configured, or seen calling today)
    serving: Leg | None  # the ticket it called last and has not finished
    pad: PadState | None  # what its rating pad shows now
    paused: PadState | None  # the first state of the pause the pad shows now
    away: Gap | None  # neither A nor B post at the post, running now
    waiting: int  # tickets waiting for the services it calls
    late: int
    alert: AlertState


@dataclass(frozen=True, slots=True)
class Board:
    site: str
    day: date
    at: datetime
    enabled: bool
    services: tuple[ServiceNow, ...]
    windows: tuple[WindowNow, ...]
    today: DayFigures


async def board_of(store: Store, sites: Sites, site: str, now: datetime) -> Board:
    """``site``'s queue at ``now`` (today: the site-local day of ``now``)."""
    policy = queue_policy_of(sites[site])
    today = now.astimezone(sites[site].site_calendar.zone).date()
    if not policy.enabled:
        return Board(site, today, now, False, (), (), figures_of([], policy))
    async with store.engine.connect() as conn:
        waiting = await waiting_on(conn, site, today)
        day = [leg for _, leg in await legs_between(conn, site, today, today)]
    late = late_legs(waiting, policy, now)
    runs = await pad_runs(store, sites, site, today)
    away = await away_windows(store, sites, site, today, now)
    services = _services(day, waiting, late, policy, now)
    windows = _windows(day, waiting, late, runs, away, policy, now)
    return Board(site, today, now, True, services, windows, figures_of(day, policy))


def figures_of(legs: Iterable[Leg], policy: QueuePolicy) -> DayFigures:
    """Issued: tickets whose issue was reported (a transfer's new wait is not a new ticket); judged and within:
    the monthly report's Tally (a wait is judged once it ended at its first call or at abandonment)."""
    tally, issued, served = Tally(), 0, 0
    for leg in legs:
        issued += leg.leg == 0 and leg.queued_at is not None
        served += leg.outcome == "served"
        tally.add(leg, policy.limit_min(leg.service))
    return DayFigures(issued, served, tally.abandoned, len(tally.waits), tally.within)


def _services(
    day: Sequence[Leg], waiting: Sequence[Leg], late: Sequence[Late], policy: QueuePolicy, now: datetime
) -> tuple[ServiceNow, ...]:
    out = []
    for code in sorted(set(policy.services) | {leg.service for leg in day}):
        theirs = [leg for leg in waiting if leg.service == code]
        known = [leg for leg in theirs if leg.queued_at is not None]
        longest = max(known, key=lambda leg: leg.waited(now) or timedelta(0), default=None)
        waited = longest.waited(now) if longest is not None else None
        cfg = policy.service(code)
        out.append(
            ServiceNow(
                code, cfg.name, cfg.wait_class, policy.limit_min(code), len(theirs),
                sum(x.leg.service == code for x in late), longest,
                None if waited is None else int(waited / timedelta(minutes=1)),
                figures_of((leg for leg in day if leg.service == code), policy),
            )
        )  # fmt: skip
    return tuple(out)


def _windows(
    day: Sequence[Leg],
    waiting: Sequence[Leg],
    late: Sequence[Late],
    runs: dict[str, PadRun],
    away: dict[str, Gap],
    policy: QueuePolicy,
    now: datetime,
) -> tuple[WindowNow, ...]:
    serving = windows_serving(day, {s: c.windows for s, c in policy.services.items()})
    pads = _pads_by_window(runs)
    paused = paused_windows(runs)  # as the queue job reads it
    late_keys = {(x.leg.ticket, x.leg.leg) for x in late}
    names = {w for ws in serving.values() for w in ws} | set(pads) | set(away)
    out = []
    for window in sorted(names):
        calls = tuple(sorted(s for s, ws in serving.items() if window in ws))
        theirs = [leg for leg in waiting if leg.service in calls]
        n_late = sum((leg.ticket, leg.leg) in late_keys for leg in theirs)
        run = pads.get(window)
        why = Unattended(paused.get(window), away.get(window))
        out.append(
            WindowNow(
                window, calls, _serving_at(day, window), run.latest if run else None, why.paused, why.away,
                len(theirs), n_late, _alert(why, bool(theirs), n_late > 0, policy, now),
            )
        )  # fmt: skip
    return tuple(out)


def _pads_by_window(runs: dict[str, PadRun]) -> dict[str, PadRun]:
    """Window -> its pad (the one heard from last, when a window has had two today: a replaced pad)."""
    out: dict[str, PadRun] = {}
    for run in sorted(runs.values(), key=lambda r: (r.latest.at, r.latest.event_id)):
        out[run.latest.window] = run
    return out


def _serving_at(day: Sequence[Leg], window: str) -> Leg | None:
    """The ticket the window called last that has not been served, passed on or abandoned since."""
    called = [(leg.called_at, leg.ticket, leg) for leg in day if leg.outcome == "called" and leg.window == window
              and leg.called_at is not None]  # fmt: skip
    return max(called, key=lambda c: (c[0], c[1]))[2] if called else None


def _alert(why: Unattended, any_waiting: bool, any_late: bool, policy: QueuePolicy, now: datetime) -> AlertState:
    if not any_waiting or (why.paused is None and why.away is None):
        return "none"
    return "told" if is_due(why, any_late, policy, now) else "pending"
