"""A consumer stopped while its store is away stops in time and loses nothing (issue 16, build 3).

Real parts only: `hallfleet consumer` as systemd runs it, a real Mosquitto, devices publishing at QoS 1, and
a store that really goes away: a private PostgreSQL cluster stopped with ``-m immediate`` (clients cut, no
checkpoint), or an SQLite file another process holds under an exclusive transaction (a backup or a
technician's ``sqlite3`` shell). The consumer is sent SIGTERM while it retries; it must exit within the
unit's TimeoutStopSec (read from systemd/, so the test follows the unit) and acknowledge nothing it did not
commit. The proof of the second: after the store returns, a new consumer on the same persistent session
stores every message published, each (device, seq) exactly once, with no gap.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import sqlalchemy as sa

from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import dead_letters, events
from tests.support.mqtt import publish
from tests.support.postgres import LocalPostgres
from tests.support.procs import Proc, consumer_proc, wait_for
from tests.test_store_errors import punch_msg

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "hallfleet-consumer@.service"
DEVICES = [f"att-{n}" for n in range(1, 5)]
ROUND = 25  # events per device per round


def stop_timeout_s() -> float:
    """TimeoutStopSec of the consumer's unit, as systemd reads it (plain seconds or '30s')."""
    found = re.search(r"^TimeoutStopSec=(\d+)s?\s*$", UNIT.read_text(), re.MULTILINE)
    assert found, f"{UNIT} sets no TimeoutStopSec in plain seconds"
    return float(found.group(1))


def round_of(n: int) -> list[tuple[str, bytes, bool]]:
    """Round n (1-based): seq (n-1)*ROUND+1 .. n*ROUND of every device, interleaved as devices publish."""
    return [punch_msg(d, seq) for seq in range((n - 1) * ROUND + 1, n * ROUND + 1) for d in DEVICES]


async def start_consumer(tmp_path: Path, port: int, url: str, procs: list[Proc]) -> Proc:
    """The same instance every time: its persistent session holds what was never acknowledged."""
    proc = consumer_proc(tmp_path, port, url, instance="outage")
    line = "receiver consumer-outage connected"
    before = proc.log().count(line)  # the log file is shared by every start of the instance
    procs.append(proc.start())
    # Subscribed before anyone publishes: a share group with no member drops what it is sent.
    await wait_for(lambda: proc.log().count(line) > before, 60, "the consumer to subscribe")
    return proc


async def sigterm_while_retrying(
    consumer: Proc, port: int, make_outage: Callable[[], None], rounds: int, settle_s: float
) -> float:
    """Take the store away, keep publishing until the consumer is seen retrying, let ``settle_s`` pass (so
    the signal can land inside a write attempt, not only between attempts), then SIGTERM it while a last
    round is being published; returns how long it took to exit."""
    make_outage()
    await asyncio.to_thread(publish, port, round_of(2))
    await wait_for(lambda: "store unavailable" in consumer.log(), 60, "the consumer to retry the store")
    publishing = asyncio.create_task(asyncio.to_thread(publish, port, round_of(rounds), "late-publisher"))
    await asyncio.sleep(settle_s)
    t0 = time.monotonic()
    consumer.signal(signal.SIGTERM)
    code = await asyncio.to_thread(consumer.wait, stop_timeout_s() + 15)
    took = time.monotonic() - t0
    await publishing
    assert code == 0, consumer.log()[-3000:]
    return took


async def assert_stored_exactly_once(store: Store, rounds: int) -> None:
    expected = list(range(1, rounds * ROUND + 1))

    async def complete() -> bool:
        n = await store.scalar(sa.select(sa.func.count()).select_from(events))
        return int(n) >= len(expected) * len(DEVICES)

    await wait_for(complete, 90, "every published event to be stored")
    for d in DEVICES:
        rows = await store.fetch(sa.select(events.c.seq).where(events.c.device == d).order_by(events.c.seq))
        assert [int(r[0]) for r in rows] == expected, f"{d}: gaps or duplicates"
    assert await store.scalar(sa.select(sa.func.count()).select_from(dead_letters)) == 0


