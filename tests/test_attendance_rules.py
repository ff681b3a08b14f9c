"""Attendance rules, case by case from the regulations: each case's id starts with its seed line.

QP = seeds/000 (Qingpu), SJ = 001 (Songjiang), WZ = 002 (Wanzhou), NS = 003 (Ningshan); Gn = the gaps in
requirements-from-regulations.md §10. The sites are the worked examples in broker/attendance/examples/, so the
examples are what is tested. Dates are 2026 (chinesecalendar's National Day: Oct 1-7 off, Sat Oct 10 worked);
2026-03-11 and 2026-07-15 are ordinary Wednesdays, in Qingpu's 非夏令 and 夏令 timetables.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from broker.attendance.model import Exception_, ExceptionKind, FaultWindow, Punch, StaffDay, Verdict
from broker.attendance.monthly import MonthSummary, month_summary
from broker.attendance.policy import MonthlyRule, PunchPolicy
from broker.attendance.verdicts import EXCUSED_NOTE, is_attendance, is_excused, is_present, judge_day, leave_days
from broker.calendar import SiteCalendar
from broker.sites import SiteConfig
from runtime.clock import HALL_ZONE

EXAMPLES = Path(__file__).parent.parent / "broker" / "attendance" / "examples"
STAFF = "S0001"
MAR11 = date(2026, 3, 11)  # Wednesday, 非夏令
MAR14 = date(2026, 3, 14)  # Saturday
JUL15 = date(2026, 7, 15)  # Wednesday, 夏令
OCT1 = date(2026, 10, 1)  # National Day
OCT10 = date(2026, 10, 10)  # Saturday, 调休上班


def load_example(site: str) -> tuple[SiteConfig, PunchPolicy]:
    """The example's whole site section, as the consumer's config loads it."""
    cfg = SiteConfig.model_validate(tomllib.loads((EXAMPLES / f"{site}.toml").read_text())["sites"][site])
    return cfg, cfg.attendance


SITES = {name: load_example(name) for name in ("qingpu", "wanzhou", "ningshan")}


def at(day: date, hm: str) -> datetime:
    return datetime.combine(day, time.fromisoformat(hm), tzinfo=HALL_ZONE)


def punch(day: date, hm: str, **kw: Any) -> Punch:
    return replace(Punch(f"e-{day}-{hm}", STAFF, at(day, hm), "face", "att-1"), **kw)


def exc(kind: ExceptionKind, day: date, start: str, end: str, **kw: Any) -> Exception_:
    """Filed the day before by the window leader, approved, in time, unless ``kw`` says otherwise."""
    filed = at(day, "08:00") - timedelta(days=1)
    return replace(Exception_(kind.value, STAFF, kind, at(day, start), at(day, end), filed, "窗口负责人"), **kw)


def fault(day: date, start: str, end: str) -> FaultWindow:
    return FaultWindow(device="att-1", start=at(day, start), end=at(day, end), reason="离线")


@dataclass(frozen=True)
class Case:
    id: str
    day: date
    verdict: Verdict
    punches: tuple[str | Punch, ...] = ()  # "HH:MM[:SS]": a face punch on the case's day
    site: str = "qingpu"
    exceptions: tuple[Exception_, ...] = ()
    faults: tuple[FaultWindow, ...] = ()
    policy: dict[str, Any] = field(default_factory=dict)
    late: int = 0
    early: int = 0
    excused: bool = False
    ids: tuple[str, ...] | None = None
    reason: str = ""
    note: str = ""
    untrusted: bool = False
    now: str | None = None  # "HH:MM" on the case's day: judged while the day runs (None: the day is over)
    present: tuple[tuple[str, str], ...] | None = None  # expected StaffDay.present, "HH:MM" on the day


L = ExceptionKind
V = Verdict
WHOLE_DAY = ("00:00", "23:59")
EVIDENCE = exc(L.EVIDENCE, MAR11, *WHOLE_DAY, reason="地铁故障证明")
LEAVE_AM = exc(L.LEAVE, MAR11, "08:30", "11:30", reason="就医")
LEAVE_AM_SUMMER = exc(L.LEAVE, JUL15, "08:30", "11:30", reason="就医")
EXTENDED = exc(L.EXTENDED_SERVICE, MAR11, "11:30", "12:00", minutes=30)
DUTY = exc(L.DUTY, MAR14, "09:00", "12:00", reason="便民窗口周六值班")
ROAD_CLOSED = exc(L.FORCE_MAJEURE, MAR11, "07:00", "10:00", reason="暴雪封路")
MORNING_FAULT = (fault(MAR11, "07:30", "09:00"),)

CASES = [
    # -- Qingpu's two timetables, two punches a day ---------------------------------------------------------------
    Case("QP000:30 in before 08:30 and out after 17:00 (非夏令)", MAR11, V.ON_TIME, ("08:25", "17:05")),
    Case("QP000:30 the same in 夏令", JUL15, V.ON_TIME, ("08:25", "17:05")),
    Case("QP000:30 08:30:59 shows 08:30 and 17:00 is after 5:00", MAR11, V.ON_TIME, ("08:30:59", "17:00")),
    Case(
        "QP000:30 in after 08:30 is late (晚签到)",
        MAR11,
        V.LATE,
        ("08:41", "17:05"),
        late=11,
        reason="08:41 签到, 晚于 08:30 (迟到 11 分钟); 17:05 签退",
    ),
    Case("QP000:28 out before 17:00 is early (早签退), 非夏令", MAR11, V.EARLY, ("08:20", "16:50"), early=10),
    Case("QP000:29 out before 17:00 is early in 夏令 too", JUL15, V.EARLY, ("08:20", "16:50"), early=10),
    Case("QP000:30 16:59:59 shows 16:59: a minute early", MAR11, V.EARLY, ("08:20", "16:59:59"), early=1),
    Case("QP000:30 late and early", MAR11, V.LATE_AND_EARLY, ("08:45", "16:30"), late=15, early=30),
    Case("QP000:31 no sign-out (未签退)", MAR11, V.MISSING_OUT, ("08:20",), reason="未签退 (应于 17:00 后)"),
    Case("QP000:31 no sign-in (未签到)", MAR11, V.MISSING_IN, ("17:10",), reason="未签到 (应于 08:30 前)"),
    Case(
        "QP000:31 two morning punches are one sign-in, not an early sign-out", MAR11, V.MISSING_OUT, ("08:20", "08:22")
    ),
    # QP 000:30 sets only the latest sign-in and the earliest sign-out, so the punch window is the calendar day.
    # (This case used to expect 05:29 to be no sign-in, from a 180-minute window no seed gives.)
    Case("QP000:30 a sign-in at 05:29 is a sign-in: only 8:30前 is set", MAR11, V.ON_TIME, ("05:29", "17:05")),
    Case("QP000:30 a punch at midnight opens the day: a sign-in", MAR11, V.ON_TIME, ("00:00", "17:05")),
    Case("QP000:30 a sign-out late the same evening is a sign-out (5:00后)", MAR11, V.ON_TIME, ("08:25", "23:59")),
    Case(
        "QP000:30 a punch at the next midnight is the next day's, not this day's sign-out",
        MAR11,
        V.MISSING_OUT,
        ("08:25", punch(MAR11 + timedelta(days=1), "00:00")),
    ),
    Case(
        "QP000:30 a site may narrow the window (out_window_min): a later punch is then no sign-out",
        MAR11,
        V.MISSING_OUT,
        ("08:25", "21:01"),
        policy={"out_window_min": 240},
    ),
    # 「8:30前」 at the threshold: minute_rounding (QP 000:30, G2).
    Case("QP000:30 exactly 08:30:00 is on time", MAR11, V.ON_TIME, ("08:30:00", "17:00")),
    Case("QP000:30 08:31:00 is one minute over", MAR11, V.LATE, ("08:31:00", "17:00"), late=1),
    Case(
        "QP000:30 second rounding: 08:30:00 is still on time",
        MAR11,
        V.ON_TIME,
        ("08:30:00", "17:00"),
        policy={"minute_rounding": "second"},
    ),
    Case(
        "QP000:30 second rounding: 08:30:01 is a minute late",
        MAR11,
        V.LATE,
        ("08:30:01", "17:00"),
        policy={"minute_rounding": "second"},
        late=1,
    ),
    Case(
        "QP000:30 second rounding: 16:59:59 is a minute early, as with minute rounding",
        MAR11,
        V.EARLY,
        ("08:20", "16:59:59"),
        policy={"minute_rounding": "second"},
        early=1,
    ),
    Case("WZ002:10 no punch and no leave is absence (旷工)", MAR11, V.ABSENT),
    # -- a day that is not over is not judged -----------------------------------------------------------------------
    Case(
        "QP000:30 signed in at 10:00: 在岗", MAR11, V.ON_DUTY, ("08:25",), now="10:00", reason="待签退 (应于 17:00 后)"
    ),
    Case(
        "QP000:30 late, at 10:00: 在岗, the lateness already said",
        MAR11,
        V.ON_DUTY,
        ("08:41",),
        now="10:00",
        late=11,
        reason="迟到 11 分钟",
    ),
    Case("WZ002:10 nobody seen at 10:00: 未到岗, not 旷工", MAR11, V.NOT_ARRIVED, now="10:00", reason="尚未签到"),
    Case("WZ002:10 nobody seen at 16:59: still 未到岗", MAR11, V.NOT_ARRIVED, now="16:59"),
    Case("WZ002:10 nobody seen when the last session ends (17:00): 旷工", MAR11, V.ABSENT, now="17:00"),
    Case("QP000:31 no sign-out yet at 18:00: 待签退, not 未签退", MAR11, V.AWAITING_OUT, ("08:25",), now="18:00"),
    Case("QP000:30 signed out at 17:05, judged at 18:00: final", MAR11, V.ON_TIME, ("08:25", "17:05"), now="18:00"),
    Case("QP000:30 early sign-out already known at 16:00", MAR11, V.EARLY, ("08:25", "15:30"), now="16:00", early=90),
    Case("G13 the 调休 working Saturday runs like any day: 在岗", OCT10, V.ON_DUTY, ("08:25",), now="09:00"),
    Case("QP000:282 a holiday is a rest day whatever the time", OCT1, V.REST_DAY, now="10:00"),
    Case(
        "QP000:39 morning leave, 10:00: the afternoon has not started, 未到岗 with the leave noted",
        MAR11,
        V.NOT_ARRIVED,
        exceptions=(LEAVE_AM,),
        now="10:00",
        note="请假 0.5 天",
    ),
    Case(
        "SJ001:1040 terminal down at sign-in time, 13:00: 在岗 (they report it in person)",
        MAR11,
        V.ON_DUTY,
        faults=MORNING_FAULT,
        now="13:00",
    ),
    # -- presence: when the person was at the post (AB coverage, QP 000:107) -----------------------------------------
    Case(
        "QP000:107 presence is sign-in to sign-out within the sessions",
        MAR11,
        V.ON_TIME,
        ("08:25", "17:05"),
        present=(("08:30", "11:30"), ("13:00", "17:00")),
    ),
    Case(
        "QP000:107 half-day leave: present only in the afternoon",
        MAR11,
        V.ON_TIME,
        ("12:50", "17:05"),
        exceptions=(LEAVE_AM,),
        present=(("13:00", "17:00"),),
    ),
    Case(
        "QP000:107 a meeting takes its time out of the presence",
        MAR11,
        V.ON_TIME,
        ("08:25", "17:05"),
        exceptions=(exc(L.MEETING, MAR11, "14:00", "15:30", reason="区里培训"),),
        present=(("08:30", "11:30"), ("13:00", "14:00"), ("15:30", "17:00")),
    ),
    Case(
        "QP000:107 a missing sign-out leaves the day uncovered after the sign-in",
        MAR11,
        V.MISSING_OUT,
        ("08:25",),
        present=(),
    ),
    Case(
        "QP000:107 while the day runs, present up to now",
        MAR11,
        V.ON_DUTY,
        ("08:25",),
        now="10:00",
        present=(("08:30", "10:00"),),
    ),
    Case(
        "SJ001:1040 terminal down at sign-in time: present from the session's start",
        MAR11,
        V.DEVICE_FAULT,
        ("17:05",),
        faults=MORNING_FAULT,
        present=(("08:30", "11:30"), ("13:00", "17:00")),
    ),
    Case(
        "NS003:88 fingerprint only: a face punch is ignored",
        MAR11,
        V.ABSENT,
        ("08:25", "17:05"),
        site="ningshan",
        note="忽略 2 次 face 打卡",
    ),
    # -- leave, meetings, compensatory time --------------------------------------------------------------------------
    Case(
        "QP000:39 leave registered in advance covers the day",
        MAR11,
        V.LEAVE,
        exceptions=(exc(L.LEAVE, MAR11, "08:30", "17:00", reason="病假"),),
        note="请假 1 天",
        ids=("leave",),
    ),
    Case(
        "QP000:39 morning leave: the afternoon starts 13:00",
        MAR11,
        V.ON_TIME,
        ("12:50", "17:05"),
        exceptions=(LEAVE_AM,),
        note="请假 0.5 天",
    ),
    Case(
        "QP000:39 morning leave, late for the afternoon",
        MAR11,
        V.LATE,
        ("13:10", "17:05"),
        exceptions=(LEAVE_AM,),
        late=10,
    ),
    Case(
        "QP000:29 morning leave in 夏令: the afternoon starts 13:30",
        JUL15,
        V.ON_TIME,
        ("13:25", "17:05"),
        exceptions=(LEAVE_AM_SUMMER,),
    ),
    Case(
        "WZ002:10 leave not approved (请假未获批准) is absence",
        MAR11,
        V.ABSENT,
        exceptions=(replace(LEAVE_AM, end=at(MAR11, "17:00"), approved=False),),
        note="请假未获批准",
        ids=(),
    ),
    Case(
        "QP000:40 leave filed after two working days does not count",
        MAR11,
        V.ABSENT,
        exceptions=(replace(LEAVE_AM, end=at(MAR11, "17:00"), late=True, filed_at=at(date(2026, 3, 16), "10:00")),),
        note="请假于 03-16 10:00 登记, 已过更正期限",
    ),
    Case(
        "QP000:34 a meeting or training all day",
        MAR11,
        V.MEETING,
        exceptions=(exc(L.MEETING, MAR11, "08:00", "17:30"),),
    ),
    Case(
        "QP000:33 a compensatory day off counts as attendance",
        MAR11,
        V.COMPENSATORY,
        exceptions=(exc(L.COMPENSATORY, MAR11, *WHOLE_DAY),),
    ),
    # -- proof ---------------------------------------------------------------------------------------------------
    Case(
        "QP000:31 proof filed in time: still late, excused",
        MAR11,
        V.LATE,
        ("08:41", "17:05"),
        exceptions=(EVIDENCE,),
        late=11,
        excused=True,
        ids=("evidence",),
        note=f"{EXCUSED_NOTE}: 地铁故障证明",
    ),
    Case(
        "QP000:31 proof excuses a missing sign-out",
        MAR11,
        V.MISSING_OUT,
        ("08:20",),
        exceptions=(EVIDENCE,),
        excused=True,
    ),
    Case(
        "QP000:43 proof filed after the deadline does not excuse",
        MAR11,
        V.LATE,
        ("08:41", "17:05"),
        exceptions=(replace(EVIDENCE, late=True),),
        late=11,
        ids=(),
        note="证明于",
    ),
    Case(
        "QP000:31 proof on an on-time day is not used",
        MAR11,
        V.ON_TIME,
        ("08:20", "17:05"),
        exceptions=(EVIDENCE,),
        ids=(),
    ),
    # -- extended lunch service -----------------------------------------------------------------------------------
    Case(
        "QP000:32 30 min extended lunch service: out at 16:30 is on time",
        MAR11,
        V.ON_TIME,
        ("08:25", "16:30"),
        exceptions=(EXTENDED,),
        ids=("extended_service",),
        note="午间延时服务 30 分钟",
    ),
    Case(
        "QP000:32 ... but 16:20 is 10 minutes early",
        MAR11,
        V.EARLY,
        ("08:25", "16:20"),
        exceptions=(EXTENDED,),
        early=10,
    ),
    # -- holidays, adjusted working days, duty --------------------------------------------------------------------
    Case("QP000:282 National Day 2026-10-01 is a rest day", OCT1, V.REST_DAY),
    Case("QP000:282 punches on a holiday are noted, not judged", OCT1, V.REST_DAY, ("09:00",), note="未登记值班"),
    Case("G13 Saturday 2026-10-10 is an adjusted working day", OCT10, V.ON_TIME, ("08:25", "17:05")),
    Case("G13 ... so staying away is absence", OCT10, V.ABSENT),
    Case("QP000:282 an ordinary Saturday is a rest day", MAR14, V.REST_DAY),
    Case(
        "SJ001:1039 Saturday duty left out of attendance",
        MAR14,
        V.EXEMPT_DUTY,
        ("08:55",),
        exceptions=(DUTY,),
        policy={"duty_counts": False},
        ids=("duty",),
    ),
    Case(
        "QP000:33 Saturday duty counted: judged by the duty hours",
        MAR14,
        V.ON_TIME,
        ("08:55", "12:05"),
        exceptions=(DUTY,),
        ids=("duty",),
    ),
    Case(
        "QP000:33 late for Saturday duty",
        MAR14,
        V.LATE,
        ("09:10", "12:05"),
        exceptions=(DUTY,),
        late=10,
        reason="非工作日值班 09:00-12:00: 09:10 签到",
    ),
    # -- force majeure -------------------------------------------------------------------------------------------
    Case(
        "SJ001:1042 force majeure all day",
        MAR11,
        V.FORCE_MAJEURE,
        exceptions=(replace(ROAD_CLOSED, end=at(MAR11, "18:00")),),
    ),
    Case(
        "SJ001:1042 road closed until 10:00, in at 09:40: not counted",
        MAR11,
        V.FORCE_MAJEURE,
        ("09:40", "17:05"),
        exceptions=(ROAD_CLOSED,),
        late=70,
        reason="暴雪封路, 不计入考核",
        ids=("force_majeure",),
    ),
    Case(
        "SJ001:1042 late after the road reopened counts from 10:00",
        MAR11,
        V.LATE,
        ("10:20", "17:05"),
        exceptions=(ROAD_CLOSED,),
        late=20,
    ),
    # -- terminal faults -----------------------------------------------------------------------------------------
    Case(
        "SJ001:1040 terminal down at sign-in time: device fault",
        MAR11,
        V.DEVICE_FAULT,
        ("17:05",),
        faults=MORNING_FAULT,
        reason="考勤机 att-1 07:30-09:00 故障",
    ),
    Case(
        "SJ001:1040 a punch taken during the fault still counts",
        MAR11,
        V.LATE,
        ("08:45", "17:05"),
        faults=MORNING_FAULT,
        late=15,
    ),
    Case(
        "SJ001:1040 terminal down all day, no punch: device fault",
        MAR11,
        V.DEVICE_FAULT,
        faults=(fault(MAR11, *WHOLE_DAY),),
    ),
    Case("SJ001:1040 a morning fault does not excuse the evening", MAR11, V.MISSING_OUT, faults=MORNING_FAULT),
    Case(
        "SJ001:1040 a fault hours before sign-in does not excuse it",
        MAR11,
        V.MISSING_IN,
        ("17:05",),
        faults=(fault(MAR11, "05:30", "07:00"),),
    ),
    # -- whose time, which methods --------------------------------------------------------------------------------
    Case(
        "G16 a punch from an unsynchronised clock counts, flagged",
        MAR11,
        V.ON_TIME,
        (punch(MAR11, "08:20", trusted=False), "17:05"),
        untrusted=True,
        note="时钟未同步",
    ),
    Case(
        "NS003:88 fingerprint only: a QR punch does not count",
        MAR11,
        V.MISSING_IN,
        (punch(MAR11, "08:20", method="qr"), punch(MAR11, "17:05", method="fingerprint")),
        policy={"methods": ["fingerprint"]},
        note="qr",
    ),
    # -- product decisions where the seeds are silent -------------------------------------------------------------
    Case("G2 a 5-minute grace: 08:35 is on time", MAR11, V.ON_TIME, ("08:35", "17:05"), policy={"grace_min": 5}),
    Case("G2 ... 08:36 is 6 minutes late", MAR11, V.LATE, ("08:36", "17:05"), policy={"grace_min": 5}, late=6),
    Case(
        "G3 absent_after_min=120: in at 10:45 is absence",
        MAR11,
        V.ABSENT,
        ("10:45", "17:05"),
        policy={"absent_after_min": 120},
        late=135,
    ),
    # -- four punches: only then does the afternoon start matter --------------------------------------------------
    Case(
        "QP000:29 4 punches, 夏令: back at 13:20 is before 13:30",
        JUL15,
        V.ON_TIME,
        ("08:25", "11:35", "13:20", "17:05"),
        policy={"punches_per_day": 4},
    ),
    Case(
        "QP000:28 4 punches, 非夏令: back at 13:20 is 20 min late",
        MAR11,
        V.LATE,
        ("08:25", "11:35", "13:20", "17:05"),
        policy={"punches_per_day": 4},
        late=20,
    ),
    Case("QP000:30 2 punches: the lunch punches do not matter", MAR11, V.ON_TIME, ("08:25", "11:35", "13:20", "17:05")),
    Case(
        "G4 4 punches: no lunch sign-out",
        MAR11,
        V.MISSING_OUT,
        ("08:25", "12:50", "17:05"),
        policy={"punches_per_day": 4},
    ),
    Case(
        "SJ001:1041 4 punches: gone after lunch is missing punches, not absence",
        MAR11,
        V.MISSING_IN,
        ("08:25", "11:35"),
        policy={"punches_per_day": 4},
        reason="未签到 (应于 13:00 前); 未签退 (应于 17:00 后)",
    ),
    # -- Wanzhou -------------------------------------------------------------------------------------------------
    Case("WZ002:8 in by 9:00, out from 17:30", MAR11, V.ON_TIME, ("08:55", "17:35"), site="wanzhou"),
    Case("WZ002:8 09:01 is late", MAR11, V.LATE, ("09:01", "17:35"), site="wanzhou", late=1),
    Case("WZ002:8 17:29 is early", MAR11, V.EARLY, ("08:55", "17:29"), site="wanzhou", early=1),
    Case(
        "WZ002:77 punches in the 工间休息 are no sign-out",
        MAR11,
        V.ON_TIME,
        ("08:55", "10:31", "10:49", "15:32", "17:35"),
        site="wanzhou",
    ),
    Case(
        "WZ002:77 4 punches: the breaks are not punched",
        MAR11,
        V.ON_TIME,
        ("08:55", "10:31", "12:01", "13:25", "15:49", "17:31"),
        site="wanzhou",
        policy={"punches_per_day": 4},
    ),
]


def run(case: Case) -> StaffDay:
    site, policy = SITES[case.site]
    policy = PunchPolicy.model_validate(policy.model_dump() | case.policy)
    punches = [p if isinstance(p, Punch) else punch(case.day, p) for p in case.punches]
    now = at(case.day, case.now) if case.now else None
    return judge_day(STAFF, case.day, site.site_calendar, policy, punches, case.exceptions, case.faults, now)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_regulation_case(case: Case) -> None:
    result = run(case)
    assert (result.verdict, result.late_min, result.early_min) == (case.verdict, case.late, case.early), result.reason
    assert is_excused(result) is case.excused
    assert result.untrusted is case.untrusted
    assert case.reason in result.reason
    assert not case.note or any(case.note in n for n in result.notes), result.notes
    if case.ids is not None:
        assert result.exceptions == case.ids
    if case.present is not None:
        assert result.present == tuple((at(case.day, s), at(case.day, e)) for s, e in case.present)
    assert result.staff_id == STAFF and result.day == case.day and result.reason


# -- single rules in more detail --------------------------------------------------------------------------------


def test_the_terminal_record_is_authoritative_when_its_clock_was_synchronised() -> None:
    """NS 003:88: 考勤以指纹记录机记录为准. A punch taken offline at 08:25 and received at 09:10 is on time;
    a site that chose the centre's time judges it late (G16: a per-site choice, default the device)."""
    site, policy = SITES["qingpu"]
    buffered = Punch(
        "e1",
        STAFF,
        at(MAR11, "09:10"),
        "fingerprint",
        "att-1",
        device_ts=at(MAR11, "08:25"),
        received_at=at(MAR11, "09:10"),
    )
    out = punch(MAR11, "17:05")
    by_device = judge_day(STAFF, MAR11, site.site_calendar, policy, [buffered, out], [], [])
    centre = policy.model_copy(update={"authoritative": "centre"})
    by_centre = judge_day(STAFF, MAR11, site.site_calendar, centre, [buffered, out], [], [])
    assert (by_device.verdict, by_device.reason.split(";")[0]) == (Verdict.ON_TIME, "08:25 签到")
    assert (by_centre.verdict, by_centre.late_min) == (Verdict.LATE, 40)


