"""One staff member's day, judged by the site's rules (requirements-from-regulations.md §1.2-§1.7, §11.3).

A day is decided in this order:

1. Exceptions count only when approved and filed in time. A late filing leaves the day as the punches say and
   abnormal once locked (QP 000:43); unapproved leave is no leave, so a day without punches is absence (WZ 002:10).
   Either is noted on the day.
2. A day that is not a working day is ``rest_day``. With duty filed it is ``exempt_duty`` (SJ 001:1039), or, with
   ``policy.duty_counts``, judged against the duty hours like a working day (QP 000:33).
3. Leave, compensatory time, meetings and force majeure cover parts of the sessions; a day they cover entirely takes
   the verdict of the kind covering most of it. The punches are judged against what is left.
4. Two punches a day (QP 000:30) judge one unit from the first uncovered start to the last uncovered end; four judge
   each session, so the lunch break is punched. A unit's punch window is split at its middle: the earliest punch
   before the middle signs in, the latest after it signs out. Times compare in whole minutes as a terminal shows
   them: in at 08:30:59 is on time for 08:30, out at 16:59:59 is a minute early for 17:00. Extended lunch service
   moves the last sign-out earlier by its minutes (QP 000:32). Wanzhou's 工间休息 are inside the sessions, so they
   are never punched and never absence (WZ 002:8, 002:77).
5. A punch that should have happened while a terminal of the site was faulted is ``device_fault`` (SJ 001:1040);
   a punch that did happen counts as it is.
6. Force majeure that turns a shortfall into none makes the day ``force_majeure`` (SJ 001:1042).
7. Proof filed in time (EVIDENCE) keeps the verdict, so the day still shows what happened, and marks it excused
   with a note starting ``EXCUSED_NOTE``; ``is_excused`` reads it and the monthly rule skips the day (QP 000:31).
8. A day that is not over is not judged (``now`` before the punch window closes): before its last session ends a
   person is 在岗 (``ON_DUTY``) once seen and 未到岗 (``NOT_ARRIVED``) until then; after it, a sign-out still
   possible is 待签退 (``AWAITING_OUT``), never 未签退; nobody seen all day is 旷工 once the last session is over.

The punch window is the calendar day unless the site narrows it: the seeds set only the latest sign-in and the
earliest sign-out (上午8:30前签到,下午5:00后签退, QP 000:30), so a sign-out late the same evening is a sign-out.
``StaffDay.present`` says when the person was at the post, for AB coverage (``ab.py``): from sign-in to sign-out
within the sessions, less leave and meetings; a missing punch leaves the time it should bound uncovered, unless a
terminal fault explains it; while the day runs, a person seen and not signed out is there up to ``now``.

``StaffDay.late_min`` / ``early_min`` describe the punches; the verdict (and ``is_excused``) decide what counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, tzinfo

from broker.attendance.model import (
    NEEDS_PROOF,
    Exception_,
    ExceptionKind,
    FaultWindow,
    Interval,
    Punch,
    StaffDay,
    Verdict,
)
from broker.attendance.policy import PunchPolicy
from broker.calendar import SiteCalendar

EXCUSED_NOTE = "已提交证明"
_LEAVE_NOTE = re.compile(r"^请假 (\d+(?:\.\d+)?) 天")
_MINUTE = timedelta(minutes=1)

# Kinds that take time out of the sessions, in the order their coverage is counted.
_COVERING: dict[ExceptionKind, Verdict] = {
    ExceptionKind.LEAVE: Verdict.LEAVE,
    ExceptionKind.COMPENSATORY: Verdict.COMPENSATORY,
    ExceptionKind.MEETING: Verdict.MEETING,
    ExceptionKind.FORCE_MAJEURE: Verdict.FORCE_MAJEURE,
}
_LABEL = {
    ExceptionKind.LEAVE: "请假",
    ExceptionKind.EVIDENCE: "证明",
    ExceptionKind.MEETING: "会议/培训",
    ExceptionKind.COMPENSATORY: "调休",
    ExceptionKind.DUTY: "值班",
    ExceptionKind.FORCE_MAJEURE: "不可抗力",
    ExceptionKind.EXTENDED_SERVICE: "午间延时服务",
}
# The staff member was at the hall (AB coverage); DEVICE_FAULT days count, since staff report the fault in person.
_PRESENT = frozenset(
    {
        Verdict.ON_TIME,
        Verdict.LATE,
        Verdict.EARLY,
        Verdict.LATE_AND_EARLY,
        Verdict.MISSING_IN,
        Verdict.MISSING_OUT,
        Verdict.DEVICE_FAULT,
        Verdict.ON_DUTY,
        Verdict.AWAITING_OUT,
    }
)
# Counted as attendance (出勤): present, plus compensatory time (QP 000:33) and meetings/training on duty.
_ATTENDANCE = _PRESENT | {Verdict.COMPENSATORY, Verdict.MEETING}


def is_excused(day: StaffDay) -> bool:
    """A late/early/missing/absent day whose proof was filed in time: not 非正常考勤, not in the monthly rule."""
    return day.verdict in NEEDS_PROOF and any(n.startswith(EXCUSED_NOTE) for n in day.notes)


def leave_days(day: StaffDay) -> float:
    """Leave the day took, in half days (a morning or an afternoon is 0.5)."""
    for note in day.notes:
        m = _LEAVE_NOTE.match(note)
        if m:
            return float(m.group(1))
    return 0.0


def is_present(day: StaffDay) -> bool:
    """At the hall that day (for AB coverage); force majeure counts when the person did come."""
    return day.verdict in _PRESENT or (day.verdict == Verdict.FORCE_MAJEURE and bool(day.punches))


def is_attendance(day: StaffDay) -> bool:
    """Counted as a day worked (出勤)."""
    return day.verdict in _ATTENDANCE or is_present(day)


def judge_day(
    staff_id: str,
    day: date,
    cal: SiteCalendar,
    policy: PunchPolicy,
    punches: Sequence[Punch],
    exceptions: Sequence[Exception_],
    faults: Sequence[FaultWindow],
    now: datetime | None = None,
) -> StaffDay:
    """The verdict on ``staff_id``'s ``day`` as it stands at ``now`` (None: the day is over). ``punches`` may hold
    the punches of days around it (those outside the day's window are ignored), ``exceptions`` that person's,
    ``faults`` the windows of the site's terminals."""
    span = _day_span(day, cal.zone)
    usable, notes = _usable(exceptions, staff_id, span, cal.zone)
    counted, ignored = _counted(punches, staff_id, policy)
    ctx = _Ctx(staff_id, day, cal.zone, policy, counted, usable, tuple(faults), span, notes + ignored, now)
    sessions = cal.sessions_on(day)  # cached, and empty unless a working day
    if not sessions:
        return _rest_day(ctx)
    return _judge_sessions(ctx, sessions, prefix="")


@dataclass(frozen=True)
class _Ctx:
    staff_id: str
    day: date
    zone: tzinfo
    policy: PunchPolicy
    punches: tuple[Punch, ...]  # methods the site accepts, sorted, ``at`` the authoritative time
    exceptions: tuple[Exception_, ...]  # approved, filed in time, overlapping the day
    faults: tuple[FaultWindow, ...]
    span: Interval  # the local calendar day
    notes: list[str]
    now: datetime | None = None  # judging time; None: the day is over

    def running(self, until: datetime) -> bool:
        """``until`` is still ahead: what it bounds may yet happen."""
        return self.now is not None and self.now < until

    def hm(self, t: datetime) -> str:
        return f"{t.astimezone(self.zone):%H:%M}"

    def of_kind(self, *kinds: ExceptionKind) -> list[Exception_]:
        return [e for e in self.exceptions if e.kind in kinds]

    def within(self, lo: datetime, hi: datetime) -> tuple[Punch, ...]:
        return tuple(p for p in self.punches if lo <= p.at < hi)


def _day_span(day: date, zone: tzinfo) -> Interval:
    return datetime.combine(day, time(), tzinfo=zone), datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)


