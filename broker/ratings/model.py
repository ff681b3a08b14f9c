"""Ratings and pad states as the centre reads them from the ``events`` table.

Which time a rating counts at: the pad's clock when it was synchronised, else the centre's receive time (as for
punches, broker/attendance/service.py). Reads go through the (type, ts) index; the job's incremental reads also
filter on the receive time, so a rating is seen once it arrives, however late (within ``LATE``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.schema import events
from protocol.events import RatingPadState, RatingSubmitted

log = logging.getLogger(__name__)

RATING = "rating.submitted"
PAD_STATE = "rating.pad_state"
LEVEL_ZH = {5: "非常满意", 4: "满意", 3: "基本满意", 2: "不满意", 1: "非常不满意"}
PAD_STATE_ZH = {
    "idle": "空闲",
    "serving": "办理中",
    "awaiting": "待评价",
    "paused": "暂停服务",
    "please_wait": "请稍后",
    "offline": "离线",
}
# QP 000:99: a staff member away from the post shows 暂停服务 or 请稍后 on the evaluator.
PAUSED = frozenset({"paused", "please_wait"})
# A pad's device clock may lag its delivery by this much (an outbox emptied after an outage) and the incremental
# reads still find the event; a pad offline longer, or with an unsynchronised clock further off, is found only by
# the reports, which read whole months.
LATE = timedelta(days=3)
MARGIN = timedelta(days=1)  # month reads widen the device-clock window by this much (see attendance MARGIN)


@dataclass(frozen=True, slots=True)
class Rating:
    event_id: str
    site: str
    device: str
    window: str
    staff_id: str
    service_id: str | None
    level: int
    at: datetime  # the time it counts at
    received_at: datetime
    clock_synced: bool
    delay_s: float | None
    pad_state: str
    since_staff_key_s: float | None

    @property
    def key(self) -> tuple[str, str]:
        return self.site, self.device


@dataclass(frozen=True, slots=True)
class PadState:
    event_id: str
    site: str
    device: str
    window: str
    state: str
    staff_id: str | None
    at: datetime

    @property
    def paused(self) -> bool:
        return self.state in PAUSED


def _columns() -> list[Any]:
    c = events.c
    return [c.site, c.device, c.id, c.ts, c.clock_synced, c.received_at, c.data]


def _time(r: Any) -> datetime:
    return r.ts if r.clock_synced else r.received_at


def _rating(r: Any) -> Rating | None:
    try:
        p = RatingSubmitted.model_validate_json(r.data)
    except ValidationError:  # the consumer validated it; an unreadable row costs one rating, loudly
        log.error("rating.submitted %s/%s/%s is unreadable and was left out", r.site, r.device, r.id)
        return None
    return Rating(
        event_id=r.id,
        site=r.site,
        device=r.device,
        window=p.window,
        staff_id=p.staff_id,
        service_id=p.service_id,
        level=int(p.level),
        at=_time(r),
        received_at=r.received_at,
        clock_synced=bool(r.clock_synced),
        delay_s=p.delay_s,
        pad_state=p.pad_state,
        since_staff_key_s=p.since_staff_key_s,
    )


def _pad_state(r: Any) -> PadState | None:
    try:
        p = RatingPadState.model_validate_json(r.data)
    except ValidationError:
        log.error("rating.pad_state %s/%s/%s is unreadable and was left out", r.site, r.device, r.id)
        return None
    return PadState(r.id, r.site, r.device, p.window, p.state, p.staff_id, _time(r))


def _unique(rows: Iterable[Any]) -> list[Any]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for r in rows:
        if (r.site, r.device, r.id) not in seen:
            seen.add((r.site, r.device, r.id))
            out.append(r)
    return out


def ratings_of(rows: Iterable[Any]) -> list[Rating]:
    """Parsed, unique, in time order."""
    out = [x for x in map(_rating, _unique(rows)) if x is not None]
    return sorted(out, key=lambda x: (x.at, x.event_id))


def pad_states_of(rows: Iterable[Any]) -> list[PadState]:
    out = [x for x in map(_pad_state, _unique(rows)) if x is not None]
    return sorted(out, key=lambda x: (x.at, x.event_id))


def _arrived(kind: str, since: datetime) -> sa.Select[Any]:
    c = events.c
    return sa.select(*_columns()).where(c.type == kind, c.ts >= since - LATE, c.received_at >= since)


async def ratings_arrived(conn: AsyncConnection, since: datetime) -> list[Rating]:
    """Ratings received since ``since`` (their pad clock at most ``LATE`` behind), every site."""
    return ratings_of((await conn.execute(_arrived(RATING, since))).all())


async def pad_states_arrived(conn: AsyncConnection, since: datetime) -> list[PadState]:
    return pad_states_of((await conn.execute(_arrived(PAD_STATE, since))).all())


async def ratings_near(conn: AsyncConnection, start: datetime, end: datetime) -> list[Rating]:
    """Ratings of every site whose pad clock says ``[start, end]``: the neighbours a burst is judged among. (A pad
    with an unsynchronised clock has its bursts judged among the ratings that arrive together.)"""
    c = events.c
    q = sa.select(*_columns()).where(c.type == RATING, c.ts >= start, c.ts <= end)
    return [x for x in ratings_of((await conn.execute(q)).all()) if start <= x.at <= end]


async def ratings_between(conn: AsyncConnection, site: str, start: datetime, end: datetime) -> list[Rating]:
    """The site's ratings counted in ``[start, end)``: by the pad clock through the (type, ts) index, plus those of
    unsynchronised clocks by their receive time (a pad with a dead clock battery stamps 1970)."""
    c = events.c
    by_ts = sa.select(*_columns()).where(c.type == RATING, c.ts >= start - MARGIN, c.ts < end + MARGIN, c.site == site)
    by_receipt = sa.select(*_columns()).where(
        c.type == RATING,
        c.site == site,
        c.clock_synced == sa.false(),
        c.received_at >= start,
        c.received_at < end,
        sa.or_(c.ts < start - MARGIN, c.ts >= end + MARGIN),
    )
    rows = [*(await conn.execute(by_ts)).all(), *(await conn.execute(by_receipt)).all()]
    return [x for x in ratings_of(rows) if start <= x.at < end]