def test_an_unsynchronised_device_clock_is_never_used() -> None:
    """The terminal's clock was wrong (08:00) and not synchronised: the centre received the punch at 08:45."""
    site, policy = SITES["qingpu"]
    wrong = Punch(
        "e1",
        STAFF,
        at(MAR11, "08:45"),
        "face",
        "att-1",
        trusted=False,
        device_ts=at(MAR11, "08:00"),
        received_at=at(MAR11, "08:45"),
    )
    result = judge_day(STAFF, MAR11, site.site_calendar, policy, [wrong, punch(MAR11, "17:05")], [], [])
    assert (result.verdict, result.late_min, result.untrusted) == (Verdict.LATE, 15, True)


def test_only_the_staff_members_own_punches_and_exceptions_count() -> None:
    site, policy = SITES["qingpu"]
    someone_else = [replace(punch(MAR11, "08:20"), staff_id="S0002"), replace(punch(MAR11, "17:05"), staff_id="S0002")]
    leave = replace(exc(L.LEAVE, MAR11, *WHOLE_DAY), staff_id="S0002")
    result = judge_day(STAFF, MAR11, site.site_calendar, policy, someone_else, [leave], [])
    assert result.verdict == Verdict.ABSENT and result.punches == ()


def test_punches_of_neighbouring_days_are_left_to_those_days() -> None:
    site, policy = SITES["qingpu"]
    week = [punch(MAR11 + timedelta(days=d), hm) for d in (-1, 0, 1) for hm in ("08:20", "17:05")]
    result = judge_day(STAFF, MAR11, site.site_calendar, policy, week, [], [])
    assert result.verdict == Verdict.ON_TIME
    assert [p.at for p in result.punches] == [at(MAR11, "08:20"), at(MAR11, "17:05")]