def _usable(
    exceptions: Sequence[Exception_], staff_id: str, span: Interval, zone: tzinfo
) -> tuple[tuple[Exception_, ...], list[str]]:
    usable: list[Exception_] = []
    notes: list[str] = []
    for e in sorted(exceptions, key=lambda e: (e.start, e.id)):
        if e.staff_id != staff_id or e.end <= span[0] or e.start >= span[1]:
            continue
        label = _LABEL[e.kind]
        if not e.approved:
            notes.append(f"{label}未获批准, 不予采信 (WZ 002:10)")
        elif e.late:
            filed = f"{e.filed_at.astimezone(zone):%m-%d %H:%M}"
            notes.append(f"{label}于 {filed} 登记, 已过更正期限, 不予采信 (QP 000:43)")
        else:
            usable.append(e)
    return tuple(usable), notes


def _counted(punches: Sequence[Punch], staff_id: str, policy: PunchPolicy) -> tuple[tuple[Punch, ...], list[str]]:
    mine = [p for p in punches if p.staff_id == staff_id]
    kept = sorted((_timed(p, policy) for p in mine if p.method in policy.methods), key=lambda p: (p.at, p.event_id))
    others = sorted({p.method for p in mine if p.method not in policy.methods})
    dropped = len(mine) - len(kept)
    notes = [f"忽略 {dropped} 次 {'/'.join(others)} 打卡: 本站不采用该考勤方式"] if dropped else []
    return tuple(kept), notes


