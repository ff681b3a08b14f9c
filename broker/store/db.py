"""The store: one code path for SQLite (embedded default) and PostgreSQL (scale-out).

Every write of a consumer batch is one transaction: events (idempotent on (site, device, id)), dead
letters, presence changes, and whatever the caller runs after them in the same transaction (``then``: the
ingest's rules stage), told exactly what was new (``Written``). The consumer acknowledges the batch's MQTT
messages only after it commits. The store runs no rules of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from broker.store import commands as cmd_sql
from broker.store.events_insert import insert_new_events, touch_devices
from broker.store.keys import DeviceKey, EventRef
from broker.store.schema import dead_letters, devices, presence_history
from broker.store.sqlite_inline import write_locked
from protocol.commands import Command, CommandAck, ConfigReport
from protocol.envelope import Presence, StatusMessage

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
STALE = "stale"
REGISTERED = "registered"  # presence of a row IT registered ahead of the device's first connection


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    site: str
    device: str
    status: StatusMessage
    retained: bool
    at: datetime

    @property
    def key(self) -> DeviceKey:
        return DeviceKey(self.site, self.device)


@dataclass(frozen=True, slots=True)
class Transition:
    key: DeviceKey
    state: str
    session: int
    at: datetime
    reason: str


@dataclass(slots=True)
class Batch:
    """What one consumer flush commits. ``seen`` is the last receive time of anything per device."""

    events: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[StatusUpdate] = field(default_factory=list)
    seen: dict[DeviceKey, datetime] = field(default_factory=dict)
    acks: list[tuple[DeviceKey, CommandAck, datetime]] = field(default_factory=list)
    config_reports: list[tuple[DeviceKey, bool, ConfigReport, datetime]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events) + len(self.dead) + len(self.statuses)


@dataclass(frozen=True, slots=True)
class Written:
    """What a write changed: the events new to the store (a re-delivered one is not) and the presence
    transitions it made. What runs after the write, in its transaction, reads this and nothing else."""

    new_events: frozenset[EventRef] = frozenset()
    transitions: tuple[Transition, ...] = ()


# Runs inside the write's transaction, after it: the ingest's rules stage.
Then = Callable[[AsyncConnection, Written], Awaitable[None]]


def _insert_ignore(conn: AsyncConnection, table: sa.Table) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


_IGNORING: dict[tuple[str, str, tuple[str, ...]], Any] = {}  # (dialect, table, returned columns) -> statement


def insert_ignoring(conn: AsyncConnection, table: sa.Table, *returning: sa.Column[Any]) -> Any:
    """``_insert_ignore(conn, table).returning(*returning)``, built once per dialect and executed with the rows
    (SQLAlchemy's insertmanyvalues): a statement built anew, or one whose text grows with its rows
    (``.values(rows)``), costs its construction, cache key and compile on every batch (issue 19)."""
    key = (conn.dialect.name, table.name, tuple(c.name for c in returning))
    if key not in _IGNORING:
        stmt = _insert_ignore(conn, table)
        _IGNORING[key] = stmt.returning(*returning) if returning else stmt
    return _IGNORING[key]


def heard_from() -> sa.ColumnElement[bool]:
    """A device row that is more than a registration. IT may register a device's attributes before it ever
    connects (broker/rules/devices.py): its row's presence is ``registered`` until it first speaks (an event, a
    status). Such a device is not in service yet, so it is not counted (SLA report, hall-wide outages, tasks), and
    its life (``first_seen``) starts at its first contact, not at the registration."""
    return devices.c.presence != REGISTERED


class Store:
    def __init__(self, engine: AsyncEngine, stale_factor: float = 1.5) -> None:
        self.engine = engine
        self.stale_factor = stale_factor
        self.heartbeat_s: dict[str, float] = {}  # by the devices.key text
        self.known: set[str] = set()  # devices.key texts with a devices row
        self.roles: dict[str, str] = {}  # key text -> role from its birth: the device class of its incidents
        # The batches' own connection, kept between writes: checking one out of the pool and back costs every
        # batch SQLAlchemy's pool work and, on return, a reset ROLLBACK (one more trip to aiosqlite's thread).
        # Only a write that succeeded keeps it; a failed one gives it back, so the pool tests or replaces it.
        self._writer: AsyncConnection | None = None
        self._writing = asyncio.Lock()

    @classmethod
    async def open(cls, url: str, stale_factor: float = 1.5) -> Store:
        """Raises FileNotFoundError for an SQLite file whose directory does not exist (the commonest typo in a
        config), before any connection is tried; a failed start leaves no pool behind."""
        _require_sqlite_directory(url)
        engine = create_engine(url)
        try:
            await migrate(engine)
            store = cls(engine, stale_factor)
            async with engine.connect() as conn:
                c = devices.c
                rows = (await conn.execute(sa.select(c.key, c.heartbeat_s, c.role, heard_from().label("heard")))).all()
                store.heartbeat_s = {r.key: float(r.heartbeat_s) for r in rows}
                store.roles = {r.key: r.role for r in rows}
                store.known = {r.key for r in rows if r.heard}  # a registered device not heard yet is still new
        except BaseException:
            await engine.dispose()
            raise
        return store

    async def close(self) -> None:
        async with self._writing:
            if self._writer is not None:
                await self._writer.close()
                self._writer = None
        await self.engine.dispose()

    # -- the consumer's batch ----------------------------------------------------------------------
    async def write(self, batch: Batch, then: Then | None = None) -> Written:
        """One transaction: the batch, then ``then`` (told what was new). Returns what was new."""
        async with self._writing:
            held, self._writer = self._writer, None
            if held is not None:
                try:
                    return await self._commit(held, batch, then)
                except sa_exc.DBAPIError as exc:
                    # The kept connection died while idle (a database restart): what the pool's pre-ping would
                    # have caught at a checkout. Anything else is the store's answer to this batch.
                    if not exc.connection_invalidated:
                        raise
            return await self._commit(await self.engine.connect(), batch, then)

    async def _commit(self, conn: AsyncConnection, batch: Batch, then: Then | None) -> Written:
        try:
            async with conn.begin(), write_locked(conn):
                written, registered = await self._write(conn, batch, then)
        except BaseException:
            await conn.close()
            raise
        self._writer = conn
        self.known |= registered  # only once committed: a rolled-back batch registers again next time
        return written

    async def _write(self, conn: AsyncConnection, batch: Batch, then: Then | None) -> tuple[Written, set[str]]:
        """The batch's statements in ``conn``'s transaction; also the device keys it registered."""
        transitions: list[Transition] = []
        registered = await self._register(conn, batch)
        new_events = await insert_new_events(conn, batch.events) if batch.events else frozenset()
        if batch.dead:
            await conn.execute(dead_letters.insert(), batch.dead)
        for key, ack, at in batch.acks:
            await cmd_sql.apply_ack(conn, key.text, ack, at)
        for key, applied, report, at in batch.config_reports:
            await cmd_sql.apply_config_report(conn, key.text, applied, report, at)
        for upd in batch.statuses:
            t = await self._apply_status(conn, upd)
            if t is not None:
                transitions.append(t)
        transitions += await self._touch(conn, batch.seen)
        if transitions:
            await conn.execute(presence_history.insert(), [_history(t) for t in transitions])
        written = Written(new_events, tuple(transitions))
        if then is not None:
            await then(conn, written)
        return written, registered

    async def _register(self, conn: AsyncConnection, batch: Batch) -> set[str]:
        """Every device heard of gets a row, whether by an event or by a status (a retained birth may
        be the first thing a new consumer hears of a device)."""
        new = {k: at for k, at in batch.seen.items() if k.text not in self.known}
        for upd in batch.statuses:
            if upd.key.text not in self.known:
                new.setdefault(upd.key, upd.at)
        if new:
            await conn.execute(
                _insert_ignore(conn, devices),
                [{"key": k.text, "site": k.site, "device": k.device, "first_seen": at} for k, at in new.items()],
            )
            # A row IT registered before the device spoke starts its life now, not at the registration.
            c = devices.c
            await conn.execute(
                devices.update()
                .where(c.key == sa.bindparam("k"), c.presence == REGISTERED)
                .values(first_seen=sa.bindparam("at"), presence="unknown"),
                [{"k": k.text, "at": at} for k, at in new.items()],
            )
        return {k.text for k in new}

    async def _apply_status(self, conn: AsyncConnection, upd: StatusUpdate) -> Transition | None:
        """Presence from ``status``. A birth is the live connection speaking; a Will or goodbye counts only
        if it belongs to the current session or a newer one: a late Will of an old session is ignored.
        A retained status replayed to a (re)started consumer is old news unless its session is newer."""
        s = upd.status
        c = devices.c
        key = upd.key.text
        cond = c.key == key
        if s.state is Presence.ONLINE:
            cond &= c.session < s.session if upd.retained else sa.or_(c.session != s.session, c.presence != "online")
            values: dict[str, Any] = {
                "heartbeat_s": s.heartbeat_s,
                "role": s.role,
                "agent_version": s.agent_version,
                "boot_id": s.boot_id,
                "last_seen": upd.at,
                "stale_after": upd.at + timedelta(seconds=self.stale_factor * s.heartbeat_s),
            }
            self.heartbeat_s[key] = s.heartbeat_s
            self.roles[key] = s.role
            if not upd.retained:
                # A live birth of the current session may re-announce what changed (the heartbeat
                # interval after a config update): take it, without a presence transition.
                await conn.execute(devices.update().where(c.key == key, c.session == s.session).values(**values))
        else:
            cond &= (c.session <= s.session) & (c.presence != s.state.value)
            values = {}
        result = await conn.execute(
            devices.update()
            .where(cond)
            .values(presence=s.state.value, session=s.session, presence_since=upd.at, **values)
        )
        if result.rowcount != 1:
            log.debug("status %s/%d of %s changes nothing", s.state, s.session, upd.key)
            return None
        reason = {"online": "birth", "offline": "will (connection lost)", "shutdown": "clean shutdown"}
        return Transition(upd.key, s.state.value, s.session, upd.at, reason[s.state.value])

    async def _touch(self, conn: AsyncConnection, seen: dict[DeviceKey, datetime]) -> list[Transition]:
        """Anything a device sends proves it alive: move its stale deadline, and revive it if stale."""
        if not seen:
            return []
        factor, heartbeat = self.stale_factor, self.heartbeat_s
        now = max(seen.values())
        revived = await touch_devices(
            conn,
            [(k.text, at, at + timedelta(seconds=factor * heartbeat.get(k.text, 60.0))) for k, at in seen.items()],
            now,
        )
        return [
            Transition(DeviceKey(site, device), "online", session, now, "heartbeat resumed")
            for site, device, session in revived
        ]

    async def sweep_stale(self, now: datetime, then: Then | None = None) -> list[Transition]:
        """Online devices whose heartbeat is overdue are ``stale``: connected (no Will) but not working.
        ``then`` runs in the same transaction when something changed (the rules stage)."""
        c = devices.c
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                devices.update()
                .where(c.presence == "online", c.stale_after < now)
                .values(presence=STALE, presence_since=now)
                .returning(c.site, c.device, c.session)
            )
            out = [Transition(DeviceKey(r.site, r.device), STALE, r.session, now, "heartbeat overdue") for r in rows]
            if out:
                await conn.execute(presence_history.insert(), [_history(t) for t in out])
                if then is not None:
                    await then(conn, Written(transitions=tuple(out)))
        return out

    async def queued_commands(self, now: datetime, older_than_s: float) -> list[tuple[DeviceKey, Command]]:
        return await cmd_sql.queued_commands(self.engine, now, older_than_s)

    async def expire_commands(self, now: datetime, grace_s: float = 0.0) -> list[tuple[str, str]]:
        async with self.engine.begin() as conn:
            return await cmd_sql.expire_commands(conn, now, grace_s)

    # -- reads -------------------------------------------------------------------------------------
    async def fetch(self, query: sa.Executable) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(query)).all())

    async def scalar(self, query: sa.Executable) -> Any:
        async with self.engine.connect() as conn:
            return (await conn.execute(query)).scalar()


def _history(t: Transition) -> dict[str, Any]:
    return {"key": t.key.text, "state": t.state, "session": t.session, "at": t.at, "reason": t.reason}


# How long an SQLite write waits for another process's lock before failing "database is locked". The
# consumer retries that failure with backoff anyway; a longer wait only holds a stopping consumer inside the
# driver's thread, where no signal reaches it: 30 s here made SIGTERM take over the unit's TimeoutStopSec.
SQLITE_BUSY_S = 5


def _require_sqlite_directory(url: str) -> None:
    """SQLite cannot create a file in a directory that is missing, and aiosqlite's failed connect leaves its
    thread to answer after a short-lived loop (a CLI command's) has closed: a traceback from a thread after the
    command's own error. So the directory is checked first, and the error names it."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database.startswith(":"):
        return
    if parsed.query.get("uri"):  # a file: URI names its path its own way; SQLite reports on it
        return
    directory = Path(parsed.database).parent
    if not directory.is_dir():
        raise FileNotFoundError(f"the SQLite store's directory {directory} does not exist (store.url)")


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        # Not bound to aiosqlite's thread: the batch's small statements run on the loop once it holds the write
        # lock (broker/store/sqlite_inline.py), never at the same time as the thread.
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_S, "check_same_thread": False})

        @sa_event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # WAL: readers (the API, the demo's view) never block the consumer's writes.
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_S * 1000}")
            # A statement that writes many rows inside a transaction keeps the pages it changes in a statement
            # journal; past 64 KiB SQLite spilled it to a temporary file, opened, written and unlinked for every
            # batch's insert (strace at 2,000 events/s: two fifths of the consumer's pwrite calls, one file a batch).
            # In memory it is a few MB at most (one statement's pages) and no system calls.
            cur.execute("PRAGMA temp_store=MEMORY")
            cur.close()

        return engine
    return create_async_engine(url, pool_size=5, max_overflow=5, pool_pre_ping=True)


def _run_migrations(sync_conn: sa.Connection) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = sync_conn
    command.upgrade(cfg, "head")


async def migrate(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Two consumers starting at once must not both create the tables.
            await conn.execute(sa.text("SELECT pg_advisory_xact_lock(4801)"))
        await conn.run_sync(_run_migrations)