def test_leave_covering_the_whole_day_wins_over_punches_and_counts_one_day() -> None:
    site, policy = SITES["qingpu"]
    leave = exc(L.LEAVE, MAR11, "08:30", "17:00")
    result = judge_day(STAFF, MAR11, site.site_calendar, policy, [punch(MAR11, "08:20")], [leave], [])
    assert result.verdict == Verdict.LEAVE and leave_days(result) == 1.0
    assert len(result.punches) == 1


def test_half_a_day_of_leave_and_half_a_day_of_meeting() -> None:
    """QP 000:37: meetings and training are among the reasons; each half counted by kind, the larger names the day."""
    site, policy = SITES["qingpu"]
    morning = exc(L.LEAVE, MAR11, "08:30", "11:30", id="l1")
    afternoon = exc(L.MEETING, MAR11, "13:00", "17:00", id="m1")
    result = judge_day(STAFF, MAR11, site.site_calendar, policy, [], [morning, afternoon], [])
    assert result.verdict == Verdict.MEETING  # 4 h of meeting against 3 h of leave
    assert leave_days(result) == 0.5
    assert result.exceptions == ("l1", "m1")


# -- the monthly rule (WZ 002:10: 当月迟到或早退累计4次以上按旷工半天处理) -----------------------------------------