def _timed(p: Punch, policy: PunchPolicy) -> Punch:
    """The punch at its authoritative time: the terminal's record when its clock was synchronised and the site
    trusts terminals (NS 003:88, G16), else the centre's receive time."""
    if policy.authoritative == "device" and p.trusted and p.device_ts is not None:
        at = p.device_ts
    elif (policy.authoritative == "centre" or not p.trusted) and p.received_at is not None:
        at = p.received_at
    else:
        at = p.at
    return p if at == p.at else replace(p, at=at)


# -- non-working days -------------------------------------------------------------------------------------------


def _rest_day(ctx: _Ctx) -> StaffDay:
    duty = ctx.of_kind(ExceptionKind.DUTY)
    punches = ctx.within(*ctx.span)
    if not duty:
        notes = [f"非工作日有 {len(punches)} 次打卡, 未登记值班"] if punches else []
        return _staff_day(ctx, Verdict.REST_DAY, "非工作日 (休息日或法定节假日)", punches=punches, notes=notes)
    hours = _merge([(max(e.start, ctx.span[0]), min(e.end, ctx.span[1])) for e in duty])
    text = ", ".join(f"{ctx.hm(s)}-{ctx.hm(e)}" for s, e in hours)
    if not ctx.policy.duty_counts:
        reason = f"非工作日值班 {text}, 不列入考勤 (SJ 001:1039)"
        day = _staff_day(ctx, Verdict.EXEMPT_DUTY, reason, punches=punches, ids=[e.id for e in duty])
        return replace(day, present=tuple(_until_now(ctx, hours)))
    judged = _judge_sessions(ctx, hours, prefix=f"非工作日值班 {text}: ")
    return replace(judged, exceptions=(*(e.id for e in duty), *judged.exceptions))


def _merge(intervals: list[Interval]) -> list[Interval]:
    out: list[Interval] = []
    for s, e in sorted(i for i in intervals if i[0] < i[1]):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


# -- sessions, less what exceptions cover -----------------------------------------------------------------------


