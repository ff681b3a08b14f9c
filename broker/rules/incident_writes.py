"""What the incident rules write for a batch, sent in a few statements instead of a few per signal.

The rule this module keeps: **a device's writes reach the store before anything reads that device again.**
New incidents, new conditions, incidents moving to ``recovering`` and timeline entries wait here, in order,
and go out in one statement per kind at the end of the batch, or earlier when a later signal of a device with
writes waiting is about to read the store (broker/rules/incident_reads.py reads it again for such a device).
Nothing the rules read of one device depends on another device's writes, so the wait changes no decision.

A new incident another consumer opened a moment ago (same ``open_key``) is not inserted twice: its condition
joins that consumer's incident, and the timeline entry that would have announced ours is dropped, as when
each insert went alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.rules.incident_reads import BatchReads
from broker.store.db import _insert_ignore
from broker.store.schema import incident_conditions, incident_timeline, incidents

log = logging.getLogger(__name__)


@dataclass(slots=True)
class BatchWrites:
    """One ``IncidentRules.apply``: its connection, its reads, and the writes waiting to be sent."""

    conn: AsyncConnection
    reads: BatchReads
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
        await self._insert_incidents()
        await _insert_ignored(self.conn, incident_conditions, self.conditions)
        if self.recovering:
            c = incidents.c
            await self.conn.execute(
                incidents.update()
                .where(c.id == sa.bindparam("b_id"), c.state == "open")
                .values(state="recovering", cleared_at=sa.bindparam("b_at")),
                self.recovering,
            )
        if self.timeline:
            await self.conn.execute(incident_timeline.insert(), self.timeline)
        self.incidents, self.conditions, self.recovering, self.timeline = [], [], [], []
        self.waiting.clear()

    async def _insert_incidents(self) -> None:
        if not self.incidents:
            return
        stmt = _insert_ignore(self.conn, incidents).returning(incidents.c.id)
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


async def _insert_ignored(conn: AsyncConnection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING of many rows: a row another consumer wrote first is left to it."""
    if rows:
        await conn.execute(_insert_ignore(conn, table), rows)
