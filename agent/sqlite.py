"""The device's SQLite file, reached from asyncio without a thread per connection.

Rule: every call on a connection runs where it cannot stall the loop on I/O, and no connection owns a
thread of its own. A file's calls run on an executor shared by every database of the process (one
thread by default: a device has one file; a simulator with thousands of agents passes its own); a
database in memory has no I/O to wait for, so its calls run inline on the loop. aiosqlite gave each
connection its own thread: 3,408 OS threads for 5,000 simulated agents (issue 20).

One lock serialises transactions on the connection (``transaction()``): a commit in the middle of
another caller's statements would make half of them durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
MEMORY = Path(":memory:")

META_SCHEMA = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"

_shared: ThreadPoolExecutor | None = None
_shared_lock = threading.Lock()


def shared_executor() -> ThreadPoolExecutor:
    """The process's one SQLite thread, made on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        return _shared


@dataclass(frozen=True, slots=True)
class Result:
    """A statement's rows (read at once, on the executor) and rowcount, read like a cursor."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


class Database:
    def __init__(self, path: Path, executor: Executor | None = None) -> None:
        self.path = path
        self.in_memory = str(path) == str(MEMORY)
        self._executor = executor
        self._conn: sqlite3.Connection | None = None
        self.lock = asyncio.Lock()  # one transaction at a time on the connection

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self) -> None:
        if not self.in_memory:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = await self._call(self._connect)
        if not self.in_memory:
            await self.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed punch survives power loss, not only a process crash.
            await self.execute("PRAGMA synchronous=FULL")
        await self.executescript(META_SCHEMA)
        await self.commit()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level "" (the default): a write opens a transaction that commit() or rollback() ends.
        return sqlite3.connect(str(self.path), check_same_thread=False)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await self._call(conn.close)

    # -- statements --------------------------------------------------------------------------------
    async def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        conn = self.require()

        def run() -> Result:
            cur = conn.execute(sql, params)
            try:
                return Result(cur.fetchall(), cur.rowcount)
            finally:
                cur.close()

        return await self._call(run)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        conn = self.require()
        await self._call(lambda: conn.executemany(sql, rows).close())

    async def executescript(self, script: str) -> None:
        conn = self.require()
        await self._call(lambda: conn.executescript(script).close())

    async def commit(self) -> None:
        await self._call(self.require().commit)

    async def rollback(self) -> None:
        await self._call(self.require().rollback)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Database]:
        """One transaction, alone on the connection: committed if the block succeeds, else rolled back
        (a failed COMMIT leaves SQLite's transaction open, and the next one must not inherit it)."""
        async with self.lock:
            self.require()
            try:
                yield self
                await self.commit()
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.rollback()
                raise

    # -- meta: small named integers (seqs, counters, the session) ------------------------------------
    async def meta(self, key: str) -> int:
        row = await (await self.execute("SELECT value FROM meta WHERE key = ?", (key,))).fetchone()
        return int(row[0]) if row else 0

    async def set_meta(self, key: str, value: int) -> None:
        await self.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def add_meta(self, key: str, n: int) -> None:
        await self.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
            (key, n),
        )

    # -- helpers -----------------------------------------------------------------------------------
    def require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"the database {self.path} is not open")
        return self._conn

    async def _call(self, fn: Callable[[], T]) -> T:
        if self.in_memory:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor or shared_executor(), fn)
