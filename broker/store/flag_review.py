"""Flags raised for a person to review (proxy ratings, proxy clocking): recorded once, found by an event-id prefix,
judged with one verdict for all of an event's patterns.

The rule: a flag is inserted at most once per (event, pattern), so a reviewed flag is never raised again, and a
review replaces the previous verdict on every row of the event while the audit log keeps both. Each kind of flag
names its table, its words and its error in a ``FlagBook``; the store work is written once, here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.commands import audit
from broker.store.db import Store, _insert_ignore
from broker.store.keys import DeviceKey

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FlagBook:
    """One kind of flag: its table (event_id, pattern, site, device and the review columns), the words its errors
    use and the audit action a review is logged under."""

    table: sa.Table
    verdicts: Mapping[str, str]  # verdict -> its Chinese label, in the order the error lists them
    noun: str  # what a flagged event is: "punch", "rating"
    nouns: str  # and several of them
    action: str  # the audit action of a review
    error: type[ValueError]  # raised for a review the centre cannot record


async def insert_new(
    conn: AsyncConnection, table: sa.Table, items: Iterable[T], values: Callable[[T], Mapping[str, Any]]
) -> list[T]:
    """Insert each item's row unless its key is already there; returns the items that made a new row, in order."""
    new: list[T] = []
    for item in items:
        result = await conn.execute(_insert_ignore(conn, table).values(**values(item)))
        if result.rowcount == 1:
            new.append(item)
    return new


async def review(
    store: Store, book: FlagBook, event: str, verdict: str, *, by: str, at: datetime, note: str = ""
) -> list[Any]:
    """A person's verdict on a flagged event (all its patterns at once), audited; ``event`` is the event id or a
    unique prefix of it. Returns the event's flag rows as they now stand."""
    if verdict not in book.verdicts:
        choices = " or ".join(f"{v} ({zh})" for v, zh in book.verdicts.items())
        raise book.error(f"verdict {verdict!r}: use {choices}")
    c = book.table.c
    async with store.engine.begin() as conn:
        event_id = await find_flagged(conn, book, event)
        await conn.execute(
            book.table.update()
            .where(c.event_id == event_id)
            .values(reviewed_by=by[:64], reviewed_at=at, verdict=verdict, note=note[:500])
        )
        rows = (await conn.execute(sa.select(book.table).where(c.event_id == event_id))).all()
        detail = {"event": event_id, "verdict": verdict, "patterns": [r.pattern for r in rows]}
        target = DeviceKey(rows[0].site, rows[0].device).text
        await audit(conn, at=at, actor=by, action=book.action, target=target, reason=note, detail=detail)
    return list(rows)


async def find_flagged(conn: AsyncConnection, book: FlagBook, prefix: str) -> str:
    """The one flagged event id that starts with ``prefix``; none or several is the book's error."""
    c = book.table.c
    q = sa.select(c.event_id).where(c.event_id.startswith(prefix, autoescape=True)).distinct().limit(2)
    ids = [r.event_id for r in (await conn.execute(q)).all()]
    if not ids:
        raise book.error(f"no flagged {book.noun} {prefix!r}")
    if len(ids) > 1:
        raise book.error(f"{prefix!r} matches several flagged {book.nouns}: give more of the id")
    return str(ids[0])