def month(*verdicts: Verdict, start: date = date(2026, 3, 2), **kw: Any) -> list[StaffDay]:
    return [StaffDay(STAFF, start + timedelta(days=i), v, "", **kw) for i, v in enumerate(verdicts)]


WZ_RULE = SITES["wanzhou"][1].monthly
assert WZ_RULE is not None
EXCUSED = StaffDay(STAFF, date(2026, 3, 31), Verdict.LATE, "", notes=(EXCUSED_NOTE,))


@pytest.mark.parametrize(
    ("days", "rule", "absent"),
    [
        pytest.param(month(*[V.LATE] * 3), WZ_RULE, 0.0, id="WZ002:10 3 lates: none"),
        pytest.param(month(*[V.LATE] * 4), WZ_RULE, 0.5, id="WZ002:10 4 lates: half a day (以上 includes 4)"),
        pytest.param(month(V.LATE, V.LATE, V.EARLY, V.EARLY), WZ_RULE, 0.5, id="WZ002:10 lates and earlies are summed"),
        pytest.param(month(V.LATE_AND_EARLY, V.LATE_AND_EARLY), WZ_RULE, 0.5, id="WZ002:10 late-and-early is two"),
        pytest.param(month(*[V.LATE] * 8), WZ_RULE, 0.5, id="G3 8 lates, mode once: half a day"),
        pytest.param(month(*[V.LATE] * 8), WZ_RULE.model_copy(update={"mode": "every"}), 1.0, id="G3 8, every: 1 day"),
        pytest.param(month(*[V.LATE] * 7), WZ_RULE.model_copy(update={"mode": "every"}), 0.5, id="G3 7, every: 0.5"),
        pytest.param(
            month(*[V.LATE] * 4), WZ_RULE.model_copy(update={"inclusive": False}), 0.0, id="G3 4 is not above 4"
        ),
        pytest.param(month(*[V.LATE] * 5), WZ_RULE.model_copy(update={"inclusive": False}), 0.5, id="G3 5 is above 4"),
        pytest.param([*month(*[V.LATE] * 3), EXCUSED], WZ_RULE, 0.0, id="WZ002:8 a late with proof is not 无故"),
        pytest.param(month(V.ABSENT, *[V.LATE] * 4), WZ_RULE, 1.5, id="WZ002:10 an absent day plus the rule"),
        pytest.param(
            month(V.LATE, V.LATE) + month(V.LATE, V.LATE, start=date(2026, 4, 1)), WZ_RULE, 0.0, id="WZ002:10 per month"
        ),
        pytest.param(month(*[V.MISSING_OUT] * 4), WZ_RULE, 0.0, id="WZ002:10 missing punches are not lates"),
        pytest.param(
            month(*[V.MISSING_OUT] * 4),
            WZ_RULE.model_copy(update={"counts": ["late", "early", "missing"]}),
            0.5,
            id="G3 counting missing",
        ),
        pytest.param(month(*[V.LATE] * 8), None, 0.0, id="QP000:43 no aggregation rule"),
    ],
)
def test_monthly_rule(days: list[StaffDay], rule: MonthlyRule | None, absent: float) -> None:
    summary = month_summary(days, rule)[STAFF]
    assert summary.absent_days == absent
    assert summary.rule_absent_days == absent - sum(d.verdict == V.ABSENT for d in days)


