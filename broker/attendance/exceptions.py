"""Exceptions filed for staff-days (leave, evidence for a missed punch, meetings ...) and the correction deadline.

QP: the window leader registers leave, meetings, training and special cases within 2 working days
(000:34); leave not registered beforehand is explained with proof 「在上班后两个工作日内」 (000:40): the two
working days run from the day the person is back at work, not from the first day away. After that the record
is locked as 非正常考勤 (000:43). So each exception records whether it was filed after its deadline (``late``: a
late filing leaves the day abnormal): the close of the ``correction_working_days``-th working day after the
first day, on or after the exception's first day, on which the person punched (for a day they worked, that day;
for days away, their return). While they have not come back, no filing is late. ``locking.py`` freezes the days
by the same rule. Nothing is ever deleted: a withdrawal is a timestamp and an audit entry.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.attendance.model import Exception_, ExceptionKind
from broker.attendance.roster import staff_member
from broker.audit import chain
from broker.audit.sources import EXCEPTION, WITHDRAWAL
from broker.calendar import CalendarError, SiteCalendar
from broker.sites import Sites
from broker.store.commands import audit
from broker.store.db import Store
from broker.store.schema import attendance_exceptions, attendance_locks, events
from protocol.ids import uuid7

DEFAULT_CORRECTION_DAYS = 2  # QP 000:34, 000:40
_HORIZON_DAYS = 400
PUNCH = "attendance.punch"


def correction_days(sites: Sites, site: str) -> int:
    """The site's correction window in working days (its attendance policy, else QP's 2)."""
    policy = getattr(sites[site], "attendance", None)
    return int(getattr(policy, "correction_working_days", DEFAULT_CORRECTION_DAYS))


def correction_deadline(cal: SiteCalendar, day: date, working_days: int) -> datetime:
    """The close of the ``working_days``-th working day after ``day`` (0: of ``day`` itself, or of the next
    working day when ``day`` is not one), in the site zone. Weekends and statutory holidays do not count;
    adjusted working days (调休上班) do."""
    if working_days < 0:
        raise ValueError(f"working_days must be >= 0, got {working_days}")
    counted = 0
    current = day if working_days == 0 else day + timedelta(days=1)
    for _ in range(_HORIZON_DAYS):
        sessions = cal.sessions_on(current)
        if sessions:
            counted += 1
            if counted >= max(working_days, 1):
                return sessions[-1][1]
        current += timedelta(days=1)
    raise CalendarError(f"no {working_days} working days within {_HORIZON_DAYS} days after {day}; check the calendar")


def deadline_for(sites: Sites, site: str, start: datetime, returned: date | None = None) -> datetime:
    """The correction deadline of an exception starting at ``start``: counted from ``returned``, the day the person
    was back at work (QP 000:40), else from the site-local day ``start`` falls on."""
    cal = sites[site].site_calendar
    day = returned if returned is not None else start.astimezone(cal.zone).date()
    return correction_deadline(cal, day, correction_days(sites, site))


async def back_at_work(
    conn: AsyncConnection, site: str, staff_id: str, since: datetime, until: datetime, zone: tzinfo
) -> date | None:
    """The site-local day of ``staff_id``'s first punch from the day of ``since`` to ``until``: the day they were at
    work, or came back after days away (QP 000:40 上班后); None while they have not punched since."""
    day_start = datetime.combine(since.astimezone(zone).date(), time(), tzinfo=zone)
    c = events.c
    q = sa.select(c.ts, c.data).where(
        c.type == PUNCH,
        c.site == site,
        c.ts >= day_start,  # through the (type, ts) index; a punch from an unsynchronised clock is not a return
        c.ts <= until,
        c.clock_synced == sa.true(),
        c.data.contains(staff_id, autoescape=True),  # a cheap filter; the exact match below
    )
    seen = [r.ts for r in (await conn.execute(q)).all() if _staff_of(r.data) == staff_id]
    return min(seen).astimezone(zone).date() if seen else None


def _staff_of(data: str) -> str | None:
    try:
        return str(json.loads(data)["staff_id"])
    except (ValueError, KeyError, TypeError):
        return None


async def file_exception(
    store: Store,
    sites: Sites,
    site: str,
    staff_id: str,
    kind: ExceptionKind | str,
    start: datetime,
    end: datetime,
    *,
    by: str,
    at: datetime,
    reason: str,
    minutes: int = 0,
) -> Exception_:
    """Register an exception for [start, end). Filing in advance is on time; filing after the correction
    deadline of start's day is stored with ``late`` set (it is kept, but does not excuse the day)."""
    kind = _kind(kind)
    _check(start, end, reason, kind, minutes)
    zone = sites[site].site_calendar.zone
    async with store.engine.begin() as conn:
        await _check_staff(conn, site, staff_id, start, end, zone)
        # Filed in advance: on time. Afterwards: the deadline runs from their return; none yet, none runs.
        returned = await back_at_work(conn, site, staff_id, start, at, zone) if at > start else None
        due = deadline_for(sites, site, start, returned) if at <= start or returned is not None else None
        late = due is not None and at > due
        text = reason.strip()[:500]
        exc = replace(Exception_(uuid7(), staff_id, kind, start, end, at, by[:64], text, minutes, True, late), due=due)
        filed = attendance_exceptions.insert().values(site=site, **_values(exc))
        filed = filed.returning(*EXCEPTION.cols(EXCEPTION.columns))
        await chain.append(conn, EXCEPTION, (await conn.execute(filed)).mappings().all())
        await audit(conn, at=at, actor=by, action="attendance.exception.file", target=f"{site}/{staff_id}",
                    reason=exc.reason, detail={"id": exc.id, "kind": kind.value, "start": start, "end": end,
                                               "minutes": minutes, "late": late, "due": due})  # fmt: skip
    return exc


