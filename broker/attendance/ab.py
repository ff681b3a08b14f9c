"""AB posts (AB岗): a window whose A and B holders were both away on the same day is uncovered.

QP 000:107-113: A and B must not be away at the same time, and a single-staff window must stay staffed;
WZ 002:168-182: every post has at least one substitute, and when both are away the window leader must
assign someone. Window management is alerted of both (requirements §11.5).
"""

from __future__ import annotations

from datetime import date

from broker.attendance.model import StaffDay, Verdict
from broker.attendance.roster import StaffMember

# Present at the hall for at least part of the day. A missing punch still shows them there (the other
# punch exists); a meeting, training, leave or 调休 is away.
AT_WORK = frozenset(
    {
        Verdict.ON_TIME,
        Verdict.LATE,
        Verdict.EARLY,
        Verdict.LATE_AND_EARLY,
        Verdict.MISSING_IN,
        Verdict.MISSING_OUT,
        Verdict.DEVICE_FAULT,
        Verdict.EXEMPT_DUTY,
    }
)


def uncovered_windows(members: list[StaffMember], days: list[StaffDay], day: date) -> list[str]:
    """Windows with A/B posts where nobody holding one was at work on ``day``, sorted.

    Only A/B holders employed on the day count, and a window is judged only when at least one of them
    has a verdict that day other than a rest day (a closed hall is not an empty window)."""
    verdicts = {d.staff_id: d.verdict for d in days if d.day == day}
    posts: dict[str, list[str]] = {}
    for m in members:
        if m.post in ("A", "B") and m.window and m.employed_on(day):
            posts.setdefault(m.window, []).append(m.staff_id)
    out: list[str] = []
    for window, holders in posts.items():
        judged = [verdicts[s] for s in holders if s in verdicts and verdicts[s] != Verdict.REST_DAY]
        if judged and not any(v in AT_WORK for v in judged):
            out.append(window)
    return sorted(out)