def test_month_summary_counts_each_kind_of_day() -> None:
    days = month(
        V.ON_TIME, V.LATE, V.LATE_AND_EARLY, V.MISSING_IN, V.DEVICE_FAULT, V.COMPENSATORY, V.MEETING, V.LEAVE, V.ABSENT
    )
    days[7] = replace(days[7], notes=("请假 1 天 (病假)",))
    days += [replace(EXCUSED, day=date(2026, 3, 30)), StaffDay(STAFF, date(2026, 3, 31), V.REST_DAY, "")]
    assert month_summary(days, None)[STAFF] == MonthSummary(
        staff_id=STAFF,
        late=2,
        early=1,
        missing=1,
        absent_days=1.0,
        leave_days=1.0,
        device_fault=1,
        worked_days=8,
        excused=1,
    )


def test_locked_days_without_proof_are_abnormal() -> None:
    """QP 000:43: 未在规定时间内提交相应证明的,一律视作非正常考勤."""
    days = month(V.LATE, V.MISSING_OUT, V.ON_TIME, V.LATE, locked=True)
    days[3] = replace(days[3], notes=(EXCUSED_NOTE,))
    days.append(StaffDay(STAFF, date(2026, 3, 20), V.ABSENT, ""))  # not locked yet: still correctable
    assert month_summary(days, None)[STAFF].abnormal == 2


