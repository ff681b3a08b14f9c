"""The durable outbox: every event is committed here before it is published, and leaves only when
the central store confirms it (see protocol.envelope.StoredAck for why PUBACK is not enough).

Two lanes: ``critical`` (punches, ratings, faults) is never dropped: when full, ``append`` refuses
with OutboxFull so the device can tell the person to retry; ``telemetry`` drops its oldest rows when
full, and counts every drop. Appends are group-committed: callers wait for their commit, but one
fsync covers a batch (an SD card's fsync is slow; platform-notes.md).

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
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

from protocol.events import Lane

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
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
-- The rest of the agent's durable state lives in the same file: the applied config (kv) and the
-- commands it has taken, so a command id runs at most once, across restarts too.
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands_seen (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    at REAL NOT NULL
);
"""
COMMANDS_KEPT_S = 30 * 86_400


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
        path: Path,
        *,
        max_critical: int = 200_000,
        max_telemetry: int = 20_000,
        commit_interval_ms: int = 20,
        commit_batch: int = 256,
    ) -> None:
        self.path = path
        self.max = {Lane.CRITICAL: max_critical, Lane.TELEMETRY: max_telemetry}
        self.commit_interval = commit_interval_ms / 1000
        self.commit_batch = commit_batch
        self.counts = {Lane.CRITICAL: 0, Lane.TELEMETRY: 0}
        self.dropped = 0
        self.next_seq = 0
        self.changed = asyncio.Event()  # set after each commit that added rows
        self._db: aiosqlite.Connection | None = None
        self._pending: list[_Pending] = []
        self._wake = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self._closing = False
        self._lock = asyncio.Lock()  # one transaction at a time on the connection
        self.write_errors = 0  # commits that failed (each refused its batch)
        self._failing = False

    # -- lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(self.path)
        await db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed punch survives power loss, not only a process crash.
        await db.execute("PRAGMA synchronous=FULL")
        await db.executescript(SCHEMA)
        await db.commit()
        self._db = db
        # The rows themselves bound next_seq too: a seq is never handed out twice, whatever the meta says.
        cur = await db.execute("SELECT MAX(seq) FROM (SELECT seq FROM outbox UNION ALL SELECT seq FROM rejected)")
        row = await cur.fetchone()
        highest = -1 if row is None or row[0] is None else int(row[0])
        self.next_seq = max(await self._meta("next_seq"), highest + 1)
        self.dropped = await self._meta("dropped")
        await self._recount()
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
        if self._db is not None:
            await self._db.close()
            self._db = None

    # -- appending ---------------------------------------------------------------------------------
    async def append(self, lane: Lane, build: Build, counter: str | None = None) -> int:
        """Take one event; returns its seq once the event is durably committed.

        ``build(seq)`` returns (topic, body). ``counter`` names a meta counter incremented in the same
        transaction (a role's own progress, so a restart neither repeats nor skips work).
        """
        if lane is Lane.CRITICAL and self.counts[lane] + self._pending_count(lane) >= self.max[lane]:
            raise OutboxFull(f"outbox critical lane holds {self.max[lane]} events: the link has been down too long")
        seq = self.next_seq
        topic, body = build(seq)
        self.next_seq += 1
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
            if len(self._pending) < self.commit_batch and self.commit_interval and not self._closing:
                await asyncio.sleep(self.commit_interval)
            self._wake.clear()
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
        async with self._lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        db = self._require()
        now = time.time()
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
            await self._set_meta("next_seq", batch[-1].seq + 1)
            for name, n in counters.items():
                await db.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                    (f"counter:{name}", n),
                )
            for p in batch:
                self.counts[p.lane] += 1
            await self._enforce_telemetry_bound()
            await db.commit()
        except Exception as exc:
            with contextlib.suppress(Exception):  # a rollback that fails too leaves nothing committed either
                await db.rollback()
            self.counts, self.dropped = counts, dropped
            if self.next_seq == batch[-1].seq + 1:
                self.next_seq = batch[0].seq  # nothing was taken since: no gap in the seqs
            refused = OutboxFull(f"outbox {self.path} could not commit {len(batch)} events: {exc}")
            refused.__cause__ = exc
            for p in batch:
                if not p.done.done():
                    p.done.set_exception(refused)
            raise refused from exc
        for p in batch:
            if not p.done.done():
                p.done.set_result(None)
        self.changed.set()

    async def _enforce_telemetry_bound(self) -> None:
        excess = self.counts[Lane.TELEMETRY] - self.max[Lane.TELEMETRY]
        if excess <= 0:
            return
        db = self._require()
        await db.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox WHERE lane = ? ORDER BY seq LIMIT ?)",
            (Lane.TELEMETRY.value, excess),
        )
        self.counts[Lane.TELEMETRY] -= excess
        self.dropped += excess
        await self._set_meta("dropped", self.dropped)
        log.warning("outbox telemetry lane full: dropped %d oldest (total %d)", excess, self.dropped)

    # -- reading and retiring ----------------------------------------------------------------------
    async def fetch(self, after_seq: int, limit: int) -> list[Row]:
        async with self._lock:
            cur = await self._require().execute(
                "SELECT seq, topic, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            )
            rows = await cur.fetchall()
        return [Row(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]

    async def confirm(self, ranges: Sequence[tuple[int, int]]) -> int:
        """The store has these seqs: forget them. Returns how many rows left the outbox."""
        removed = 0
        async with self._transaction() as db:
            for first, last in ranges:
                cur = await db.execute("DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last))
                removed += max(cur.rowcount, 0)
        if removed:
            async with self._lock:
                await self._recount()
        return removed

    async def oldest_seq(self) -> int | None:
        """The seq that has waited longest, None when the outbox is empty."""
        async with self._lock:
            cur = await self._require().execute("SELECT MIN(seq) FROM outbox")
            row = await cur.fetchone()
        return None if row is None or row[0] is None else int(row[0])

    async def reject(self, seq: int, reason: str) -> None:
        """The broker refused this event for good (e.g. not authorised): keep it aside, with why."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR REPLACE INTO rejected (seq, topic, body, reason, at) "
                "SELECT seq, topic, body, ?, ? FROM outbox WHERE seq = ?",
                (reason, time.time(), seq),
            )
            await db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
        async with self._lock:
            await self._recount()

    # -- the rest of the agent's durable state ------------------------------------------------------
    async def kv_get(self, key: str) -> str | None:
        async with self._lock:
            cur = await self._require().execute("SELECT value FROM kv WHERE key = ?", (key,))
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def kv_set(self, key: str, value: str) -> None:
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    async def command_state(self, command_id: str) -> str | None:
        async with self._lock:
            cur = await self._require().execute("SELECT state FROM commands_seen WHERE id = ?", (command_id,))
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def set_command_state(self, command_id: str, name: str, state: str) -> None:
        now = time.time()
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO commands_seen (id, name, state, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET state = excluded.state, at = excluded.at",
                (command_id, name, state, now),
            )
            await db.execute("DELETE FROM commands_seen WHERE at < ?", (now - COMMANDS_KEPT_S,))

    async def commands_in(self, state: str) -> list[tuple[str, str]]:
        async with self._lock:
            cur = await self._require().execute("SELECT id, name FROM commands_seen WHERE state = ?", (state,))
            return [(str(r[0]), str(r[1])) for r in await cur.fetchall()]

    @property
    def depth(self) -> int:
        return self.counts[Lane.CRITICAL] + self.counts[Lane.TELEMETRY]

    async def next_session(self) -> int:
        """A new MQTT session counter (Sparkplug's bdSeq), persisted before the CONNECT that uses it."""
        async with self._transaction():
            value = await self._meta("session") + 1
            await self._set_meta("session", value)
        return value

    async def counter(self, name: str) -> int:
        async with self._lock:
            return await self._meta(f"counter:{name}")

    async def rejected_count(self) -> int:
        async with self._lock:
            cur = await self._require().execute("SELECT COUNT(*) FROM rejected")
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One transaction, alone on the connection: committed if the block succeeds, else rolled back
        (a failed COMMIT leaves SQLite's transaction open, and the next one must not inherit it)."""
        async with self._lock:
            db = self._require()
            try:
                yield db
                await db.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await db.rollback()
                raise

    # -- helpers -----------------------------------------------------------------------------------
    def _require(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    async def _recount(self) -> None:
        cur = await self._require().execute("SELECT lane, COUNT(*) FROM outbox GROUP BY lane")
        counts = {Lane(lane): int(n) for lane, n in await cur.fetchall()}
        self.counts = {lane: counts.get(lane, 0) for lane in Lane}

    async def _meta(self, key: str) -> int:
        cur = await self._require().execute("SELECT value FROM meta WHERE key = ?", (key,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def _set_meta(self, key: str, value: int) -> None:
        await self._require().execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )
