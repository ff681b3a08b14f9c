"""The writer's SQLite transaction (broker/store/sqlite_inline.py): it holds the write lock from its start, its
small statements run on the loop, the events insert and the waiting for another writer's lock stay on
aiosqlite's thread, and a failure leaves the connection as it was."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.ingest.isolation import StoreFault, classify
from broker.store import db as store_db
from broker.store.db import Batch, Store, Written
from broker.store.schema import events
from broker.store.sqlite_inline import on_thread, write_locked
from protocol.envelope import Presence
from tests.test_store import DEV, T0, event_row, status


@pytest.fixture
async def store(sqlite_url: str) -> AsyncIterator[Store]:
    s = await Store.open(sqlite_url)
    yield s
    await s.close()


def db_file(store: Store) -> str:
    path = store.engine.url.database
    assert path is not None
    return path


async def thread_of(conn: AsyncConnection) -> int:
    """The thread a statement on ``conn`` runs in, as SQLite itself calls back into Python from it."""
    driver: Any = (await conn.get_raw_connection()).driver_connection
    await driver.create_function("thread_of_call", 0, threading.get_ident)
    return int(await conn.scalar(sa.text("SELECT thread_of_call()")))


def takes_the_write_lock(path: str) -> bool:
    """Whether another connection could start writing now (it does not wait: timeout 0)."""
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return False
    finally:
        other.close()


async def test_the_batch_runs_on_the_loop_holding_the_write_lock_from_its_start(store: Store) -> None:
    seen: dict[str, object] = {}

    async def then(conn: AsyncConnection, written: Written) -> None:
        seen["thread"] = await thread_of(conn)
        seen["others_may_write"] = takes_the_write_lock(db_file(store))
        seen["new"] = len(written.new_events)

    await store.write(Batch(events=[event_row(1)], seen={DEV: T0}), then)
    assert seen == {"thread": threading.get_ident(), "others_may_write": False, "new": 1}
    assert takes_the_write_lock(db_file(store)), "the lock is given back with the commit"


async def test_the_bulk_insert_and_statements_after_the_block_go_to_the_thread(store: Store) -> None:
    async with store.engine.connect() as conn:
        async with conn.begin(), write_locked(conn):
            driver: Any = (await conn.get_raw_connection()).driver_connection
            assert await thread_of(conn) == threading.get_ident()
            on_its_thread = await on_thread(driver, lambda: driver._conn.execute("SELECT thread_of_call()").fetchone())
            assert on_its_thread[0] != threading.get_ident()
        assert await thread_of(conn) != threading.get_ident()


async def test_a_free_lock_is_taken_on_the_loop_and_only_the_insert_and_commit_go_to_the_thread(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trip to the thread waits for the loop to see its result, so the usual batch (the lock free) takes the
    lock inline: its trips are the events insert and the COMMIT, and SQLite's busy timeout is as it was."""
    await store.write(Batch(events=[event_row(1)], seen={DEV: T0}))  # the writer connection, kept
    trips: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(args[0].split()[0] if args and isinstance(args[0], str) else getattr(fn, "__name__", "?"))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    written = await store.write(Batch(events=[event_row(2)], seen={DEV: T0}))
    assert len(written.new_events) == 1
    assert trips == ["_sqlite_insert_all", "commit"], trips
    writer: Any = (await store._writer.get_raw_connection()).driver_connection  # type: ignore[union-attr]
    assert writer._conn.execute("PRAGMA busy_timeout").fetchone() == (store_db.SQLITE_BUSY_S * 1000,)


async def test_a_batch_statement_journal_stays_in_memory(store: Store) -> None:
    """A many-row insert inside the transaction journals the pages it changes; on a file that was a temporary
    file opened, written and unlinked for every batch (store_db's connect pragmas say why not)."""
    await store.write(Batch(events=[event_row(n) for n in range(1, 400)], seen={DEV: T0}))
    writer: Any = (await store._writer.get_raw_connection()).driver_connection  # type: ignore[union-attr]
    assert writer._conn.execute("PRAGMA temp_store").fetchone() == (2,)  # MEMORY
    async with store.engine.connect() as conn:  # the API's and the jobs' connections too
        assert await conn.scalar(sa.text("PRAGMA temp_store")) == 2


@pytest.mark.parametrize("events_in_batch", [1, 0], ids=["events", "status-only"])
async def test_waiting_for_another_writer_does_not_hold_up_the_loop(store: Store, events_in_batch: int) -> None:
    """The lock is taken first, on the thread: a batch whose first write would otherwise run inline (a
    status-only batch has no events insert) must not wait for the lock on the loop."""
    other = sqlite3.connect(db_file(store), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # another process (or a job's transaction) is writing
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick = asyncio.create_task(ticker())
    batch = status(Presence.ONLINE, 1, T0)
    batch.events = [event_row(1)][:events_in_batch]
    write = asyncio.create_task(store.write(batch))
    await asyncio.sleep(0.5)
    assert not write.done(), "the write must wait for the other writer's lock"
    assert ticks >= 10, f"the loop stood still while the write waited ({ticks} ticks in 0.5 s)"
    other.execute("COMMIT")
    other.close()
    written = await asyncio.wait_for(write, 10)
    tick.cancel()
    assert len(written.new_events) == events_in_batch
    assert [t.state for t in written.transitions] == ["online"]


async def test_a_failed_batch_rolls_back_and_the_next_one_is_written(store: Store) -> None:
    async def bug(conn: AsyncConnection, written: Written) -> None:
        raise RuntimeError("a bug in the rules")

    with pytest.raises(RuntimeError):
        await store.write(Batch(events=[event_row(1)], seen={DEV: T0}), bug)
    assert takes_the_write_lock(db_file(store)), "the failed batch's lock is released"
    await store.write(Batch(events=[event_row(2)], seen={DEV: T0}))
    async with store.engine.connect() as conn:
        seqs = sorted((await conn.scalars(sa.select(events.c.seq))).all())
    assert seqs == [2]


async def test_a_statement_the_database_refuses_inline_leaves_the_writer_usable(store: Store) -> None:
    async def refused(conn: AsyncConnection, written: Written) -> None:
        await conn.execute(sa.text("INSERT INTO no_such_table VALUES (1)"))

    with pytest.raises(sa.exc.OperationalError):
        await store.write(Batch(events=[event_row(1)], seen={DEV: T0}), refused)
    written = await store.write(Batch(events=[event_row(3)], seen={DEV: T0}))
    assert len(written.new_events) == 1


async def test_a_lock_held_past_the_busy_timeout_is_the_store_unavailable_not_the_batchs_fault(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock is taken by aiosqlite's own call, outside SQLAlchemy's error wrapping: its refusal must still
    read as "the store is away" (the commit stage retries the same batch), never as refused values (which
    would send the batch's events to the dead letters)."""
    monkeypatch.setattr(store_db, "SQLITE_BUSY_S", 1)
    store = await Store.open(sqlite_url)
    other = sqlite3.connect(db_file(store), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(sqlite3.OperationalError) as refused:
            await store.write(Batch(events=[event_row(1)], seen={DEV: T0}))
        assert classify(refused.value) is StoreFault.UNAVAILABLE
        other.execute("COMMIT")
        assert len((await store.write(Batch(events=[event_row(1)], seen={DEV: T0}))).new_events) == 1
    finally:
        other.close()
        await store.close()
