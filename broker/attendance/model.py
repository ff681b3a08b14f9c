"""The shared vocabulary of attendance: punches as the rules see them, exceptions people file, windows
in which a terminal could not take punches, and the verdict on one staff member's day."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum


class Verdict(StrEnum):
    ON_TIME = "on_time"  # 正常
    LATE = "late"  # 迟到 (晚签到)
    EARLY = "early"  # 早退 (早签退)
    LATE_AND_EARLY = "late_and_early"  # 迟到且早退
    MISSING_IN = "missing_in"  # 未签到
    MISSING_OUT = "missing_out"  # 未签退
    ABSENT = "absent"  # 旷工 (no punch at all, no exception)
    LEAVE = "leave"  # 请假
    MEETING = "meeting"  # 会议/培训
    COMPENSATORY = "compensatory"  # 调休 (counts as normal attendance: QP 000:33)
    EXEMPT_DUTY = "exempt_duty"  # 周末/节假日值班, not counted (SJ 001:1039)
    FORCE_MAJEURE = "force_majeure"  # 不可抗力 (SJ 001:1042)
    DEVICE_FAULT = "device_fault"  # 考勤设备故障: reported, not punished (SJ E.1.3, 001:1040)
    REST_DAY = "rest_day"  # not a working day and no duty: nothing expected
    # Provisional: the day is not over, so nothing is missing yet (never 未签退 or 旷工 before it can be known).
    ON_DUTY = "on_duty"  # 在岗: signed in, the day's last session not over
    NOT_ARRIVED = "not_arrived"  # 未到岗: no sign-in yet, the day's last session not over
    AWAITING_OUT = "awaiting_out"  # 待签退: the last session is over, the sign-out window still open


# Verdicts that are exceptions needing proof within the correction deadline (QP 000:30-34, 000:40-43).
NEEDS_PROOF = frozenset(
    {Verdict.LATE, Verdict.EARLY, Verdict.LATE_AND_EARLY, Verdict.MISSING_IN, Verdict.MISSING_OUT, Verdict.ABSENT}
)

# The day is not over: the verdict may still change, so it is neither locked nor counted as an exception.
PROVISIONAL = frozenset({Verdict.ON_DUTY, Verdict.NOT_ARRIVED, Verdict.AWAITING_OUT})

Interval = tuple[datetime, datetime]


@dataclass(frozen=True, slots=True)
class Punch:
    """One stored attendance.punch. ``at`` is the time the rules use: the device clock when it was
    synchronised, else the centre's receive time (and ``trusted`` is False, so the verdict says so)."""

    event_id: str
    staff_id: str
    at: datetime
    method: str
    device: str
    trusted: bool = True
    device_ts: datetime | None = None
    received_at: datetime | None = None


class ExceptionKind(StrEnum):
    LEAVE = "leave"  # 请假
    EVIDENCE = "evidence"  # 相关证明 for a late/early/missing punch: makes that day's exception excused
    MEETING = "meeting"  # 会议/培训
    COMPENSATORY = "compensatory"  # 调休
    DUTY = "duty"  # 周末/节假日值班 (a non-working day that counts as worked, or exempt)
    FORCE_MAJEURE = "force_majeure"
    EXTENDED_SERVICE = "extended_service"  # 午间延时服务: may sign out early by ``minutes`` (QP 000:32)


@dataclass(frozen=True, slots=True)
class Exception_:
    """Something a window leader filed. ``start``/``end`` cover the time it excuses; ``filed_at`` against
    the correction deadline decides whether it still counts (late filings leave the day abnormal)."""

    id: str
    staff_id: str
    kind: ExceptionKind
    start: datetime
    end: datetime
    filed_at: datetime
    filed_by: str
    reason: str = ""
    minutes: int = 0  # extended service: minutes of early sign-out allowed
    approved: bool = True
    late: bool = False  # filed after its correction deadline (exceptions.py)
    due: datetime | None = None  # that deadline as known at filing (None: not running yet, the person is still away)


@dataclass(frozen=True, slots=True)
class FaultWindow:
    """A terminal could not take punches from ``start`` to ``end`` (offline, stale, faulted)."""

    device: str
    start: datetime
    end: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class StaffDay:
    staff_id: str
    day: date
    verdict: Verdict
    reason: str  # Chinese, says why, e.g. "08:41 签到, 晚于 08:30 (迟到 11 分钟)"
    punches: tuple[Punch, ...] = ()
    late_min: int = 0
    early_min: int = 0
    untrusted: bool = False  # a punch behind the verdict came from an unsynchronised clock
    exceptions: tuple[str, ...] = ()  # ids of the exceptions that shaped it
    locked: bool = False  # the correction deadline passed: the verdict stands (非正常考勤 if it needed proof)
    notes: tuple[str, ...] = field(default_factory=tuple)
    # When the person was at the post within the day's sessions (from sign-in to sign-out, less leave and
    # meetings; up to the judging time while the day runs): AB coverage and the rating pad's pause alert use it.
    present: tuple[Interval, ...] = ()
