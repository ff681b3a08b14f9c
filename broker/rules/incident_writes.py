"""What the incident rules write for a batch, sent in a few statements instead of a few per signal.

The rule this module keeps: **a device's writes reach the store before anything reads that device again.**
Conditions clearing, active conditions seen again, new incidents, new conditions, incidents moving to
``recovering`` and timeline entries wait here, in order, and go out in one statement per kind at the end of
the batch, or earlier when a later signal of a device with
writes waiting is about to read the store (broker/rules/incident_reads.py reads it again for such a device).
Nothing the rules read of one device depends on another device's writes, so the wait changes no decision.
Clears go first: one ``UPDATE ... RETURNING`` keeps each clear's own condition (a clear older than the
condition's last signal clears nothing), and what each one cleared is then handed to the rules
(``IncidentRules._cleared``), whose notes and recoveries go out with the rest.

A new incident another consumer opened a moment ago (same ``open_key``) is not inserted twice: its condition
joins that consumer's incident, and the timeline entry that would have announced ours is dropped, as when
each insert went alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.rules.incident_reads import CHUNK, BatchReads
from broker.store.db import insert_ignoring
from broker.store.events_insert import sqlite_utc_text
from broker.store.schema import incident_conditions, incident_timeline, incidents

if TYPE_CHECKING:
    from broker.rules.incidents import Signal

log = logging.getLogger(__name__)


# The batch's writes, built once (executemany each).
# An active condition's newer signal: its last_signal_at, by id.
_SEEN = (
    incident_conditions.update()
    .where(incident_conditions.c.id == sa.bindparam("b_id"))
    .values(last_signal_at=sa.bindparam("b_ts"))
)
# An open incident whose last condition cleared.
_RECOVERING = (
    incidents.update()
    .where(incidents.c.id == sa.bindparam("b_id"), incidents.c.state == "open")
    .values(state="recovering", cleared_at=sa.bindparam("b_at"))
)
_TIMELINE = incident_timeline.insert()


@dataclass(frozen=True, slots=True)
class Clear:
    """A clearing signal waiting to be sent; ``first``: the rules had not acted on its device yet in this batch
    when it came, so what it leaves active is answered from the batch's reads."""

    signal: Signal
    first: bool


Cleared = Callable[["BatchWrites", list[tuple[Clear, str]]], Awaitable[None]]  # (clear, incident id) each


@dataclass(slots=True)
class BatchWrites:
    """One ``IncidentRules.apply``: its connection, its reads, and the writes waiting to be sent."""

    conn: AsyncConnection
    reads: BatchReads
    cleared: Cleared  # told what the clears cleared, before the other writes go out
    clears: list[Clear] = field(default_factory=list)  # at most one per device: its next signal settles first
    seen: list[dict[str, Any]] = field(default_factory=list)  # {b_id, b_ts}: an active condition's newer signal
    incidents: list[dict[str, Any]] = field(default_factory=list)  # new incidents, as inserted
    conditions: list[dict[str, Any]] = field(default_factory=list)  # new conditions, as inserted
    recovering: list[dict[str, Any]] = field(default_factory=list)  # {b_id, b_at}: last condition cleared
    timeline: list[dict[str, Any]] = field(default_factory=list)  # incident_timeline rows, in order
    waiting: set[str] = field(default_factory=set)  # device keys with writes not yet sent

    async def settle(self, key: str) -> None:
        """Before a signal of this device reads the store: send what waits, if any of it is the device's."""
        if key in self.waiting:
            await self.flush()

    async def flush(self) -> None:
        await self._send_clears()
        if self.seen:
            await self.conn.execute(_SEEN, self.seen)
        await self._insert_incidents()
        if self.conditions:
            await self.conn.execute(insert_ignoring(self.conn, incident_conditions), self.conditions)
        if self.recovering:
            await self.conn.execute(_RECOVERING, self.recovering)
        if self.timeline:
            await self.conn.execute(_TIMELINE, self.timeline)
        self.incidents, self.conditions, self.recovering, self.timeline, self.seen = [], [], [], [], []
        self.waiting.clear()

    async def _send_clears(self) -> None:
        """The waiting clears, a statement per CHUNK of them, each with its own condition: the condition active
        and its last signal no newer than the clear's (keys differ: one clear per device waits at a time, so each
        condition joins at most one clear)."""
        clears, self.clears = self.clears, []
        # (device key, kind) -> its incident, for each condition cleared: the row's open_key is gone once cleared,
        # so the returned row is matched by the columns the key is made of, not by the key text made again.
        done: dict[tuple[str, str], str] = {}
        for start in range(0, len(clears), CHUNK):
            part = [c.signal for c in clears[start : start + CHUNK]]
            rows = await self.conn.execute(*_clearing(self.conn.dialect, part))
            done.update({(r.key, r.kind): r.incident_id for r in rows})
        if done:
            cleared = [(c, done.get((c.signal.key, c.signal.kind))) for c in clears]
            await self.cleared(self, [(c, incident) for c, incident in cleared if incident is not None])

    async def _insert_incidents(self) -> None:
        if not self.incidents:
            return
        stmt = insert_ignoring(self.conn, incidents, incidents.c.id)
        inserted = set((await self.conn.execute(stmt, self.incidents)).scalars())
        lost = {row["id"]: row["open_key"] for row in self.incidents if row["id"] not in inserted}
        for row in self.incidents:
            if row["id"] in inserted:
                log.info("incident %s opened: %s %s (%s)", row["id"], row["key"], row["kind"], row["summary"])
        if lost:
            await self._join_theirs(lost)

    async def _join_theirs(self, lost: dict[str, str]) -> None:
        """Incidents another consumer opened first: our conditions join theirs (none if it is gone again)."""
        c = incidents.c
        found = await self.conn.execute(sa.select(c.open_key, c.id).where(c.open_key.in_(sorted(lost.values()))))
        theirs = {open_key: incident_id for open_key, incident_id in found}
        conditions = []
        for row in self.conditions:
            if row["incident_id"] in lost:
                incident_id = theirs.get(lost[row["incident_id"]])
                if incident_id is None:
                    continue
                row = row | {"incident_id": incident_id}
            conditions.append(row)
        self.conditions = conditions
        self.timeline = [row for row in self.timeline if row["incident_id"] not in lost]