def _judge_sessions(ctx: _Ctx, sessions: list[Interval], prefix: str) -> StaffDay:
    covering = ctx.of_kind(*_COVERING)
    kept, covered, applied = _cover(sessions, covering)
    notes = _leave_note(ctx, sessions, covered, applied)
    ids = [e.id for e in applied]
    punches = ctx.within(*_window(ctx, sessions))
    if not any(kept):
        kind = max(covered, key=lambda k: (covered[k], -list(_COVERING).index(k)))
        reasons = "; ".join(e.reason for e in applied if e.kind == kind and e.reason)
        reason = f"{prefix}{_LABEL[kind]}全天" + (f": {reasons}" if reasons else "")
        return _staff_day(ctx, _COVERING[kind], reason, punches=punches, ids=ids, notes=notes)

    allowance, extended = _extended(ctx)
    tally = _judged(ctx, sessions, covering, allowance)
    verdict, reason = _provisional(ctx, tally, _verdict(tally)), prefix + "; ".join(tally.parts)
    forced = [e for e in applied if e.kind == ExceptionKind.FORCE_MAJEURE]
    if forced and verdict not in NEEDS_PROOF:  # would the day have needed proof without it?
        raw = _judged(ctx, sessions, [e for e in covering if e not in forced], allowance)
        if _verdict(raw) in NEEDS_PROOF:
            why = "; ".join(e.reason for e in forced if e.reason) or "不可抗力"
            verdict, tally = Verdict.FORCE_MAJEURE, raw
            reason = f"{prefix}{'; '.join(raw.parts)} — {why}, 不计入考核 (SJ 001:1042)"
    notes += tally.notes
    if extended:
        notes.append(f"午间延时服务 {allowance // _MINUTE} 分钟, 可提前签退 (QP 000:32)")
        ids += [e.id for e in extended]
    if verdict in NEEDS_PROOF:
        evidence = ctx.of_kind(ExceptionKind.EVIDENCE)
        notes += [f"{EXCUSED_NOTE}: {e.reason}" if e.reason else EXCUSED_NOTE for e in evidence]
        ids += [e.id for e in evidence]
    day = _staff_day(ctx, verdict, reason, punches=punches, ids=ids, notes=notes)
    untrusted = any(not p.trusted for p in tally.chosen)
    present = tuple(_presence(ctx, tally))
    return replace(day, late_min=tally.late_min, early_min=tally.early_min, untrusted=untrusted, present=present)


def _window(ctx: _Ctx, sessions: list[Interval]) -> Interval:
    """Where the day's punches are looked for: the calendar day, unless the site narrows it."""
    before, after = ctx.policy.in_window_min, ctx.policy.out_window_min
    lo = ctx.span[0] if before is None else max(ctx.span[0], sessions[0][0] - timedelta(minutes=before))
    hi = ctx.span[1] if after is None else min(ctx.span[1], sessions[-1][1] + timedelta(minutes=after))
    return lo, hi


def _judged(ctx: _Ctx, sessions: list[Interval], covering: list[Exception_], allowance: timedelta) -> _Tally:
    kept, _, _ = _cover(sessions, covering)
    lo, hi = _window(ctx, sessions)
    tally = _judge(ctx, _units(kept, ctx.policy, lo, hi), allowance)
    tally.pieces = [piece for pieces in kept for piece in pieces]
    return tally


def _cover(
    sessions: list[Interval], exceptions: list[Exception_]
) -> tuple[list[list[Interval]], dict[ExceptionKind, timedelta], list[Exception_]]:
    """Per session, the pieces no exception covers; the time each kind covered; the exceptions that covered any."""
    kept = [[s] for s in sessions]
    covered: dict[ExceptionKind, timedelta] = {}
    applied: list[Exception_] = []
    for kind in _COVERING:
        for e in (e for e in exceptions if e.kind == kind):
            before = _length(kept)
            kept = [_subtract(pieces, (e.start, e.end)) for pieces in kept]
            gone = before - _length(kept)
            if gone > timedelta():
                covered[kind] = covered.get(kind, timedelta()) + gone
                applied.append(e)
    return kept, covered, applied


def _subtract(pieces: list[Interval], cut: Interval) -> list[Interval]:
    out: list[Interval] = []
    for s, e in pieces:
        if cut[1] <= s or cut[0] >= e:
            out.append((s, e))
            continue
        if s < cut[0]:
            out.append((s, cut[0]))
        if cut[1] < e:
            out.append((cut[1], e))
    return out


