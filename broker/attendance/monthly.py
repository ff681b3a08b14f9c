"""A month of staff-days per person: the figures a monthly attendance bulletin reports (WZ 002:11, NS 003:104).

Excused days (proof filed in time, ``verdicts.is_excused``) are counted apart and never as late, early, missing or
absent, so they never feed the monthly rule: the rule punishes 无故 lateness (WZ 002:8). A day late and early is one
late and one early occurrence. The monthly rule is applied per calendar month, so a longer span sums its months.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from broker.attendance.model import NEEDS_PROOF, StaffDay, Verdict
from broker.attendance.policy import MonthlyRule
from broker.attendance.verdicts import is_attendance, is_excused, leave_days

_LATE = frozenset({Verdict.LATE, Verdict.LATE_AND_EARLY})
_EARLY = frozenset({Verdict.EARLY, Verdict.LATE_AND_EARLY})
_MISSING = frozenset({Verdict.MISSING_IN, Verdict.MISSING_OUT})


@dataclass(frozen=True, slots=True)
class MonthSummary:
    staff_id: str
    late: int = 0  # 迟到 occurrences without proof
    early: int = 0  # 早退 occurrences without proof
    missing: int = 0  # 未签到 / 未签退 days without proof
    absent_days: float = 0.0  # 旷工: absent days without proof, plus rule_absent_days
    leave_days: float = 0.0  # in half days
    device_fault: int = 0  # days a terminal fault kept a punch from happening
    worked_days: int = 0  # 出勤, compensatory time and meetings included
    abnormal: int = 0  # 非正常考勤: locked days that needed proof and got none (QP 000:43)
    excused: int = 0  # late/early/missing/absent days with proof filed in time
    rule_absent_days: float = 0.0  # the monthly rule's share of absent_days (WZ 002:10)


def month_summary(days: Sequence[StaffDay], rule: MonthlyRule | None) -> dict[str, MonthSummary]:
    """Per staff member, the sums over ``days``; ``rule`` adds absence for lates/earlies in each calendar month."""
    counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    occurrences: dict[tuple[str, int, int], int] = defaultdict(int)
    for day in days:
        c = counts[day.staff_id]
        for name, value in _figures(day).items():
            c[name] += value
        if rule is not None:
            occurrences[(day.staff_id, day.day.year, day.day.month)] += _occurrences(day, rule)
    for (staff_id, _, _), n in occurrences.items():
        counts[staff_id]["rule_absent_days"] += rule.penalty(n) if rule is not None else 0.0
    return {staff_id: _summary(staff_id, c) for staff_id, c in sorted(counts.items())}


def _figures(day: StaffDay) -> dict[str, float]:
    v = day.verdict
    if is_excused(day):
        return {"excused": 1, "worked_days": is_attendance(day), "leave_days": leave_days(day)}
    return {
        "late": v in _LATE,
        "early": v in _EARLY,
        "missing": v in _MISSING,
        "absent_days": v == Verdict.ABSENT,
        "leave_days": leave_days(day),
        "device_fault": v == Verdict.DEVICE_FAULT,
        "worked_days": is_attendance(day),
        "abnormal": day.locked and v in NEEDS_PROOF,
    }


def _occurrences(day: StaffDay, rule: MonthlyRule) -> int:
    if is_excused(day):
        return 0
    v = day.verdict
    kinds = {"late": v in _LATE, "early": v in _EARLY, "missing": v in _MISSING}
    return sum(kinds[k] for k in rule.counts)


def _summary(staff_id: str, c: dict[str, float]) -> MonthSummary:
    rule_days = c["rule_absent_days"]
    return MonthSummary(
        staff_id=staff_id,
        late=int(c["late"]),
        early=int(c["early"]),
        missing=int(c["missing"]),
        absent_days=c["absent_days"] + rule_days,
        leave_days=c["leave_days"],
        device_fault=int(c["device_fault"]),
        worked_days=int(c["worked_days"]),
        abnormal=int(c["abnormal"]),
        excused=int(c["excused"]),
        rule_absent_days=rule_days,
    )
