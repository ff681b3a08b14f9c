"""What each chain covers: per source, the table, the key naming a row, the time that files it under a month,
and the exact columns hashed.

Rule: the hashed columns are listed here, never "every column of the table". A column another engineer adds
later must not change the hash of rows written before it existed; covering a new column is a deliberate
change here (with a new source name, so old rows keep verifying under the old one).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from broker.store.schema import attendance_exceptions, attendance_locked_days, attendance_locks, audit_log

AUDIT = "audit"
CORRECTIONS = "corrections"
CHAINS = (AUDIT, CORRECTIONS)


@dataclass(frozen=True, slots=True)
class Source:
    """One kind of chained record: ``name`` goes into every hash, so two sources never collide."""

    name: str
    chain: str
    table: sa.Table
    key: tuple[str, ...]
    time: str
    columns: tuple[str, ...]

    def cols(self, names: tuple[str, ...]) -> list[sa.ColumnElement[object]]:
        return [self.table.c[n] for n in names]

    def present(self) -> sa.ColumnElement[bool]:
        """The rows this source covers (a withdrawal exists only once the filing was withdrawn)."""
        return self.table.c[self.time].is_not(None)


AUDIT_ROW = Source(
    "audit_log", AUDIT, audit_log, ("id",), "at", ("id", "at", "actor", "action", "target", "reason", "detail")
)
# A filing is hashed without withdrawn_at: the withdrawal is its own, later link (WITHDRAWAL), since a row
# already in the chain can never be re-hashed.
EXCEPTION = Source(
    "attendance_exception",
    CORRECTIONS,
    attendance_exceptions,
    ("id",),
    "filed_at",
    ("id", "site", "staff_id", "kind", "start", "end", "minutes", "filed_at", "filed_by", "reason", "approved", "late"),
)
WITHDRAWAL = Source(
    "attendance_withdrawal", CORRECTIONS, attendance_exceptions, ("id",), "withdrawn_at", ("id", "withdrawn_at")
)
LOCK = Source(
    "attendance_lock",
    CORRECTIONS,
    attendance_locks,
    ("site", "staff_id", "day"),
    "locked_at",
    ("site", "staff_id", "day", "verdict", "reason", "locked_at"),
)
LOCKED_DAY = Source(
    "attendance_locked_day",
    CORRECTIONS,
    attendance_locked_days,
    ("site", "day"),
    "locked_at",
    ("site", "day", "locked_at", "locked"),
)
SOURCES = (AUDIT_ROW, EXCEPTION, WITHDRAWAL, LOCK, LOCKED_DAY)
BY_NAME = {s.name: s for s in SOURCES}


def of_chain(chain: str) -> tuple[Source, ...]:
    return tuple(s for s in SOURCES if s.chain == chain)