# Clears of distinct conditions in one UPDATE ... FROM the clears ... RETURNING: the clears travel as one parameter
# (a JSON array on SQLite, arrays on PostgreSQL), so the statement's text is the same for any number of them and
# is compiled once; a CASE with a WHEN per clear was built, keyed and compiled again per batch (issue 19). No OR
# per clear either: SQLite parses a chain of ORs as a tree as deep as the chain, and refuses one past 1,000.
def _clear_sqlite() -> sa.Update:
    v = sa.func.json_each(sa.bindparam("clears")).table_valued("value", name="v")
    return _clear_from(*(sa.func.json_extract(v.c.value, f"$[{i}]") for i in range(3)))


def _clear_pg() -> sa.Update:
    ts = incident_conditions.c.last_signal_at.type
    v = (
        sa.func.unnest(
            sa.bindparam("keys", type_=ARRAY(sa.String)),
            sa.bindparam("ts", type_=ARRAY(ts)),
            sa.bindparam("ats", type_=ARRAY(ts)),
        )
        .table_valued(sa.column("open_key", sa.String), sa.column("ts", ts), sa.column("at", ts))
        .render_derived(name="v")
    )
    return _clear_from(v.c.open_key, v.c.ts, v.c.at)


def _clear_from(open_key: Any, device_ts: Any, at: Any) -> sa.Update:
    """The condition active under ``open_key`` and its last signal no newer than the clear's: cleared at ``at``."""
    k = incident_conditions.c
    return (
        incident_conditions.update()
        .where(k.open_key == open_key, k.last_signal_at <= device_ts)
        .values(open_key=None, cleared_at=at, last_signal_at=device_ts)
        .returning(k.key, k.kind, k.incident_id)
    )


_CLEAR_SQLITE = _clear_sqlite()
_CLEAR_PG = _clear_pg()


def _clearing(dialect: Dialect, signals: list[Signal]) -> tuple[sa.Update, dict[str, Any]]:
    """The clear statement of this backend and its parameters. SQLite's times go as the text the column holds
    (``sqlite_utc_text``, the column type's text), so they compare and store exactly as bound values did."""
    if dialect.name == "postgresql":
        keys = [s.condition_key for s in signals]
        return _CLEAR_PG, {"keys": keys, "ts": [s.device_ts for s in signals], "ats": [s.at for s in signals]}
    rows = [[s.condition_key, sqlite_utc_text(s.device_ts), sqlite_utc_text(s.at)] for s in signals]
    return _CLEAR_SQLITE, {"clears": json.dumps(rows)}
