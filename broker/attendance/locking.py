"""Locking staff-days at their correction deadline: after it an unexplained exception stands as 非正常考勤.

QP 000:34 and 000:43: two working days to register or explain, then the record is final. For a day the person
worked, the two days run from that day; for a day they were away without a word (旷工 so far), from the day they
are back at work (QP 000:40 「上班后两个工作日内」), so a week of sick leave explained on time after it is never
locked as absence while the person is still at home. A day whose absent person has not been back long enough
stays open (and is looked at again on the next run); every other due day is marked final.

Only days the system judged can be locked: nothing before the site's go-live date or a person's roster start
(``service.load_period`` gives them no verdict), and no fixed look-back, so a roster imported late, or a
consumer that was down for months, writes no absences into months nobody could punch in.
Safe to run concurrently and repeatedly: every row is insert-ignored.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from broker.attendance.exceptions import correction_days, correction_deadline
from broker.attendance.model import NEEDS_PROOF, StaffDay, Verdict
from broker.attendance.service import go_live
from broker.attendance.verdicts import is_excused, is_present
from broker.audit import chain
from broker.audit.sources import LOCK, LOCKED_DAY
from broker.calendar import SiteCalendar
from broker.sites import Sites
from broker.store.commands import audit
from broker.store.db import Store, _insert_ignore
from broker.store.schema import attendance_locked_days, attendance_locks, staff

Compute = Callable[[str, date, date], Awaitable[list[StaffDay]]]


async def lock_due(store: Store, sites: Sites, now: datetime, compute: Compute) -> int:
    """Lock every judged day (of every site with staff) whose correction deadline has passed and that is not final
    yet: ``compute(site, first, last)`` judges the days, each unexcused abnormal verdict becomes a lock row
    (非正常考勤), and the day is marked final. Returns the lock rows this call added."""
    async with store.engine.connect() as conn:
        names = (await conn.execute(sa.select(staff.c.site).distinct().order_by(staff.c.site))).scalars().all()
    total = 0
    for site in names:
        total += await _lock_site(store, sites, site, now, compute)
    return total


async def _due_days(store: Store, sites: Sites, site: str, now: datetime) -> list[date]:
    """Days from go-live to today, not final, whose own deadline has passed (a return may push it further)."""
    cfg = sites[site]
    cal = cfg.site_calendar
    n = correction_days(sites, site)
    async with store.engine.connect() as conn:
        live = await go_live(conn, cfg, site)
        if live is None:
            return []
        d = attendance_locked_days.c
        done = set((await conn.execute(sa.select(d.day).where(d.site == site, d.day >= live))).scalars().all())
    today = now.astimezone(cal.zone).date()
    days = (live + timedelta(days=i) for i in range((today - live).days + 1))
    return [day for day in days if day not in done and correction_deadline(cal, day, n) <= now]


def _unexcused(sd: StaffDay) -> bool:
    # Not "no exceptions": half-day leave or extended service attach ids without excusing a late.
    return sd.verdict in NEEDS_PROOF and not is_excused(sd)


def awaiting_return(
    judged: Iterable[StaffDay], cal: SiteCalendar, working_days: int, now: datetime
) -> set[tuple[str, date]]:
    """(staff id, day) of absences whose deadline has not run out: the person is not back at work, or was back
    fewer than ``working_days`` working days ago (QP 000:40). ``judged`` must reach today: a person with no
    verdict after the absence has left the roster and will not come back to explain it."""
    by_staff: defaultdict[str, list[StaffDay]] = defaultdict(list)
    for sd in judged:
        by_staff[sd.staff_id].append(sd)
    out: set[tuple[str, date]] = set()
    for staff_id, days in by_staff.items():
        days.sort(key=lambda sd: sd.day)
        back: date | None = None  # the first day at work after the one being looked at, walking backwards
        for sd in reversed(days):
            if sd.verdict is Verdict.ABSENT and not sd.locked:
                later = any(x.day > sd.day for x in days)
                if later and (back is None or correction_deadline(cal, back, working_days) > now):
                    out.add((staff_id, sd.day))
            if is_present(sd):
                back = sd.day
    return out


def _lock_row(site: str, sd: StaffDay, now: datetime) -> dict[str, Any]:
    return {"site": site, "staff_id": sd.staff_id, "day": sd.day, "verdict": str(sd.verdict),
            "reason": sd.reason[:500], "locked_at": now}  # fmt: skip


async def _lock_site(store: Store, sites: Sites, site: str, now: datetime, compute: Compute) -> int:
    days = await _due_days(store, sites, site, now)
    if not days:
        return 0
    cal = sites[site].site_calendar
    today = now.astimezone(cal.zone).date()
    judged = await compute(site, days[0], today)  # through today: a return to work may come after the due days
    waiting = awaiting_return(judged, cal, correction_days(sites, site), now)
    wanted = set(days)
    rows = [
        _lock_row(site, sd, now)
        for sd in judged
        if sd.day in wanted and _unexcused(sd) and (sd.staff_id, sd.day) not in waiting
    ]
    open_days = {day for _, day in waiting}
    per_day = Counter(r["day"] for r in rows)
    async with store.engine.begin() as conn:
        added = 0
        if rows:
            stmt = _insert_ignore(conn, attendance_locks).returning(*LOCK.cols(LOCK.columns))
            # Only the rows this run inserted are chained: a lock another run made first has its link already.
            locked = (await conn.execute(stmt, rows)).mappings().all()
            await chain.append(conn, LOCK, locked)
            added = len(locked)
        marks = [{"site": site, "day": d, "locked_at": now, "locked": per_day[d]} for d in days if d not in open_days]
        if marks:
            stmt = _insert_ignore(conn, attendance_locked_days).returning(*LOCKED_DAY.cols(LOCKED_DAY.columns))
            await chain.append(conn, LOCKED_DAY, (await conn.execute(stmt, marks)).mappings().all())
        if added:
            await audit(conn, at=now, actor="rules", action="attendance.lock", target=site,
                        reason="补登期限已过, 按非正常考勤锁定",
                        detail={"first": days[0], "last": days[-1], "locked": added})  # fmt: skip
    return added