def _kind(kind: ExceptionKind | str) -> ExceptionKind:
    try:
        return ExceptionKind(kind)
    except ValueError:
        choices = "、".join(k.value for k in ExceptionKind)
        raise ValueError(f"未知的例外类型 {kind!r}, 应为 {choices} 之一") from None


def _check(start: datetime, end: datetime, reason: str, kind: ExceptionKind, minutes: int) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise ValueError("开始和结束时间须带时区")
    if end <= start:
        raise ValueError(f"结束时间 {end.isoformat()} 不晚于开始时间 {start.isoformat()}")
    if not reason.strip():
        raise ValueError("请填写事由 (如会议通知、病历等证明的说明)")
    if minutes < 0:
        raise ValueError(f"分钟数不能为负: {minutes}")
    if kind is ExceptionKind.EXTENDED_SERVICE and minutes <= 0:
        raise ValueError("午间延时服务须填写可提前签退的分钟数 (--minutes)")


async def _check_staff(
    conn: AsyncConnection, site: str, staff_id: str, start: datetime, end: datetime, zone: tzinfo
) -> None:
    member = await staff_member(conn, site, staff_id)
    if member is None:
        raise ValueError(f"{site} 没有工号为 {staff_id} 的人员; 请先导入花名册 (hallfleet staff import)")
    first = start.astimezone(zone).date()
    last = (end - timedelta(microseconds=1)).astimezone(zone).date()
    if member.start_date > last or (member.end_date is not None and member.end_date < first):
        until = member.end_date.isoformat() if member.end_date else "至今"
        raise ValueError(f"{staff_id} 在 {site} 的在岗期间为 {member.start_date} 至 {until}, 不含 {first} 至 {last}")


def _values(exc: Exception_) -> dict[str, Any]:
    return {
        "id": exc.id,
        "staff_id": exc.staff_id,
        "kind": exc.kind.value,
        "start": exc.start,
        "end": exc.end,
        "minutes": exc.minutes,
        "filed_at": exc.filed_at,
        "filed_by": exc.filed_by,
        "reason": exc.reason,
        "approved": exc.approved,
        "late": exc.late,
    }


async def withdraw_exception(store: Store, exception_id: str, *, by: str, at: datetime, reason: str = "") -> None:
    """Withdraw a filing (a correction): it stops counting from now on; the row and the audit trail stay."""
    e = attendance_exceptions.c
    async with store.engine.begin() as conn:
        row = (await conn.execute(sa.select(e.site, e.staff_id, e.withdrawn_at).where(e.id == exception_id))).first()
        if row is None:
            raise ValueError(f"没有编号为 {exception_id} 的考勤例外")
        withdraw = attendance_exceptions.update().where(e.id == exception_id, e.withdrawn_at.is_(None))
        done = await conn.execute(withdraw.values(withdrawn_at=at).returning(*WITHDRAWAL.cols(WITHDRAWAL.columns)))
        withdrawn = done.mappings().all()
        if len(withdrawn) != 1:
            raise ValueError(f"考勤例外 {exception_id} 已撤销过")
        await chain.append(conn, WITHDRAWAL, withdrawn)
        await audit(conn, at=at, actor=by, action="attendance.exception.withdraw",
                    target=f"{row.site}/{row.staff_id}", reason=reason, detail={"id": exception_id})  # fmt: skip


# -- reads ---------------------------------------------------------------------------------------------
async def exceptions_for(
    conn: AsyncConnection, site: str, first: date, last: date, *, zone: tzinfo | None = None
) -> dict[str, list[Exception_]]:
    """Exceptions in force (not withdrawn) overlapping the days [first, last], by staff id, in start order.
    Days are taken in ``zone``; without it the span is widened by a day each side (any zone fits), so
    the caller still decides per day."""
    lo, hi = _span(first, last, zone)
    e = attendance_exceptions.c
    q = (
        sa.select(attendance_exceptions)
        .where(e.site == site, e.withdrawn_at.is_(None), e.start < hi, e.end > lo)
        .order_by(e.staff_id, e.start, e.id)
    )
    out: dict[str, list[Exception_]] = {}
    for r in (await conn.execute(q)).all():
        out.setdefault(r.staff_id, []).append(_exception(r))
    return out


def _exception(r: Any) -> Exception_:
    return Exception_(
        id=r.id,
        staff_id=r.staff_id,
        kind=ExceptionKind(r.kind),
        start=r.start,
        end=r.end,
        filed_at=r.filed_at,
        filed_by=r.filed_by,
        reason=r.reason,
        minutes=r.minutes,
        approved=r.approved,
        late=r.late,
    )


def _span(first: date, last: date, zone: tzinfo | None) -> tuple[datetime, datetime]:
    if zone is None:
        return (
            datetime.combine(first - timedelta(days=1), time(), tzinfo=UTC),
            datetime.combine(last + timedelta(days=2), time(), tzinfo=UTC),
        )
    return datetime.combine(first, time(), tzinfo=zone), datetime.combine(last + timedelta(days=1), time(), tzinfo=zone)


async def locks_for(
    conn: AsyncConnection, site: str, first: date, last: date
) -> dict[tuple[str, date], tuple[str, str]]:
    """Locked abnormal records: (staff id, day) -> (verdict, reason) that stand."""
    k = attendance_locks.c
    q = sa.select(k.staff_id, k.day, k.verdict, k.reason).where(k.site == site, k.day >= first, k.day <= last)
    return {(r.staff_id, r.day): (r.verdict, r.reason) for r in (await conn.execute(q)).all()}
