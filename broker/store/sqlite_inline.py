"""The batch's small statements on SQLite run on the event loop, once the transaction holds the write lock.

Why: aiosqlite runs every call on its connection's own thread. A call is a trip (a queue, a thread woken, the
GIL handed over and back, ``call_soon_threadsafe`` waking the loop), and SQLAlchemy's adapter makes three or
four per statement (cursor, execute, fetch, close). Measured on this machine kind: about 600 µs of the
consumer's CPU per small statement through the adapter, 130 µs through one aiosqlite call, against tens of µs
of SQLite's own work. A batch's rules and presence updates are a few dozen such statements, which made the
rules stage cost more than half of the ingest's throughput at 1 % state changes (issue 19).

Why it is safe, and only inside ``write_locked``:

- The transaction takes SQLite's write lock first, with ``BEGIN IMMEDIATE`` on the thread, where waiting for
  another writer (a job's transaction, another process) does not hold up the loop. After that no statement of
  the transaction waits for a lock: in WAL mode readers never block the writer, and only COMMIT, which stays
  on the thread with its fsync, may checkpoint. A statement inline costs its own work and nothing else.
- The connection is the store's writer, used by one task at a time (``Store._writing``), and every call is
  awaited before the next, so the loop and the thread never use the sqlite3 connection at once (it is opened
  with ``check_same_thread=False`` for this, broker/store/db.py).
- What is worth a thread stays on it: the events insert, the batch's bulk of B-tree work, which then overlaps
  the reader decoding the next messages (``on_thread``), and the COMMIT.

Both rest on aiosqlite's ``Connection._execute`` (0.22), through which every call of a connection and of its
cursors goes: not a public API, so tests/test_sqlite_inline.py checks on which thread statements really run.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import aiosqlite
from sqlalchemy.ext.asyncio import AsyncConnection


async def _inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """aiosqlite's ``Connection._execute`` (every call of the connection and its cursors goes through it),
    without the trip to the thread."""
    return fn(*args, **kwargs)


@contextlib.asynccontextmanager
async def write_locked(conn: AsyncConnection) -> AsyncIterator[None]:
    """Inside a transaction just begun on ``conn``: take SQLite's write lock, then run the connection's
    statements inline until the block ends. Other backends: nothing changes (PostgreSQL's driver does not hop
    threads, and its row locks are taken statement by statement)."""
    if conn.dialect.name != "sqlite":
        yield
        return
    driver = cast(aiosqlite.Connection, (await conn.get_raw_connection()).driver_connection)
    if not _lock_at_once(driver._conn):
        await driver.execute("BEGIN IMMEDIATE")  # on the thread: it waits in SQLite's busy handler
    driver._execute = _inline  # type: ignore[method-assign]  # the instance's, found before the class's
    try:
        yield
    finally:
        del driver._execute


def _lock_at_once(raw: sqlite3.Connection) -> bool:
    """``BEGIN IMMEDIATE`` on the loop if the write lock is free this instant (busy timeout 0); False, with no
    transaction begun, if another writer holds it. The usual case costs three small statements instead of a trip to
    the thread, which in a drain waited for the loop to finish what it was decoding before its result was seen."""
    (timeout_ms,) = raw.execute("PRAGMA busy_timeout").fetchone()
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        raw.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
            raise
        return False
    finally:
        raw.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")
    return True


async def on_thread(driver: aiosqlite.Connection, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` on the connection's thread even inside ``write_locked``: the class's own ``_execute``."""
    return await aiosqlite.Connection._execute(driver, fn, *args)