def test_month_summary_keeps_people_apart() -> None:
    days = month(*[V.LATE] * 4) + [replace(d, staff_id="S0002") for d in month(V.LATE)]
    summaries = month_summary(days, WZ_RULE)
    assert (summaries[STAFF].absent_days, summaries["S0002"].absent_days) == (0.5, 0.0)
    assert list(summaries) == [STAFF, "S0002"]


def test_a_wanzhou_month_from_punches_to_half_a_day() -> None:
    """End to end: four late sign-ins in March 2026 at Wanzhou, proof for a fifth, are half a day of absence."""
    site, policy = SITES["wanzhou"]
    cal = site.site_calendar
    days = []
    for d in range(2, 10):  # Mon Mar 2 .. Mon Mar 9
        day = date(2026, 3, d)
        ins = "09:05" if d in (2, 3, 4, 5, 6) else "08:55"
        evidence = [exc(L.EVIDENCE, day, *WHOLE_DAY)] if d == 6 else []
        days.append(judge_day(STAFF, day, cal, policy, [punch(day, ins), punch(day, "17:31")], evidence, []))
    summary = month_summary(days, policy.monthly)[STAFF]
    assert (summary.late, summary.excused, summary.absent_days, summary.worked_days) == (4, 1, 0.5, 6)


