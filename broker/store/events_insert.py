"""The events batch insert: the fastest correct form per backend, one call above the switch.

The rule: an event is stored once (``ON CONFLICT DO NOTHING`` on its primary key), and the caller learns
exactly which rows of the batch were new (``RETURNING``), so what runs after the write (the rules stage)
sees a re-delivered event as nothing. One statement per batch on both backends:
- PostgreSQL: ``INSERT ... SELECT FROM unnest(<one array per column>)``: one bind per column however many
  rows, one plan (platform-notes.md measured it about 30 % faster than asyncpg's executemany);
- SQLite: multi-row ``INSERT ... VALUES (...), (...) RETURNING`` (SQLAlchemy's insertmanyvalues), since
  sqlite3's executemany cannot return rows and the store must know which events are new.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.keys import EventRef
from broker.store.schema import events

COLUMNS = ("site", "device", "id", "type", "seq", "boot_id", "ts", "clock_synced", "replayed", "received_at", "data")
_PG_ARRAY_TYPES = {
    "seq": "bigint[]",
    "ts": "timestamptz[]",
    "received_at": "timestamptz[]",
    "clock_synced": "boolean[]",
    "replayed": "boolean[]",
}
_PG_UNNEST = sa.text(
    f"INSERT INTO events ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {_PG_ARRAY_TYPES.get(c, 'text[]')})" for c in COLUMNS)
    + ") ON CONFLICT DO NOTHING RETURNING site, device, id"
).bindparams(
    # The times go through the column's own type (aware, in UTC; a naive one is refused as on SQLite).
    sa.bindparam("ts", type_=pg.ARRAY(events.c.ts.type)),
    sa.bindparam("received_at", type_=pg.ARRAY(events.c.received_at.type)),
)
_SQLITE_INSERT = (
    sqlite.insert(events).on_conflict_do_nothing().returning(events.c.site, events.c.device, events.c.id)
)


async def insert_new_events(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> frozenset[EventRef]:
    """Insert the events rows (dicts keyed by column); returns the keys of those that were new."""
    if not rows:
        return frozenset()
    if conn.dialect.name == "postgresql":
        result = await conn.execute(_PG_UNNEST, {c: [r[c] for r in rows] for c in COLUMNS})
    else:
        result = await conn.execute(_SQLITE_INSERT, list(rows))
    return frozenset(EventRef(*r) for r in result)
