"""Ticket steps from the ``queue.*`` events into ``queue_steps`` (each step once) and ``queue_waits`` (each
ticket's legs, rebuilt from all its steps: rule.py).

The rule: the tables are a function of the stored events. A step is keyed by (site, day, ticket, step, time), so
the same step reported by two devices or re-sent by one after a crash is one row; a ticket's legs are rebuilt
from every step it has, so steps arriving out of order (a display back from an outage after the dispenser)
give the same legs as in order. Several consumers may fold the same events: both write the same rows.

A ticket's day is the site-local day of the step (queue systems number tickets from 1 every morning).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.queueing.policy import queue_policy_of
from broker.queueing.rule import Leg, Step, StepKind, legs_of
from broker.sites import Sites
from broker.store.db import _insert_ignore
from broker.store.schema import events, queue_steps, queue_waits
from protocol.queueing import QUEUE_EVENTS

LATE = timedelta(days=2)  # an agent may send a step this long after its own clock's stamp (an outage)
_DETAIL = {"issued": "channel", "transferred": "to_service", "abandoned": "reason"}
TicketKey = tuple[str, date, str]  # site, day, ticket


def step_of(event_type: str, data: dict[str, Any]) -> Step:
    kind = event_type.removeprefix("queue.ticket_")
    detail = data.get(_DETAIL.get(kind, ""))
    if kind == "called" and data.get("recall"):
        detail = "recall"
    return Step(data["ticket"], cast(StepKind, kind), datetime.fromisoformat(data["at"]), data["service"],
                data.get("window"), detail)  # fmt: skip


async def fold_arrived(conn: AsyncConnection, sites: Sites, since: datetime) -> set[TicketKey]:
    """Fold the queue events received since ``since``; returns the tickets whose legs were rebuilt."""
    c = events.c
    rows = (
        await conn.execute(
            sa.select(c.site, c.id, c.type, c.data).where(
                c.type.in_(list(QUEUE_EVENTS)), c.ts >= since - LATE, c.received_at >= since
            )
        )
    ).all()
    touched: set[TicketKey] = set()
    for r in rows:
        if not queue_policy_of(sites[r.site]).enabled:
            continue
        s = step_of(r.type, json.loads(r.data))
        day = s.at.astimezone(sites[r.site].site_calendar.zone).date()
        await conn.execute(
            _insert_ignore(conn, queue_steps).values(
                site=r.site, day=day, ticket=s.ticket, step=s.step, at=s.at, service=s.service, window=s.window,
                detail=s.detail, event_id=r.id,
            )
        )  # fmt: skip
        touched.add((r.site, day, s.ticket))
    for key in sorted(touched):
        await rebuild(conn, key)
    return touched


async def rebuild(conn: AsyncConnection, key: TicketKey) -> list[Leg]:
    site, day, ticket = key
    c = queue_steps.c
    rows = (await conn.execute(sa.select(queue_steps).where(c.site == site, c.day == day, c.ticket == ticket))).all()
    legs = legs_of(Step(r.ticket, r.step, r.at, r.service, r.window, r.detail) for r in rows)
    w = queue_waits.c
    await conn.execute(sa.delete(queue_waits).where(w.site == site, w.day == day, w.ticket == ticket))
    if legs:
        await conn.execute(sa.insert(queue_waits), [_row(site, day, leg) for leg in legs])
    return legs


def _row(site: str, day: date, leg: Leg) -> dict[str, Any]:
    return {"site": site, "day": day, "ticket": leg.ticket, "leg": leg.leg, "service": leg.service,
            "channel": leg.channel, "queued_at": leg.queued_at, "called_at": leg.called_at, "window": leg.window,
            "ended_at": leg.ended_at, "outcome": leg.outcome, "reason": leg.reason}  # fmt: skip


def leg_of(r: Any) -> Leg:
    """A ``queue_waits`` row as the rule's Leg."""
    return Leg(r.ticket, r.leg, r.service, r.queued_at, r.outcome, r.channel, r.called_at, r.window, r.ended_at,
               r.reason)  # fmt: skip


async def legs_between(conn: AsyncConnection, site: str, first: date, last: date) -> list[tuple[date, Leg]]:
    w = queue_waits.c
    q = sa.select(queue_waits).where(w.site == site, w.day >= first, w.day <= last).order_by(w.day, w.ticket, w.leg)
    return [(r.day, leg_of(r)) for r in (await conn.execute(q)).all()]


async def waiting_on(conn: AsyncConnection, site: str, day: date) -> list[Leg]:
    """Legs of ``day`` still waiting for their first call."""
    w = queue_waits.c
    q = sa.select(queue_waits).where(w.site == site, w.outcome == "waiting", w.day == day)
    return [leg_of(r) for r in (await conn.execute(q)).all()]


def windows_serving(legs: Iterable[Leg], configured: dict[str, list[str]]) -> dict[str, set[str]]:
    """Service -> the windows that call it: configured ones and those seen calling it (the day's legs)."""
    out: dict[str, set[str]] = {s: set(ws) for s, ws in configured.items()}
    for leg in legs:
        if leg.window is not None and leg.called_at is not None:
            out.setdefault(leg.service, set()).add(leg.window)
    return out
