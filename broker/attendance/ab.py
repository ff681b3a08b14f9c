"""AB posts (AB岗): a window is covered while one of its A/B holders is at the post. Coverage is a question of
time, not of days: A and B both away the same morning is a gap even when both are back in the afternoon.

QP 000:107 (原则上AB岗责任人不能同时离岗), WZ 002:181 (AB岗不宜同时离开岗位; when both are away the window leader
assigns someone) and SJ 001:947 (AB崗人員不得同時離開崗位): a stretch of opening time of at least
``ab.min_gap_min`` minutes in which no A/B holder of a window was at the post is a gap, and window management
hears of it (``jobs.py``). Who is at the post when comes from ``StaffDay.present`` (``verdicts.py``): sign-in to
sign-out within the sessions, less leave and meetings; a missing punch leaves its side uncovered.

Ningshan (``ab.handover = "substitute_first"``, NS 003:88): 凡请假半天(含)以上的 ... 顶岗人员到岗后,请假人员方
可离开工作岗位,否则视为脱岗或旷工. A holder who went on such leave from the post while no other holder of the window
took over within ``min_gap_min`` is absent (旷工) that day. A person who never came before the leave did not leave
the post, so the rule does not reach them (the gap is still reported).

Only working days are judged: on a closed day the hall keeps no window open, so no window owes coverage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, tzinfo

from broker.attendance.model import Exception_, ExceptionKind, Interval, StaffDay, Verdict
from broker.attendance.policy import AbPolicy
from broker.attendance.roster import StaffMember
from broker.attendance.verdicts import leave_days


@dataclass(frozen=True, slots=True)
class Gap:
    """Opening time in which nobody holding the window's A or B post was at the post."""

    window: str
    start: datetime
    end: datetime
    holders: tuple[str, ...]  # the window's A/B holders that day

    @property
    def minutes(self) -> int:
        return int((self.end - self.start) / timedelta(minutes=1))


def holders_by_window(members: Iterable[StaffMember], day: date) -> dict[str, list[str]]:
    """Window -> staff ids holding its A or B post on ``day``."""
    out: dict[str, list[str]] = {}
    for m in members:
        if m.post in ("A", "B") and m.window and m.employed_on(day):
            out.setdefault(m.window, []).append(m.staff_id)
    return out


def present_at(day: StaffDay, t: datetime) -> bool:
    """At the post at ``t`` (an open span reaching ``t`` counts: the person is there up to the judging time)."""
    return any(s <= t <= e for s, e in day.present)


def coverage_gaps(
    members: Iterable[StaffMember],
    days: Iterable[StaffDay],
    day: date,
    sessions: Sequence[Interval],
    policy: AbPolicy,
    *,
    now: datetime | None = None,
) -> list[Gap]:
    """Every gap of ``day`` (sessions up to ``now``), by window then time. A window is judged only when one of
    its holders has a verdict that day (before go-live or employment nobody owes coverage)."""
    own = {d.staff_id: d for d in days if d.day == day}
    horizon = list(sessions) if now is None else [(s, min(e, now)) for s, e in sessions if s < now]
    out: list[Gap] = []
    for window, holders in sorted(holders_by_window(members, day).items()):
        judged = [own[s] for s in holders if s in own and own[s].verdict is not Verdict.REST_DAY]
        if not judged:
            continue
        covered = [span for d in judged for span in d.present]
        for s, e in _minus(horizon, covered):
            if e - s >= timedelta(minutes=policy.min_gap_min):
                out.append(Gap(window, s, e, tuple(sorted(holders))))
    return out


def _minus(spans: Sequence[Interval], cuts: Sequence[Interval]) -> list[Interval]:
    """``spans`` less every interval of ``cuts``."""
    out = list(spans)
    for c0, c1 in cuts:
        rest: list[Interval] = []
        for s, e in out:
            if c1 <= s or c0 >= e:
                rest.append((s, e))
                continue
            if s < c0:
                rest.append((s, c0))
            if c1 < e:
                rest.append((c1, e))
        out = rest
    return out


def apply_handover(
    days: Sequence[StaffDay],
    members: Iterable[StaffMember],
    exceptions: Mapping[str, Sequence[Exception_]],
    sessions: Sequence[Interval],
    policy: AbPolicy,
    zone: tzinfo,
    now: datetime | None = None,
) -> list[StaffDay]:
    """NS 003:88 on one day's verdicts (all of the site's for that day): a holder who left the post for leave of
    ``handover_leave_days`` or more before a substitute arrived is absent. Other days come back unchanged.
    ``now`` (None: the day is over): like any 旷工, never before the day's last session ends, since until then the
    substitute's afternoon has not happened (the AB alert tells window management of the gap as it runs)."""
    if policy.handover != "substitute_first" or not sessions or not days:
        return list(days)
    if now is not None and now < max(end for _, end in sessions):
        return list(days)
    by_id = {d.staff_id: d for d in days}
    window_of = {s: w for w, hs in holders_by_window(members, days[0].day).items() for s in hs}
    out = []
    for d in days:
        window = window_of.get(d.staff_id)
        breach = None
        if window is not None and leave_days(d) >= policy.handover_leave_days and d.present:
            others = [by_id[s] for s, w in window_of.items() if w == window and s != d.staff_id and s in by_id]
            leaves = [
                e for e in exceptions.get(d.staff_id, ()) if e.id in d.exceptions and e.kind is ExceptionKind.LEAVE
            ]
            breach = _left_uncovered(d, others, leaves, sessions, policy)
        out.append(d if breach is None else _absent(d, breach, zone))
    return out


def _left_uncovered(
    d: StaffDay,
    others: Sequence[StaffDay],
    leaves: Sequence[Exception_],
    sessions: Sequence[Interval],
    policy: AbPolicy,
) -> datetime | None:
    """When ``d``'s holder left the post for leave with no substitute there (None: they handed over)."""
    covered = [span for o in others for span in o.present]
    for e in sorted(leaves, key=lambda e: e.start):
        before = [end for _, end in d.present if end <= e.start]
        if not before:
            continue  # not at the post before this leave: nothing was left
        left = max(before)
        owed = [(max(s, left), min(x, e.end)) for s, x in sessions if max(s, left) < min(x, e.end)]
        gaps = _minus(owed, covered)
        # The first opening time after they left is uncovered for long enough: nobody had taken over.
        if gaps and gaps[0][0] == owed[0][0] and gaps[0][1] - gaps[0][0] >= timedelta(minutes=policy.min_gap_min):
            return left
    return None


def _absent(d: StaffDay, left: datetime, zone: tzinfo) -> StaffDay:
    why = f"{left.astimezone(zone):%H:%M} 请假离岗时顶岗人员未到岗, 视为脱岗或旷工 (NS 003:88)"
    return replace(d, verdict=Verdict.ABSENT, reason=f"{d.reason}; {why}" if d.reason else why)