def _length(kept: list[list[Interval]]) -> timedelta:
    return sum((e - s for pieces in kept for s, e in pieces), timedelta())


def _leave_note(
    ctx: _Ctx, sessions: list[Interval], covered: dict[ExceptionKind, timedelta], applied: list[Exception_]
) -> list[str]:
    """ "请假 0.5 天 (...)": leave in half days, at least 0.5 when any; ``leave_days`` reads it back."""
    taken = covered.get(ExceptionKind.LEAVE)
    if not taken:
        return []
    share = taken / _length([[s] for s in sessions])
    days = 1.0 if share >= 1 else max(0.5, min(1.0, round(share * 2) / 2))
    spans = ", ".join(
        f"{ctx.hm(e.start)}-{ctx.hm(e.end)}" + (f" {e.reason}" if e.reason else "")
        for e in applied
        if e.kind == ExceptionKind.LEAVE
    )
    return [f"请假 {days:g} 天 ({spans})"]


def _extended(ctx: _Ctx) -> tuple[timedelta, list[Exception_]]:
    """Extended lunch service: sign out earlier by its minutes (its length when minutes is not given)."""
    extended = ctx.of_kind(ExceptionKind.EXTENDED_SERVICE)
    minutes = [e.minutes or math.ceil((e.end - e.start) / _MINUTE) for e in extended]
    return timedelta(minutes=max(minutes, default=0)), extended


# -- punches against units --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    start: datetime  # sign in by
    end: datetime  # sign out from
    lo: datetime  # the unit's punch window
    hi: datetime

    @property
    def mid(self) -> datetime:
        return self.start + (self.end - self.start) / 2


@dataclass(frozen=True)
class _Mark:
    """What one unit's punches were: its sign-in and sign-out (None: missing or not yet made)."""

    unit: _Unit
    sign_in: Punch | None
    sign_out: Punch | None


@dataclass
class _Tally:
    parts: list[str] = field(default_factory=list)
    marks: list[_Mark] = field(default_factory=list)
    pieces: list[Interval] = field(default_factory=list)  # the session time no exception covers
    pending_in: bool = False  # a sign-in that may still come (the day is running)
    pending_out: bool = False  # a sign-out that may still come
    notes: list[str] = field(default_factory=list)
    chosen: list[Punch] = field(default_factory=list)
    late_min: int = 0
    early_min: int = 0
    late: bool = False
    early: bool = False
    missing_in: bool = False
    missing_out: bool = False
    absent: bool = False
    faulted: bool = False


def _units(kept: list[list[Interval]], policy: PunchPolicy, lo: datetime, hi: datetime) -> list[_Unit]:
    if policy.punches_per_day == 2:
        flat = [piece for pieces in kept for piece in pieces]
        pairs = [(flat[0][0], flat[-1][1])] if flat else []
    else:
        pairs = [(pieces[0][0], pieces[-1][1]) for pieces in kept if pieces]
    units: list[_Unit] = []
    for i, (s, e) in enumerate(pairs):
        u_lo = lo if i == 0 else pairs[i - 1][1] + (s - pairs[i - 1][1]) / 2
        u_hi = hi if i == len(pairs) - 1 else e + (pairs[i + 1][0] - e) / 2
        units.append(_Unit(s, e, u_lo, u_hi))
    return units


def _judge(ctx: _Ctx, units: list[_Unit], allowance: timedelta) -> _Tally:
    tally = _Tally()
    for i, unit in enumerate(units):
        ins = ctx.within(unit.lo, unit.mid)
        outs = ctx.within(unit.mid, unit.hi)
        out_due = unit.end - allowance if i == len(units) - 1 else unit.end
        mark = _Mark(unit, ins[0] if ins else None, outs[-1] if outs else None)
        _sign_in(ctx, tally, unit, mark.sign_in)
        _sign_out(ctx, tally, unit, out_due, mark.sign_out)
        tally.marks.append(mark)
    return tally


