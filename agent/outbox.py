"""The durable outbox: every event is committed here before it is published, and leaves only when
the central store confirms it (see protocol.envelope.StoredAck for why PUBACK is not enough).

Two lanes: ``critical`` (punches, ratings, faults) is never dropped: when full, ``append`` refuses
with OutboxFull so the device can tell the person to retry; ``telemetry`` drops its oldest rows when
full, and counts every drop. Appends are group-committed only when producers contend: one event
waiting is committed at once (a command's ack must not wait out a window), and the events taken while a
commit is on the disk share the next one, so one fsync covers a batch exactly when there is one (an SD
card's fsync is slow; platform-notes.md).

The link learns of new rows by waiting (``wait_committed``), never by asking the store on a timer.

A commit that fails (the disk is full, an I/O error) refuses exactly the events of that batch with
OutboxFull, rolls back and leaves everything already committed as it was; the next append tries again,
so the device takes events again as soon as there is space. One lock serialises every transaction on
the connection: a confirmation committed in the middle of a group commit would otherwise make half of
it durable (rows without their next_seq and counters), and a fetch must never see rows that may still
be rolled back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from agent.sqlite import Database
from agent.state import counter_key
from protocol.events import Lane
from runtime.clock import Clock, SystemClock

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    lane TEXT NOT NULL,
    topic TEXT NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_lane ON outbox (lane, seq);
CREATE TABLE IF NOT EXISTS rejected (
    seq INTEGER PRIMARY KEY,
    topic TEXT NOT NULL,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""


class OutboxFull(Exception):
    """The event was NOT taken (the critical lane is full, or the disk refused the commit). The caller
    must refuse it visibly."""


@dataclass(frozen=True, slots=True)
class Row:
    seq: int
    topic: str
    body: bytes


@dataclass(slots=True)
class _Pending:
    seq: int
    lane: Lane
    topic: str
    body: bytes
    counter: str | None
    done: asyncio.Future[None]


Build = Callable[[int], tuple[str, bytes]]


class Outbox:
    def __init__(
        self,
        db: Path | Database,
        *,
        max_critical: int = 200_000,
        max_telemetry: int = 20_000,
        commit_interval_ms: int = 0,
        commit_batch: int = 256,
        clock: Clock | None = None,
        executor: Executor | None = None,
    ) -> None:
        """``db``: the device's database (shared with its StateStore), or a path to open one on."""
        self.db = db if isinstance(db, Database) else Database(db, executor)
        self.path = self.db.path
        self.clock = clock or SystemClock()
        self.max = {Lane.CRITICAL: max_critical, Lane.TELEMETRY: max_telemetry}
        self.commit_interval = commit_interval_ms / 1000
        self.commit_batch = commit_batch
        self.counts = {Lane.CRITICAL: 0, Lane.TELEMETRY: 0}
        self.dropped = 0
        self._next_seq = 0
        self._committed_seq = -1  # the highest seq committed by this process (rows the link may fetch)
        self._committed = asyncio.Event()  # set by each commit that added rows
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self.write_errors = 0  # commits that failed (each refused its batch)
        self._failing = False

    # -- lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        db = self.db
        if not db.is_open:
            await db.open()
        async with db.transaction():
            await db.executescript(SCHEMA)
        # The rows themselves bound next_seq too: a seq is never handed out twice, whatever the meta says.
        cur = await db.execute("SELECT MAX(seq) FROM (SELECT seq FROM outbox UNION ALL SELECT seq FROM rejected)")
        row = await cur.fetchone()
        highest = -1 if row is None or row[0] is None else int(row[0])
        self._next_seq = max(await db.meta("next_seq"), highest + 1)
        self._committed_seq = self._next_seq - 1
        self.dropped = await db.meta("dropped")
        await self._recount()
        self._closing = False
        self._committer = asyncio.create_task(self._commit_loop(), name="outbox-commit")

    async def close(self) -> None:
        """Commit what was taken, then close. Never cancels a commit half-way: a punch being committed
        when the agent stops is either in the file or its append() raised."""
        if self._committer is not None:
            self._closing = True
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._committer)
            self._committer = None
        if self._pending:
            with contextlib.suppress(OutboxFull):  # its appends were refused and told so
                await self._flush()
        await self.db.close()

    # -- what the link reads -------------------------------------------------------------------------
    @property
    def next_seq(self) -> int:
        """The seq the next event will get."""
        return self._next_seq

    @property
    def committed_seq(self) -> int:
        """The highest seq committed since the outbox opened (or the last one before it)."""
        return self._committed_seq

    @property
    def last_seq(self) -> int:
        """The highest seq handed out so far (-1: none ever)."""
        return self._next_seq - 1

    async def wait_committed(self, after_seq: int, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until an event beyond ``after_seq`` is committed; False if ``timeout`` (real seconds) passed
        first. No query and no timer while nothing happens: the committer wakes the waiter."""
        try:
            async with asyncio.timeout(timeout):
                while self._committed_seq <= after_seq:
                    self._committed.clear()
                    await self._committed.wait()
        except TimeoutError:
            return False
        return True

    # -- appending ---------------------------------------------------------------------------------
    async def append(self, lane: Lane, build: Build, counter: str | None = None) -> int:
        """Take one event; returns its seq once the event is durably committed.

        ``build(seq)`` returns (topic, body). ``counter`` names a counter (StateStore.counter) incremented
        in the same transaction (a role's own progress, so a restart neither repeats nor skips work).
        """
        if lane is Lane.CRITICAL and self.counts[lane] + self._pending_count(lane) >= self.max[lane]:
            raise OutboxFull(f"outbox critical lane holds {self.max[lane]} events: the link has been down too long")
        seq = self._next_seq
        topic, body = build(seq)
        self._next_seq += 1
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(seq, lane, topic, body, counter, fut))
        self._wake.set()
        await asyncio.shield(fut)
        return seq

    def _pending_count(self, lane: Lane) -> int:
        return sum(1 for p in self._pending if p.lane is lane)

    async def _commit_loop(self) -> None:
        while not self._closing:
            await self._wake.wait()
            self._wake.clear()
            if self.commit_interval and 1 < len(self._pending) < self.commit_batch and not self._closing:
                # Several producers contend: an optional extra window to gather more of them. One event
                # waiting never waits here (commit_interval_ms is 0 by default: the previous commit's
                # fsync is the window).
                await asyncio.sleep(self.commit_interval)
            try:
                await self._flush()
            except OutboxFull as exc:  # disk full, I/O error: this batch was refused; the next one tries again
                self.write_errors += 1
                if not self._failing:
                    log.error("%s; events are refused until a commit succeeds", exc)
                self._failing = True
            else:
                if self._failing:
                    log.warning("outbox commits again after %d failed commits", self.write_errors)
                self._failing = False

    async def _flush(self) -> None:
        async with self.db.lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        db = self.db
        now = self.clock.now().timestamp()
        counters: dict[str, int] = {}
        for p in batch:
            if p.counter:
                counters[p.counter] = counters.get(p.counter, 0) + 1
        counts, dropped = dict(self.counts), self.dropped
        try:
            await db.executemany(
                "INSERT INTO outbox (seq, lane, topic, body, created) VALUES (?, ?, ?, ?, ?)",
                [(p.seq, p.lane.value, p.topic, p.body, now) for p in batch],
            )
            await db.set_meta("next_seq", batch[-1].seq + 1)
            for name, n in counters.items():
                await db.add_meta(counter_key(name), n)
            for p in batch:
                self.counts[p.lane] += 1
            await self._enforce_telemetry_bound()
            await db.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):  # a rollback that fails too leaves nothing committed either
                await db.rollback()
            self.counts, self.dropped = counts, dropped
            if self._next_seq == batch[-1].seq + 1:
                self._next_seq = batch[0].seq  # nothing was taken since: no gap in the seqs
            refused = OutboxFull(f"outbox {self.path} could not commit {len(batch)} events: {exc}")
            refused.__cause__ = exc
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(refused)
            raise refused from exc
        for p in batch:
            if not p.done.done():
                p.done.set_result(None)
        self._committed_seq = max(self._committed_seq, batch[-1].seq)
        self._committed.set()

    async def _enforce_telemetry_bound(self) -> None:
        excess = self.counts[Lane.TELEMETRY] - self.max[Lane.TELEMETRY]
        if excess <= 0:
            return
        await self.db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE lane = ? ORDER BY seq LIMIT ?)",
            (Lane.TELEMETRY.value, excess),
        )
        self.counts[Lane.TELEMETRY] -= excess
        self.dropped += excess
        await self.db.set_meta("dropped", self.dropped)
        log.warning("outbox telemetry lane full: dropped %d oldest (total %d)", excess, self.dropped)

    # -- reading and retiring ----------------------------------------------------------------------
    async def fetch(self, after_seq: int, limit: int) -> list[Row]:
        async with self.db.lock:
            cur = await self.db.execute(
                "SELECT seq, topic, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            )
            rows = await cur.fetchall()
        return [Row(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    async def confirm(self, ranges: Sequence[tuple[int, int]]) -> int:
        """The store has these seqs: forget them. Returns how many rows left the outbox."""
        removed = 0
        async with self.db.transaction() as db:
            for first, last in ranges:
                cur = await db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last))
                removed += max(cur.rowcount, 0)
        if removed:
            async with self.db.lock:
                await self._recount()
        return removed

    async def oldest_seq(self) -> int | None:
        """The seq that has waited longest, None when the outbox is empty."""
        async with self.db.lock:
            row = await (await self.db.execute("SELECT MIN(seq) FROM outbox")).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    async def reject(self, seq: int, reason: str) -> None:
        """The broker refused this event for good (e.g. not authorised): keep it aside, with why."""
        async with self.db.transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO rejected (seq, topic, body, reason, at) "
                "SELECT seq, topic, body, ?, ? FROM outbox WHERE seq = ?",
                (reason, self.clock.now().timestamp(), seq),
            )
            await db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        async with self.db.lock:
            await self._recount()

    @property
    def depth(self) -> int:
        return self.counts[Lane.CRITICAL] + self.counts[Lane.TELEMETRY]

    async def rejected_count(self) -> int:
        async with self.db.lock:
            row = await (await self.db.execute("SELECT COUNT(*) FROM rejected")).fetchone()
        return int(row[0]) if row else 0

    # -- helpers -----------------------------------------------------------------------------------
    def _require(self) -> Database:
        """The open database (the chaos suite sets a page limit on its connection)."""
        self.db.require()
        return self.db

    async def _recount(self) -> None:
        cur = await self.db.execute("SELECT lane, COUNT(*) FROM outbox GROUP BY lane")
        counts = {Lane(lane): int(n) for lane, n in await cur.fetchall()}
        self.counts = {lane: counts.get(lane, 0) for lane in Lane}