# -- what the day means for other parts ---------------------------------------------------------------------------


def test_presence_and_attendance() -> None:
    day = StaffDay(STAFF, MAR11, V.LATE, "")
    assert is_present(day) and is_attendance(day)
    compensatory = replace(day, verdict=V.COMPENSATORY)
    assert not is_present(compensatory) and is_attendance(compensatory)
    assert not is_present(replace(day, verdict=V.FORCE_MAJEURE))  # never came
    assert is_present(replace(day, verdict=V.FORCE_MAJEURE, punches=(punch(MAR11, "09:40"),)))
    for verdict in (V.ABSENT, V.LEAVE, V.REST_DAY, V.EXEMPT_DUTY):
        assert not is_attendance(replace(day, verdict=verdict)), verdict


# -- the policy and the examples --------------------------------------------------------------------------------

CITATION = re.compile(r"#.*(\b\d{3}:\d+|\bG\d+\b|no seed)")


@pytest.mark.parametrize("site", ["qingpu", "wanzhou", "ningshan"])
def test_every_example_value_cites_its_source(site: str) -> None:
    lines = (EXAMPLES / f"{site}.toml").read_text().splitlines()
    values = [line for line in lines if re.match(r"^\w+ = ", line)]
    assert len(values) >= 12
    uncited = [line for line in values if not CITATION.search(line)]
    assert uncited == []


def test_examples_hold_the_seeds_numbers() -> None:
    qp_site, qp = SITES["qingpu"]
    wz_site, wz = SITES["wanzhou"]
    assert qp.methods == ["face", "fingerprint", "qr"] and qp.punches_per_day == 2 and qp.monthly is None
    assert qp.correction_working_days == 2 and qp.duty_counts
    assert {t.name: t.sessions[1] for t in qp_site.calendar.timetables} == {
        "非夏令": "13:00-17:00",
        "夏令": "13:30-17:00",
    }
    assert wz_site.calendar.timetables[0].sessions == ["09:00-12:00", "13:30-17:30"]
    assert wz.monthly == MonthlyRule(count=4, inclusive=True, mode="once", absent_days=0.5, counts=["late", "early"])
    assert not wz.duty_counts


@pytest.mark.parametrize(
    ("data", "field_name"),
    [
        ({"methods": ["iris"]}, "methods.0"),
        ({"methods": []}, "methods"),
        ({"methods": ["qr", "qr"]}, "methods"),
        ({"punches_per_day": 3}, "punches_per_day"),
        ({"grace_min": -1}, "grace_min"),
        ({"authoritative": "phone"}, "authoritative"),
        ({"monthly": {"mode": "twice"}}, "monthly.mode"),
        ({"monthly": {"count": 0}}, "monthly.count"),
        ({"monthly": {"counts": ["late", "late"]}}, "monthly.counts"),
        ({"late_grace": 5}, "late_grace"),
    ],
)
def test_bad_policy_names_the_field(data: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValidationError) as err:
        PunchPolicy.model_validate(data)
    assert field_name in {".".join(str(p) for p in e["loc"]) for e in err.value.errors()}


@pytest.mark.parametrize(
    ("occurrences", "mode", "inclusive", "penalty"),
    [
        (3, "once", True, 0.0),
        (4, "once", True, 0.5),
        (12, "once", True, 0.5),
        (12, "every", True, 1.5),
        (10, "every", False, 1.0),
    ],
)
def test_monthly_rule_penalty(occurrences: int, mode: str, inclusive: bool, penalty: float) -> None:
    assert MonthlyRule.model_validate({"mode": mode, "inclusive": inclusive}).penalty(occurrences) == penalty


def test_the_rest_day_calendar_is_the_sites() -> None:
    """Wanzhou and Qingpu both close on statutory holidays (WZ 002:8, QP 000:282); the example calendars say so."""
    for site, _ in SITES.values():
        cal: SiteCalendar = site.site_calendar
        assert not cal.is_working_day(OCT1) and cal.is_working_day(OCT10)


