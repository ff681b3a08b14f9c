"""What the store refuses costs the messages that caused it, never the ingest of everyone else.

The rule: an error is either the store being *unavailable* (unreachable, overloaded, misconfigured:
retried with backoff, the same batch again, nothing acknowledged meanwhile) or the *data* being refused
(integrity, value range, encoding, a value the driver cannot adapt, an overflow: never retried as is).
A refused batch is split in halves until the offending items stand alone; everything else commits,
each offender comes back with the database's own message so the caller can dead-letter it.

The happy path is one ``write`` call. Splitting only starts after a data error and costs about
2 x log2(batch) extra transactions per offender.

Interface (kept narrow so the ingest stages of issue 19 can adopt it unchanged): ``classify(exc)`` and
``commit_isolated(items, write, retry)``; the caller decides what an item is and how items become a write.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

from sqlalchemy import exc as sa_exc

from protocol.bounds import printable
from runtime.backoff import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# SQLSTATE classes (PostgreSQL appendix A) that depend on the values sent, not on the server's state:
# 22 data exception (range, encoding, too long, NUL), 23 integrity constraint, 54 program limit
# exceeded (an index row or a statement too large for the values in it).
DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
# sqlite3 raises these for a value it cannot take; OperationalError and plain DatabaseError mean the
# file is locked, full, unreadable or missing a table: the store's state, not the message's.
SQLITE_DATA_ERRORS = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError)


class StoreFault(StrEnum):
    DATA = "data"  # the values were refused: isolate the offender, never retry as is
    UNAVAILABLE = "unavailable"  # the store cannot take anything now: retry the same batch later


class StopCommitting(Exception):
    """Raised by a retry policy to give up (the consumer is stopping): nothing more is committed."""


def classify(exc: BaseException) -> StoreFault:
    """Data error or store unavailable, through SQLAlchemy's wrappers and the drivers' own types."""
    for err in _chain(exc):
        sqlstate = _sqlstate(err)
        if sqlstate:
            return StoreFault.DATA if sqlstate[:2] in DATA_SQLSTATE_CLASSES else StoreFault.UNAVAILABLE
        if isinstance(err, SQLITE_DATA_ERRORS):
            return StoreFault.DATA
        if isinstance(err, sqlite3.Error):
            return StoreFault.UNAVAILABLE
    for err in _chain(exc):
        if isinstance(err, OSError | TimeoutError | sa_exc.DisconnectionError | sa_exc.TimeoutError):
            return StoreFault.UNAVAILABLE  # connection refused or reset, pool exhausted
        if isinstance(err, sa_exc.DBAPIError) and err.connection_invalidated:
            return StoreFault.UNAVAILABLE
        if isinstance(err, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.InternalError):
            return StoreFault.UNAVAILABLE
        if type(err).__module__.startswith("asyncpg") and "Connection" in type(err).__name__:
            return StoreFault.UNAVAILABLE  # asyncpg's connection errors carry no SQLSTATE
    # What is left was raised before the server saw the values: a bind processor or the driver refused
    # one (StatementError wrapping a ValueError, an OverflowError past 64 bits, a UnicodeEncodeError), or
    # a bug on the way to the store (a rule). Either happens again with the same input, so retrying would
    # stall every device; isolating costs only the message behind it.
    return StoreFault.DATA


def describe(exc: BaseException) -> str:
    """The database's (or driver's) own message, one line, storable in any column."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return printable(f"{type(inner).__name__}: {text}")[:1000]


def _chain(exc: BaseException) -> list[BaseException]:
    """The error, what SQLAlchemy wrapped (``orig``) and its causes, without looping."""
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop(0)
        if err is None or any(err is seen for seen in out) or len(out) > 16:
            continue
        out.append(err)
        todo += [getattr(err, "orig", None), err.__cause__, err.__context__]
    return out


def _sqlstate(err: BaseException) -> str | None:
    # asyncpg and psycopg 3 say ``sqlstate``, psycopg2 ``pgcode``; SQLAlchemy's asyncpg adapter copies it.
    code = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
    return code if isinstance(code, str) and len(code) == 5 else None


@dataclass(slots=True)
class Outcome(Generic[T, R]):
    """What ``commit_isolated`` did: items committed (in order), items refused with the database's
    message, and the result of each successful write."""

    committed: list[T] = field(default_factory=list)
    rejected: list[tuple[T, str]] = field(default_factory=list)
    results: list[R] = field(default_factory=list)
    writes: int = 0


class _Refused(Exception):
    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


async def commit_isolated(
    items: Sequence[T],
    write: Callable[[Sequence[T]], Awaitable[R]],
    retry: Callable[[BaseException], Awaitable[None]],
) -> Outcome[T, R]:
    """Commit ``items`` with ``write`` (one transaction per call), isolating what the store refuses.

    ``retry(exc)`` is awaited while the store is unavailable (it sleeps, or raises StopCommitting to
    give up: then what was already committed stays committed, the rest was not, and StopCommitting
    propagates). A data error splits the items in halves, left first so order is kept."""
    out: Outcome[T, R] = Outcome()
    if items:
        await _isolate(list(items), write, retry, out)
    return out


async def _isolate(
    items: list[T],
    write: Callable[[Sequence[T]], Awaitable[R]],
    retry: Callable[[BaseException], Awaitable[None]],
    out: Outcome[T, R],
) -> None:
    try:
        out.results.append(await _attempt(items, write, retry, out))
        out.committed += items
    except _Refused as refused:
        if len(items) == 1:
            out.rejected.append((items[0], describe(refused.cause)))
            return
        mid = len(items) // 2
        await _isolate(items[:mid], write, retry, out)
        await _isolate(items[mid:], write, retry, out)


async def _attempt(
    items: list[T],
    write: Callable[[Sequence[T]], Awaitable[R]],
    retry: Callable[[BaseException], Awaitable[None]],
    out: Outcome[T, R],
) -> R:
    while True:
        out.writes += 1
        try:
            return await write(items)
        except Exception as exc:
            if classify(exc) is StoreFault.DATA:
                if len(items) == 1:
                    log.warning("the store refused a message: %s", describe(exc))
                raise _Refused(exc) from exc
            await retry(exc)


STORE_BACKOFF = Backoff(0.2, 10.0)  # the store is usually back within seconds (a restart, a lock)


class StoreRetry:
    """The retry policy for an unavailable store: the project's one backoff formula (runtime/backoff.py); wakes
    at once and gives up (StopCommitting) when ``stopping`` is set, so a stalled consumer stops within its
    unit's timeout."""

    def __init__(
        self,
        stopping: asyncio.Event,
        on_wait: Callable[[BaseException, float], None],
        backoff: Backoff = STORE_BACKOFF,
    ) -> None:
        self.stopping = stopping
        self.on_wait = on_wait
        self.backoff = backoff
        self.attempt = 0

    async def __call__(self, exc: BaseException) -> None:
        if self.stopping.is_set():
            raise StopCommitting("stopping while the store is unavailable") from exc
        delay = self.backoff.delay(self.attempt)
        self.attempt += 1
        self.on_wait(exc, delay)
        try:
            await asyncio.wait_for(self.stopping.wait(), delay)
        except TimeoutError:
            return
        raise StopCommitting("stopping while the store is unavailable") from exc