async def outage_then_recovery(
    tmp_path: Path,
    mosquitto: LocalMosquitto,
    procs: list[Proc],
    url: str,
    make_outage: Callable[[], None],
    end_outage: Callable[[], Awaitable[None]],
    settle_s: float,
) -> None:
    first = await start_consumer(tmp_path, mosquitto.port, url, procs)
    store = await Store.open(url)
    try:
        await asyncio.to_thread(publish, mosquitto.port, round_of(1))
        await wait_for(lambda: _count(store, ROUND * len(DEVICES)), 60, "the first round stored before the outage")
    finally:
        await store.close()  # the outage must not find the test's own connection in the way

    took = await sigterm_while_retrying(first, mosquitto.port, make_outage, rounds=3, settle_s=settle_s)
    limit = stop_timeout_s()
    print(f"stopped {took:.1f} s after SIGTERM (TimeoutStopSec={limit:.0f})")
    assert took < limit, f"took {took:.1f} s to stop, the unit allows {limit:.0f} s"
    log = first.log()
    assert "stopped while the store was unavailable" in log, log[-3000:]
    assert "Traceback" not in log, log[-3000:]

    await end_outage()
    await start_consumer(tmp_path, mosquitto.port, url, procs)
    store = await Store.open(url)
    try:
        await assert_stored_exactly_once(store, rounds=3)
    finally:
        await store.close()


async def _count(store: Store, at_least: int) -> bool:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(events))) >= at_least


@pytest.mark.postgres
async def test_sigterm_while_postgresql_is_down_stops_in_time_and_a_new_consumer_stores_all_exactly_once(
    tmp_path: Path, mosquitto: LocalMosquitto, procs: list[Proc]
) -> None:
    """GIVEN a consumer storing into PostgreSQL WHEN the cluster dies (immediate stop) while devices publish
    and the consumer is sent SIGTERM as it retries THEN it exits within TimeoutStopSec, and once the cluster
    is back a new consumer stores every event published, each exactly once."""
    pg = LocalPostgres(tmp_path / "pg")  # private: stopping the session's cluster would break other tests
    pg.start()
    try:
        url = pg.create_database("outage")

        async def back() -> None:
            pg.resume()

        # Refused connects fail at once: the signal lands in a backoff wait or a connect attempt.
        await outage_then_recovery(tmp_path, mosquitto, procs, url, pg.crash, back, settle_s=0.3)
    finally:
        for p in procs:
            p.cleanup()  # before the cluster goes: a consumer would otherwise retry a vanished server
        pg.stop()


async def test_sigterm_while_the_sqlite_file_is_locked_stops_in_time_and_a_new_consumer_stores_all_exactly_once(
    tmp_path: Path, mosquitto: LocalMosquitto, procs: list[Proc]
) -> None:
    """GIVEN a consumer storing into SQLite WHEN another process holds the file under an exclusive transaction
    (the consumer's writes wait out busy_timeout, then fail 'database is locked') and the consumer is sent
    SIGTERM as it retries THEN it exits within TimeoutStopSec, and once the lock is gone a new consumer stores
    every event published, each exactly once."""
    path = tmp_path / "store.db"
    url = f"sqlite+aiosqlite:///{path}"
    holder: list[sqlite3.Connection] = []

    def lock() -> None:
        db = sqlite3.connect(path, isolation_level=None, timeout=30)
        db.execute("BEGIN EXCLUSIVE")  # in WAL mode this still shuts out every other writer
        holder.append(db)

    async def unlock() -> None:
        holder.pop().rollback()

    try:
        # A second after the first failure the retry is blocked inside SQLite's busy wait (busy_timeout, 30 s):
        # the worst moment to be told to stop.
        await outage_then_recovery(tmp_path, mosquitto, procs, url, lock, unlock, settle_s=1.0)
    finally:
        for db in holder:
            db.close()