# -- Ningshan's handover (NS 003:88) ------------------------------------------------------------------------------
def test_ns_leave_taken_before_the_substitute_arrived_is_absence_and_after_it_is_leave() -> None:
    """NS003:88 顶岗人员到岗后,请假人员方可离开工作岗位,否则视为脱岗或旷工: A signs in and takes the afternoon off
    (half a day). B arriving at 13:00 covers the handover; B arriving at 14:00 leaves 13:00-14:00 uncovered: A's day
    is absence. Qingpu (notify) keeps the leave either way: a gap is only reported there (QP 000:107)."""
    from broker.attendance.ab import apply_handover
    from broker.attendance.roster import StaffMember

    site, policy = SITES["ningshan"]
    cal = site.site_calendar
    afternoon = exc(L.LEAVE, MAR11, "12:00", "17:30", reason="事假")
    members = [StaffMember("ns", s, s, "镇政府", "W1", post, date(2026, 1, 1)) for s, post in (("A", "A"), ("B", "B"))]

    def a_and_b(b_arrives: str) -> list[StaffDay]:
        a = judge_day(
            "A",
            MAR11,
            cal,
            policy,
            [replace(punch(MAR11, h), method="fingerprint", staff_id="A") for h in ("08:25", "12:00")],
            [replace(afternoon, staff_id="A")],
            [],
        )
        b = judge_day(
            "B",
            MAR11,
            cal,
            policy,
            [
                replace(punch(MAR11, h), method="fingerprint", staff_id="B", event_id=f"b-{h}")
                for h in (b_arrives, "17:35")
            ],
            [],
            [],
        )
        return [a, b]  # fmt: skip

    excs = {"A": [replace(afternoon, staff_id="A")]}
    sessions = cal.sessions_on(MAR11)
    on_time = apply_handover(a_and_b("12:55"), members, excs, sessions, policy.ab, HALL_ZONE)
    assert on_time[0].verdict is V.ON_TIME and any("请假 0.5 天" in n for n in on_time[0].notes)
    late_b = apply_handover(a_and_b("15:00"), members, excs, sessions, policy.ab, HALL_ZONE)
    assert late_b[0].verdict is V.ABSENT and "顶岗人员未到岗" in late_b[0].reason and "NS 003:88" in late_b[0].reason
    assert late_b[1].verdict is V.MISSING_IN, "B is judged on B's own punches"
    _, qp = SITES["qingpu"]
    assert apply_handover(a_and_b("15:00"), members, excs, sessions, qp.ab, HALL_ZONE)[0].verdict is V.ON_TIME


# (case, when B (the substitute) arrives or None, when A's day is judged, A's verdict). A signs in 08:25, leaves at
# 12:00 for the afternoon (事假, half a day); Ningshan's sessions on 2026-03-11 are 08:30-12:00 and 14:30-17:30.
NS_HANDOVER_CASES = [
    ("NS003:88 at 13:30 before the afternoon session B may still come: not 旷工", None, "13:30", V.ON_TIME),
    ("NS003:88 at 16:00 B still away, the day not over (item 4): not 旷工 yet", None, "16:00", V.ON_TIME),
    ("NS003:88 B at 14:50, known by 16:00, still not judged before the day ends", "14:50", "16:00", V.ON_TIME),
    ("NS003:88 at 17:30 the last session over and nobody took over: 旷工", None, "17:30", V.ABSENT),
    ("NS003:88 B at 14:25, before the afternoon session: handed over", "14:25", "18:00", V.ON_TIME),
    ("NS003:88 B at 14:40: 10 minutes uncovered, under ab.min_gap_min (15)", "14:40", "18:00", V.ON_TIME),
    ("NS003:88 B at 14:50: 20 minutes uncovered", "14:50", "18:00", V.ABSENT),
]


@pytest.mark.parametrize(
    ("case", "b_arrives", "now", "verdict"), NS_HANDOVER_CASES, ids=[c[0] for c in NS_HANDOVER_CASES]
)
def test_ns_handover_is_judged_once_the_day_is_over(case: str, b_arrives: str | None, now: str, verdict: V) -> None:
    """NS003:88 顶岗人员到岗后,请假人员方可离开工作岗位,否则视为脱岗或旷工, judged like any other 旷工: never before
    the day's last session ends (issue 17 item 4). The handover used to mark A 旷工 at 13:30, an hour before B was
    even due, because B's afternoon had not happened yet."""
    from broker.attendance.ab import apply_handover
    from broker.attendance.roster import StaffMember

    site, policy = SITES["ningshan"]
    cal, when = site.site_calendar, at(MAR11, now)
    leave = exc(L.LEAVE, MAR11, "12:00", "17:30", reason="事假", staff_id="A")
    members = [StaffMember("ns", s, s, "镇政府", "W1", post, date(2026, 1, 1)) for s, post in (("A", "A"), ("B", "B"))]

    def finger(staff_id: str, hm: str) -> Punch:
        return replace(punch(MAR11, hm), method="fingerprint", staff_id=staff_id, event_id=f"{staff_id}-{hm}")

    b_punches = [finger("B", hm) for hm in (b_arrives, "17:35") if hm is not None and at(MAR11, hm) <= when]
    a = judge_day("A", MAR11, cal, policy, [finger("A", "08:25"), finger("A", "12:00")], [leave], [], when)
    b = judge_day("B", MAR11, cal, policy, b_punches, [], [], when)
    judged = apply_handover([a, b], members, {"A": [leave]}, cal.sessions_on(MAR11), policy.ab, HALL_ZONE, now=when)
    assert judged[0].verdict is verdict, case