def _sign_in(ctx: _Ctx, tally: _Tally, unit: _Unit, punch: Punch | None) -> None:
    due = unit.start
    if punch is None and ctx.running(unit.mid):
        tally.pending_in = True
        tally.parts.append(f"尚未签到 (应于 {ctx.hm(due)} 前)")
        return
    if punch is None:
        reach = timedelta(minutes=ctx.policy.fault_reach_min)
        _missing(ctx, tally, "签到", f"应于 {ctx.hm(due)} 前", _fault(ctx, due - reach, unit.mid), out=False)
        return
    tally.chosen.append(punch)
    _note_untrusted(ctx, tally, punch)
    late = _minutes_after(punch.at, due, ctx.policy)
    if late <= ctx.policy.grace_min:
        tally.parts.append(f"{ctx.hm(punch.at)} 签到")
        return
    tally.late, tally.late_min = True, tally.late_min + late
    text = f"{ctx.hm(punch.at)} 签到, 晚于 {ctx.hm(due)} (迟到 {late} 分钟)"
    limit = ctx.policy.absent_after_min
    if limit is not None and late >= limit:
        tally.absent = True
        text += f", 超过 {limit} 分钟按旷工处理"
    tally.parts.append(text)


def _sign_out(ctx: _Ctx, tally: _Tally, unit: _Unit, due: datetime, punch: Punch | None) -> None:
    # Pending while it can still come, unless nobody was seen by the end of the day's work (then absent).
    if punch is None and ctx.running(unit.hi) and (tally.chosen or ctx.running(unit.end)):
        tally.pending_out = True
        tally.parts.append(f"待签退 (应于 {ctx.hm(due)} 后)")
        return
    if punch is None:
        reach = timedelta(minutes=ctx.policy.fault_reach_min)
        _missing(ctx, tally, "签退", f"应于 {ctx.hm(due)} 后", _fault(ctx, unit.mid, unit.end + reach), out=True)
        return
    tally.chosen.append(punch)
    _note_untrusted(ctx, tally, punch)
    early = _minutes_before(punch.at, due)
    if early <= ctx.policy.grace_min:
        tally.parts.append(f"{ctx.hm(punch.at)} 签退")
        return
    tally.early, tally.early_min = True, tally.early_min + early
    tally.parts.append(f"{ctx.hm(punch.at)} 签退, 早于 {ctx.hm(due)} (早退 {early} 分钟)")


def _missing(ctx: _Ctx, tally: _Tally, what: str, when: str, fault: FaultWindow | None, *, out: bool) -> None:
    if fault is None:
        tally.parts.append(f"未{what} ({when})")
        if out:
            tally.missing_out = True
        else:
            tally.missing_in = True
        return
    tally.faulted = True
    span = f"{ctx.hm(fault.start)}-{ctx.hm(fault.end)}"
    tally.parts.append(f"未{what}: 考勤机 {fault.device} {span} 故障 ({fault.reason}), 应及时上报 (SJ 001:1040)")


def _fault(ctx: _Ctx, lo: datetime, hi: datetime) -> FaultWindow | None:
    return next((f for f in sorted(ctx.faults, key=lambda f: f.start) if f.start < hi and f.end > lo), None)


def _note_untrusted(ctx: _Ctx, tally: _Tally, punch: Punch) -> None:
    if not punch.trusted:
        tally.notes.append(f"{ctx.hm(punch.at)} 的打卡来自时钟未同步的终端 {punch.device}, 时间按中心接收时间")


def _verdict(t: _Tally) -> Verdict:
    if t.absent or (t.missing_in and t.missing_out and not t.chosen):
        return Verdict.ABSENT
    if t.missing_in:
        return Verdict.MISSING_IN
    if t.missing_out:
        return Verdict.MISSING_OUT
    if t.late and t.early:
        return Verdict.LATE_AND_EARLY
    if t.late:
        return Verdict.LATE
    if t.early:
        return Verdict.EARLY
    return Verdict.DEVICE_FAULT if t.faulted else Verdict.ON_TIME


