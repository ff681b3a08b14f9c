"""Negative-rating follow-ups (差评跟踪): every negative rating opens one, once, whoever runs the job.

SJ 001:896 wants every real-name negative rating answered (回复率 100 %) and every objective one rectified (整改率
100 %), and a ledger of it (工作台账): this table is that ledger. A rating bound to a ticket or 办件 is real-name
(the citizen can be called back); one bound to nothing is anonymous, owes no reply and has no reply deadline,
but is still listed and may still be found objective.

Deadlines are closes of working days in the site calendar, counted from the later of the rating and its arrival
at the centre (a pad offline for a day does not eat the window's time to answer): the reply by the
``reply_working_days``-th (WZ 002:307 as the default), the rectification, once someone has decided the rating is
objective, by the ``rectify_working_days``-th. Each deadline missed produces one notice (``overdue``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.attendance.exceptions import correction_deadline
from broker.calendar import SiteCalendar
from broker.ratings.model import Rating
from broker.ratings.policy import RatingPolicy, policy_of
from broker.sites import Sites
from broker.store.commands import audit
from broker.store.db import Store, _insert_ignore
from broker.store.schema import rating_followups

Step = Literal["reply_overdue", "rectify_overdue"]


class FollowupError(ValueError):
    """A reply or rectification the ledger cannot take; the message says why."""


@dataclass(frozen=True, slots=True)
class Opened:
    rating: Rating
    real_name: bool
    reply_due: datetime | None


def due(cal: SiteCalendar, start: datetime, working_days: int) -> datetime:
    """The close of the ``working_days``-th working day after the site-local day of ``start`` (0: that day's close,
    or the next working day's when it is not one), in the site zone."""
    return correction_deadline(cal, start.astimezone(cal.zone).date(), working_days)


def is_negative(r: Rating, policy: RatingPolicy) -> bool:
    return r.level in policy.negative_levels


async def open_followups(conn: AsyncConnection, sites: Sites, ratings: Sequence[Rating], now: datetime) -> list[Opened]:
    """Open one follow-up per negative rating not yet followed up; returns those this call opened."""
    opened: list[Opened] = []
    for r in sorted(ratings, key=lambda r: r.event_id):  # one lock order for concurrent consumers
        cfg = sites[r.site]
        policy = policy_of(cfg)
        if not policy.enabled or not is_negative(r, policy):
            continue
        real_name = r.service_id is not None
        reply_due = due(cfg.site_calendar, max(r.at, r.received_at), policy.reply_working_days) if real_name else None
        result = await conn.execute(
            _insert_ignore(conn, rating_followups).values(
                event_id=r.event_id, site=r.site, device=r.device, window=r.window, staff_id=r.staff_id,
                service_id=r.service_id, level=r.level, rated_at=r.at, arrived_at=r.received_at,
                real_name=real_name, opened_at=now, reply_due=reply_due,
            )
        )  # fmt: skip
        if result.rowcount == 1:
            opened.append(Opened(r, real_name, reply_due))
    return opened


async def overdue(conn: AsyncConnection, now: datetime) -> list[tuple[Step, Any]]:
    """Follow-ups whose reply or rectification deadline passed undone and not yet announced; each is marked as
    announced here, so it is returned once even with several consumers."""
    c = rating_followups.c
    late_reply = sa.select(c.event_id).where(c.replied_at.is_(None), c.reply_due < now, c.reply_alerted_at.is_(None))
    late_fix = sa.select(c.event_id).where(
        c.objective.is_(True), c.rectified_at.is_(None), c.rectify_due < now, c.rectify_alerted_at.is_(None)
    )
    out: list[tuple[Step, Any]] = []
    checks: list[tuple[Step, Any, Any]] = [
        ("reply_overdue", late_reply, c.reply_alerted_at),
        ("rectify_overdue", late_fix, c.rectify_alerted_at),
    ]
    for step, query, mark in checks:
        for event_id in sorted(r.event_id for r in (await conn.execute(query)).all()):
            claimed = await conn.execute(
                rating_followups.update()
                .where(c.event_id == event_id, mark.is_(None))
                .values({mark.name: now})
                .returning(*rating_followups.c)
            )
            row = claimed.first()
            if row is not None:
                out.append((step, row))
    return out


# -- people's actions ----------------------------------------------------------------------------------
async def find_followup(conn: AsyncConnection, prefix: str) -> Any:
    """By the rating's event id or a unique prefix of it."""
    c = rating_followups.c
    q = sa.select(rating_followups).where(c.event_id.startswith(prefix, autoescape=True)).limit(2)
    rows = (await conn.execute(q)).all()
    if not rows:
        raise FollowupError(f"no negative-rating follow-up {prefix!r} (hallfleet ratings followup list shows them)")
    if len(rows) > 1:
        raise FollowupError(f"{prefix!r} matches several follow-ups: give more of the id")
    return rows[0]


async def reply(
    store: Store, sites: Sites, event: str, text: str, *, by: str, at: datetime, objective: bool | None = None
) -> Any:
    """Record the reply to the citizen (once); ``objective`` also records whether the rating is objective."""
    if not text.strip():
        raise FollowupError("a reply needs its content (--text): what the citizen was told")
    c = rating_followups.c
    async with store.engine.begin() as conn:
        row = await find_followup(conn, event)
        if row.replied_at is not None:
            raise FollowupError(f"{row.event_id} was answered already ({row.replied_by}, {row.replied_at:%Y-%m-%d})")
        await conn.execute(
            rating_followups.update()
            .where(c.event_id == row.event_id)
            .values(replied_at=at, replied_by=by[:64], reply_text=text)
        )
        on_time = row.reply_due is None or at <= row.reply_due
        await audit(conn, at=at, actor=by, action="rating.reply", target=f"{row.site}/{row.device}",
                    detail={"event": row.event_id, "on_time": on_time})  # fmt: skip
        if objective is not None:
            await _classify(conn, sites, row, objective, by=by, at=at)
        return await find_followup(conn, row.event_id)


async def classify(store: Store, sites: Sites, event: str, objective: bool, *, by: str, at: datetime) -> Any:
    """Decide whether the rating is objective (客观差评, to be rectified) or not; may be changed until rectified."""
    async with store.engine.begin() as conn:
        row = await find_followup(conn, event)
        await _classify(conn, sites, row, objective, by=by, at=at)
        return await find_followup(conn, row.event_id)


async def _classify(conn: AsyncConnection, sites: Sites, row: Any, objective: bool, *, by: str, at: datetime) -> None:
    if row.rectified_at is not None:
        raise FollowupError(f"{row.event_id} was rectified already: it stays objective")
    rectify_due = None
    if objective:
        cfg = sites[row.site]
        rectify_due = due(cfg.site_calendar, max(row.rated_at, row.arrived_at), policy_of(cfg).rectify_working_days)
    c = rating_followups.c
    await conn.execute(
        rating_followups.update()
        .where(c.event_id == row.event_id)
        .values(objective=objective, rectify_due=rectify_due, rectify_alerted_at=None)
    )
    await audit(conn, at=at, actor=by, action="rating.classify", target=f"{row.site}/{row.device}",
                detail={"event": row.event_id, "objective": objective})  # fmt: skip


async def rectify(store: Store, sites: Sites, event: str, text: str, *, by: str, at: datetime) -> Any:
    """Record the rectification (once). Rectifying a rating nobody classified makes it objective."""
    if not text.strip():
        raise FollowupError("a rectification needs its content (--text): what was changed")
    c = rating_followups.c
    async with store.engine.begin() as conn:
        row = await find_followup(conn, event)
        if row.objective is False:
            raise FollowupError(
                f"{row.event_id} was judged not objective: nothing to rectify (classify it objective first)"
            )
        if row.rectified_at is not None:
            raise FollowupError(f"{row.event_id} was rectified already ({row.rectified_by})")
        if row.objective is None:
            await _classify(conn, sites, row, True, by=by, at=at)
        await conn.execute(
            rating_followups.update()
            .where(c.event_id == row.event_id)
            .values(rectified_at=at, rectified_by=by[:64], rectify_text=text)
        )
        row = await find_followup(conn, row.event_id)
        await audit(conn, at=at, actor=by, action="rating.rectify", target=f"{row.site}/{row.device}",
                    detail={"event": row.event_id, "on_time": at <= row.rectify_due})  # fmt: skip
        return row


async def followups(
    conn: AsyncConnection, site: str | None = None, *, start: datetime | None = None, end: datetime | None = None,
    open_only: bool = False,
) -> list[Any]:  # fmt: skip
    """Follow-up rows by rating time; ``open_only``: still owing a reply, a decision on whether it is objective, or
    a rectification."""
    c = rating_followups.c
    q = sa.select(rating_followups).order_by(c.rated_at, c.event_id)
    if site is not None:
        q = q.where(c.site == site)
    if start is not None:
        q = q.where(c.rated_at >= start)
    if end is not None:
        q = q.where(c.rated_at < end)
    if open_only:
        owes_reply = c.real_name.is_(True) & c.replied_at.is_(None)
        owes_fix = c.objective.is_(True) & c.rectified_at.is_(None)
        q = q.where(owes_reply | c.objective.is_(None) | owes_fix)
    return list((await conn.execute(q)).all())
