"""The waiting-time rule of QP 000:368 「10,30,60」 on one ticket's steps, pure: no store, no clock.

A ticket's *legs*: its wait in one service's queue, from the issue (or the transfer that put it there) to the
first call of it. The rule a leg keeps: **the wait is at most its service class's limit** (「不超过」: a wait of
exactly 10 minutes keeps the 10-minute limit, 10 minutes and a second does not). A recall (重呼) does not end
or restart the wait; a transfer ends the leg at the window and starts a new one in the other service's queue,
judged by that service's limit. A ticket abandoned before any call waited until it was abandoned; a leg whose
issue was never reported has no known wait and is left out of the figures (and counted as such).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

StepKind = Literal["issued", "called", "served", "transferred", "abandoned"]
Outcome = Literal["waiting", "called", "served", "transferred", "abandoned"]
_ORDER: dict[str, int] = {"issued": 0, "called": 1, "served": 2, "transferred": 2, "abandoned": 2}


@dataclass(frozen=True, slots=True)
class Step:
    ticket: str
    step: StepKind
    at: datetime
    service: str
    window: str | None = None
    detail: str | None = None  # issued: channel; transferred: to_service; abandoned: reason; called: "recall"


@dataclass(frozen=True, slots=True)
class Leg:
    ticket: str
    leg: int
    service: str
    queued_at: datetime | None
    outcome: Outcome = "waiting"
    channel: str | None = None
    called_at: datetime | None = None
    window: str | None = None
    ended_at: datetime | None = None
    reason: str | None = None

    def waited(self, now: datetime) -> timedelta | None:
        """The wait so far (still waiting: until ``now``), or None when it is not known."""
        if self.queued_at is None:
            return None
        end = self.called_at or (self.ended_at if self.outcome != "waiting" else None) or now
        return max(end - self.queued_at, timedelta(0))


def within(wait: timedelta, limit_min: float) -> bool:
    """QP 000:368: 「不超过」 the limit, the limit itself included."""
    return wait <= timedelta(minutes=limit_min)


def legs_of(steps: Iterable[Step]) -> list[Leg]:
    """One ticket's legs from its steps, in any order they arrived (sorted here by the queue system's times)."""
    done: list[Leg] = []
    cur: Leg | None = None
    for s in sorted(steps, key=lambda s: (s.at, _ORDER[s.step])):
        if s.step == "issued":
            if cur is None and not done:
                cur = Leg(s.ticket, 0, s.service, s.at, channel=s.detail)
            continue  # a second issue of the same number the same day is the same ticket reported twice
        if cur is None:  # the issue was never reported, or a step after the ticket ended (a late recall)
            cur = Leg(s.ticket, len(done), s.service, None)
        if s.step == "called":
            if cur.called_at is None:
                cur = replace(cur, called_at=s.at, window=s.window, outcome="called")
            continue
        ended = replace(cur, ended_at=s.at, window=cur.window or s.window)
        if s.step == "served":
            done.append(replace(ended, outcome="served"))
            cur = None
        elif s.step == "transferred":
            done.append(replace(ended, outcome="transferred"))
            cur = Leg(s.ticket, len(done), s.detail or s.service, s.at, channel=cur.channel)
        else:
            done.append(replace(ended, outcome="abandoned", reason=s.detail))
            cur = None
    return done + ([cur] if cur is not None else [])