def _minutes_after(t: datetime, due: datetime, policy: PunchPolicy) -> int:
    """Minutes a sign-in at ``t`` is late for ``due`` (0 or less: on time). ``minute``: whole minutes as the terminal
    shows them (08:30:59 is 08:30, on time); ``second``: any part of a minute counts (08:30:01 is a minute late)."""
    if policy.minute_rounding == "second":
        return -((due - t) // _MINUTE)  # ceiling
    return (t - due) // _MINUTE


def _minutes_before(t: datetime, due: datetime) -> int:
    """Minutes a sign-out at ``t`` is early for ``due`` (0 or less: not early): 16:59:59 shows 16:59, a minute early,
    and is a second early, also a minute once rounded up; so both roundings agree on sign-outs."""
    return -((t - due) // _MINUTE)


def _provisional(ctx: _Ctx, t: _Tally, verdict: Verdict) -> Verdict:
    """The verdict while the day runs (rule 8): nothing is missing while it may still come."""
    if not (t.pending_in or t.pending_out) or not t.marks:
        return verdict
    if not t.chosen and not t.faulted:  # nobody seen, no terminal down to explain it, while the day's work runs
        return Verdict.NOT_ARRIVED  # (once it is over, _sign_out made it absent)
    last_end = t.marks[-1].unit.end
    if verdict not in (Verdict.ON_TIME, Verdict.LATE, Verdict.DEVICE_FAULT):
        return verdict  # something final is known already (a missing sign-in, an early sign-out)
    return Verdict.ON_DUTY if ctx.running(last_end) else Verdict.AWAITING_OUT


def _presence(ctx: _Ctx, t: _Tally) -> list[Interval]:
    """When the person was at the post: per unit from arrival to departure, within the uncovered session time."""
    reach = timedelta(minutes=ctx.policy.fault_reach_min)
    spans: list[Interval] = []
    for m in t.marks:
        u = m.unit
        seen = ctx.within(u.lo, u.hi)
        if m.sign_in is not None:
            arrive = m.sign_in.at
        elif _fault(ctx, u.start - reach, u.mid) is not None:
            arrive = u.start  # the terminal was down: they came, as they report in person (SJ 001:1040)
        elif seen:
            arrive = seen[0].at  # no sign-in: there from the first punch we have
        else:
            continue
        # A lone punch after the middle while the unit runs is an arrival (too late to sign in), not a departure.
        arrived_late = m.sign_in is None and len(seen) == 1 and ctx.running(u.end)
        if m.sign_out is not None and not arrived_late:
            leave = m.sign_out.at
        elif ctx.running(u.hi):
            leave = ctx.now or u.end  # seen and not signed out while the day runs: still there
        elif _fault(ctx, u.mid, u.end + reach) is not None:
            leave = u.end
        else:
            leave = seen[-1].at if seen else arrive  # no sign-out: nothing after the last punch is known
        spans += _clip((arrive, leave), t.pieces)
    return _until_now(ctx, spans)


def _clip(span: Interval, pieces: list[Interval]) -> list[Interval]:
    return [(max(span[0], s), min(span[1], e)) for s, e in pieces if max(span[0], s) < min(span[1], e)]


def _until_now(ctx: _Ctx, spans: list[Interval]) -> list[Interval]:
    """Presence is what happened: nothing after the judging time."""
    if ctx.now is None:
        return _merge(spans)
    now = ctx.now
    return _merge([(s, min(e, now)) for s, e in spans if s < now])


def _staff_day(
    ctx: _Ctx,
    verdict: Verdict,
    reason: str,
    *,
    punches: tuple[Punch, ...] = (),
    ids: Sequence[str] = (),
    notes: Sequence[str] = (),
) -> StaffDay:
    return StaffDay(
        staff_id=ctx.staff_id,
        day=ctx.day,
        verdict=verdict,
        reason=reason,
        punches=punches,
        exceptions=tuple(ids),
        notes=(*ctx.notes, *notes),
    )
