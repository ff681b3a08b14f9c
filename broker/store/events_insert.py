"""The events batch insert (and the devices' last-seen update and revival beside it): the fastest correct form per
backend, one call above the switch.

The rule: an event is stored once (``ON CONFLICT DO NOTHING`` on its primary key), and the caller learns
exactly which rows of the batch were new, so what runs after the write (the rules stage)
sees a re-delivered event as nothing. One statement per batch (up to 2,000 rows on SQLite), written once
here and sent to the driver inside the store's transaction, with no per-row SQLAlchemy work (no compile,
no bind processing per value: a profile of a 30k drain put those at about a third of the consumer's CPU).
- PostgreSQL: ``INSERT ... SELECT FROM unnest(<one array per column>)``: one bind per column however many
  rows, one plan (platform-notes.md measured it about 30 % faster than asyncpg's executemany); asyncpg
  encodes the arrays itself. No ``RETURNING`` either (a drain's 4,000 returned rows, each an asyncpg record
  and a key, were about a tenth of the consumer's CPU): the command's row count says whether all were new;
  when some were not, the new ones are read back as the batch's rows this transaction wrote (their ``xmin``
  is its id: the insert never runs in a savepoint).
- SQLite: multi-row ``INSERT ... VALUES (...), (...)`` (measured beside executemany on this machine kind: the
  same cost per row), and no ``RETURNING``: in a drain every event is new, and returning them cost SQLite about
  1.3 µs a row and the loop about 1.4 µs more to fetch them, one GIL hand-over per row. The statements' row
  counts say whether all were new; only when some were not (a re-delivery) are the new ones read back, as the
  rows past the table's highest rowid before the insert (``events`` is a rowid table, its primary key is not
  the rowid, and no explicit rowid is ever given, so SQLite numbers new rows from that maximum up, and the
  store's write lock keeps anyone else's rows out). Times go in as exactly the text SQLAlchemy's own SQLite
  type writes, so every reader compares like with like, formatted here (``sqlite_utc_text``): the type's bind
  processor took about 6 µs per value, a tenth of the consumer's CPU per event (tests/test_events_insert.py
  keeps the two equal).
On PostgreSQL, aware times go to asyncpg as they are (it stores the instant, as the column type's processor would
have after moving it to UTC); on both a naive time is refused with the column type's own message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.keys import EventRef
from broker.store.schema import NAIVE_TIME, events
from broker.store.sqlite_inline import on_thread

COLUMNS = (
    *("site", "device", "id", "type", "seq", "boot_id", "ts", "clock_synced", "replayed", "received_at", "data"),
    # A signed event's key id, signature and the bytes it covers (issue 24); absent from a row: unsigned.
    *("sig_key", "sig", "signed"),
)
REQUIRED = COLUMNS[:-3]
TS, RECEIVED_AT = COLUMNS.index("ts"), COLUMNS.index("received_at")
FLAGS = COLUMNS.index("clock_synced"), COLUMNS.index("replayed")
_required_of = itemgetter(*REQUIRED)  # a row dict -> its values in column order, in C


def _values_of(row: dict[str, Any]) -> tuple[Any, ...]:
    return (*_required_of(row), row.get("sig_key"), row.get("sig"), row.get("signed"))


def _shape(rows: Sequence[dict[str, Any]]) -> tuple[Callable[[dict[str, Any]], tuple[Any, ...]], int]:
    """How the batch's rows go to the driver, and how many columns: all if any event is signed, else only those
    an unsigned event has. Both drivers pay per value of NULL (sqlite3 looks a None up in its adapters before
    binding it, asyncpg checks every element of an array), so an unsigned batch sends no signature columns."""
    if any(row.get("sig_key") is not None for row in rows):
        return _values_of, len(COLUMNS)
    return _required_of, len(REQUIRED)


_PG_ARRAY_TYPES = {
    "seq": "bigint[]",
    "ts": "timestamptz[]",
    "received_at": "timestamptz[]",
    "clock_synced": "boolean[]",
    "replayed": "boolean[]",
}


@lru_cache(maxsize=2)
def _pg_unnest(width: int) -> str:
    """The insert of the first ``width`` columns (all of them, or those an unsigned event has)."""
    columns = COLUMNS[:width]
    return (
        f"INSERT INTO events ({', '.join(columns)}) SELECT * FROM unnest("
        + ", ".join(f"${n}::{_PG_ARRAY_TYPES.get(c, 'text[]')}" for n, c in enumerate(columns, 1))
        + ") ON CONFLICT DO NOTHING"
    )


# The batch's rows that this transaction inserted: xmin is the inserting transaction's id (32 bits of
# txid_current(), which counts epochs too). For a batch some of whose events the store already held.
_PG_ADDED = (
    "SELECT e.site, e.device, e.id FROM events AS e"
    " JOIN unnest($1::text[], $2::text[], $3::text[]) AS b(site, device, id)"
    " ON e.site = b.site AND e.device = b.device AND e.id = b.id"
    " WHERE e.xmin::text::bigint = txid_current() % 4294967296"
)


# 2,000 rows x 14 columns stays below SQLite's bound-variable limit (32,766 since 3.32); a drain's batch (half the
# receive maximum, 4,000 by default) is two statements, sent in one trip to the thread.
SQLITE_ROWS_PER_STATEMENT = 2000


def _column_time(dialect: Dialect) -> Any:
    """The times columns' bind processor as the dialect runs it (the decorator, then the dialect's own type:
    the type's bare processor would leave SQLite's text to sqlite3's adapter, which drops a zero fraction)."""
    return events.c.ts.type.dialect_impl(dialect).bind_processor(dialect)


# The column type's bind processor on SQLite: the text SQLAlchemy writes (UTC, naive, microseconds), which
# ``sqlite_utc_text`` writes faster.
column_sqlite_text: Callable[[datetime], str] = _column_time(sqlite.dialect())


def _aware(value: datetime) -> datetime:
    """An aware time as it is, for asyncpg, which stores the instant (moving it to UTC first, as the column type's
    processor did, cost about 1.5 µs a value for nothing); a naive one refused with the column type's message."""
    if value.tzinfo is None:
        raise ValueError(NAIVE_TIME)
    return value


def sqlite_utc_text(value: datetime) -> str:
    """``column_sqlite_text(value)``, the same text at about a third of the cost: UTC, no zone, 6 decimals."""
    if value.tzinfo is None:
        raise ValueError(NAIVE_TIME)
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (  # noqa: UP031 (the fastest of the forms measured)
        value.year,
        value.month,
        value.day,
        value.hour,
        value.minute,
        value.second,
        value.microsecond,
    )


@lru_cache(maxsize=64)
def _sqlite_insert(rows: int, width: int) -> str:
    """``rows`` rows of the first ``width`` columns (all of them, or those an unsigned event has)."""
    row = "(" + ", ".join("?" * width) + ")"
    columns = ", ".join(COLUMNS[:width])
    return f"INSERT INTO events ({columns}) VALUES " + ", ".join([row] * rows) + " ON CONFLICT DO NOTHING"


_SQLITE_HIGHEST = "SELECT max(rowid) FROM events"
_SQLITE_ADDED_SINCE = "SELECT site, device, id FROM events WHERE rowid > ?"
_ref_of = itemgetter("site", "device", "id")


def _sqlite_insert_all(raw: Any, params: list[Any], width: int) -> tuple[int, int]:
    """On the connection's thread: the table's highest rowid before, then the batch's statements (``width``
    values a row); returns that rowid (0: empty) and how many rows they added."""
    (highest,) = raw.execute(_SQLITE_HIGHEST).fetchone()
    added = 0
    step = SQLITE_ROWS_PER_STATEMENT * width
    for start in range(0, len(params), step):
        part = params[start : start + step]
        added += raw.execute(_sqlite_insert(len(part) // width, width), part).rowcount
    return highest or 0, added


async def insert_new_events(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> frozenset[EventRef]:
    """Insert the events rows (dicts keyed by column); returns the keys of those that were new. A value the
    column type refuses raises ``StatementError``, as SQLAlchemy's own bind processing would."""
    if not rows:
        return frozenset()
    postgres = conn.dialect.name == "postgresql"
    try:
        return await (_insert_postgres(conn, rows) if postgres else _insert_sqlite(conn, rows))
    except (ValueError, TypeError, KeyError) as exc:  # raised here, before the driver saw anything
        raise sa_exc.StatementError(str(exc), "INSERT INTO events", None, exc) from exc


async def _insert_postgres(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> frozenset[EventRef]:
    values_of, _ = _shape(rows)
    columns = list(zip(*map(values_of, rows), strict=True))
    for i in (TS, RECEIVED_AT):
        columns[i] = tuple(map(_aware, columns[i]))
    # Through SQLAlchemy's adapter, not asyncpg's own call: the adapter opens the transaction on its first
    # statement, which this may be.
    result = await conn.exec_driver_sql(_pg_unnest(len(columns)), tuple(list(c) for c in columns))
    if result.rowcount == len(rows):
        return _all_new(rows)
    found = await conn.exec_driver_sql(_PG_ADDED, (list(columns[0]), list(columns[1]), list(columns[2])))
    return _read_back(found.fetchall(), result.rowcount)


async def _insert_sqlite(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> frozenset[EventRef]:
    # What sqlite3 binds fast: str, int, float. A bool or a None goes through its adaptation lookup first (about
    # 0.35 µs each, in-process, with the GIL held on the writer's thread while the loop waits for it), so flags
    # go as 0/1, as SQLite stores them anyway, and an unsigned batch has no signature columns (``_shape``).
    values_of, width = _shape(rows)
    stamps: dict[datetime, str] = {}  # a receive time is shared by every message of one socket read
    params: list[Any] = []
    for values in map(values_of, rows):
        row = list(values)
        for i in FLAGS:
            row[i] = int(row[i])
        row[TS] = sqlite_utc_text(row[TS])
        at = row[RECEIVED_AT]
        text = stamps.get(at)
        if text is None:
            text = stamps[at] = sqlite_utc_text(at)
        row[RECEIVED_AT] = text
        params += row
    # One trip to aiosqlite's thread for all of it (SQLAlchemy's cursor takes four per statement), on the
    # transaction's connection, so the insert commits or rolls back with the rest of the write. On the thread
    # even while the batch's other statements run inline: its B-tree work overlaps the reader's decoding.
    driver: Any = (await conn.get_raw_connection()).driver_connection
    highest, added = await on_thread(driver, _sqlite_insert_all, driver._conn, params, width)
    if added == len(rows):
        return _all_new(rows)
    return _read_back(await driver.execute_fetchall(_SQLITE_ADDED_SINCE, (highest,)), added)


def _all_new(rows: Sequence[dict[str, Any]]) -> frozenset[EventRef]:
    """Every row of the batch, when the insert's own count says each was new (a drain: every batch)."""
    return frozenset(map(EventRef._make, map(_ref_of, rows)))


def _read_back(found: Iterable[Sequence[Any]], added: int) -> frozenset[EventRef]:
    """The new rows as read back (SQLite: past the highest rowid before; PostgreSQL: this transaction's xmin),
    held to the insert's own count: if that reasoning ever failed, events would be stored without their meaning
    (the rules stage skips what is not new), so a mismatch fails the write loudly instead."""
    new = frozenset(map(EventRef._make, found))
    if len(new) != added:
        raise RuntimeError(f"the events insert added {added} rows but {len(new)} were read back as new")
    return new


_PG_TOUCH = (
    "UPDATE devices AS d SET last_seen = v.seen, stale_after = v.deadline"
    " FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS v(key, seen, deadline)"
    " WHERE d.key = v.key"
)
_SQLITE_TOUCH = "UPDATE devices SET last_seen = ?, stale_after = ? WHERE key = ?"


_PG_REVIVE = (
    "UPDATE devices SET presence = 'online', presence_since = $2"
    " WHERE presence = 'stale' AND key = ANY($1::text[]) RETURNING site, device, session"
)


@lru_cache(maxsize=64)
def _sqlite_revive(keys: int) -> str:
    return (
        "UPDATE devices SET presence = 'online', presence_since = ?"
        f" WHERE presence = 'stale' AND key IN ({', '.join('?' * keys)}) RETURNING site, device, session"
    )


async def touch_devices(
    conn: AsyncConnection, seen: Sequence[tuple[str, datetime, datetime]], now: datetime
) -> list[tuple[str, str, int]]:
    """Each device heard from in the batch: (key text, last seen, stale deadline), one statement; then those
    of them that were ``stale`` are online again since ``now``, one statement, returned as (site, device,
    session). Every batch carries both, so they go to the driver like the insert (on SQLite one trip to
    aiosqlite's thread each, where SQLAlchemy's cursor took four for the second); in key order, so two
    consumers of one group lock the rows in the same order (the second only locks rows the first holds)."""
    rows = sorted(seen)
    if not rows:
        return []
    keys = [key for key, _, _ in rows]
    try:
        if conn.dialect.name == "postgresql":
            _, at, deadline = zip(*rows, strict=True)
            times = [list(map(_aware, at)), list(map(_aware, deadline))]
            await conn.exec_driver_sql(_PG_TOUCH, (keys, *times))
            revived: Any = (await conn.exec_driver_sql(_PG_REVIVE, (keys, _aware(now)))).fetchall()
            return [(r[0], r[1], r[2]) for r in revived]
        params = [(sqlite_utc_text(at), sqlite_utc_text(deadline), key) for key, at, deadline in rows]
        since = sqlite_utc_text(now)
    except (ValueError, TypeError) as exc:
        raise sa_exc.StatementError(str(exc), "UPDATE devices", None, exc) from exc
    driver: Any = (await conn.get_raw_connection()).driver_connection
    await driver.executemany(_SQLITE_TOUCH, params)
    return [(r[0], r[1], r[2]) for r in await driver.execute_fetchall(_sqlite_revive(len(keys)), [since, *keys])]
