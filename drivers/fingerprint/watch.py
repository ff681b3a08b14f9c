"""Waiting for a finger: one thread per process reads whether a finger is on each watched sensor, and wakes the
event loop only when one is.

A ZFM / R30x module on USB has no finger-down signal on its bulk interface (the touch line of an R503 or R307 is a
separate wire): the host asks with GenImg, which answers "no finger" at once. Asked from the event loop, every
poll of an idle terminal was a thread-pool hop and back, an event-loop turn, a timer and a full scan() call: about
five wakeups and 0.2 % of a core for a sensor nobody touched (issue 20). Here an idle poll is one timed wait in
this thread and one GenImg; the loop sleeps until a finger is there, and the image that GenImg took is the one
the scan then reads (ZfmReader.touched), so a press costs no extra capture and is read as quickly as before.

One thread serves every reader of the process (the fleet simulator runs thousands of terminals on one loop): a
reader whose lock is held (an enrolment owns the sensor) is skipped until its next turn, never waited for, so no
reader's call stalls the others' polls. The thread ends when nothing is watched.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from drivers.fingerprint.zfm import ZfmReader

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Wait:
    """One coroutine waiting for a finger on one reader. ``empty_seen``: a poll found the sensor empty."""

    reader: ZfmReader
    every_s: float
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[bool]
    empty_seen: bool = False
    given_up: bool = field(default=False)  # the coroutine was cancelled: the thread drops it at its turn


class FingerWatch:
    """Polls the sensors of the readers waited on, each every ``every_s``, in one thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, _Wait]] = []  # (when, tie-break, wait): a heap
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    async def press(self, reader: ZfmReader, every_s: float) -> bool:
        """Return once a finger is on ``reader``'s sensor (its image taken: the next scan() reads it), saying
        whether a poll found the sensor empty first (a new press, not the finger that was there). The first
        poll is at once. Raises what the reader raises (FingerError: not found, disconnected, ...)."""
        loop = asyncio.get_running_loop()
        wait = _Wait(reader, every_s, loop, loop.create_future())
        self._schedule(time.monotonic(), wait)
        try:
            return await wait.future
        finally:
            wait.given_up = True

    @property
    def running(self) -> bool:
        """Whether the thread is alive (it ends when nothing is watched)."""
        with self._cond:
            return self._thread is not None

    def _schedule(self, at: float, wait: _Wait) -> None:
        with self._cond:
            heapq.heappush(self._due, (at, next(self._order), wait))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="finger-watch", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while (due := self._next()) is not None:
            at, wait = due
            if self._poll(wait):
                self._schedule(max(at + wait.every_s, time.monotonic()), wait)

    def _next(self) -> tuple[float, _Wait] | None:
        """The next wait whose turn has come, sleeping until it does; None (and the thread ends) when none is left."""
        with self._cond:
            while self._due:
                at, _, wait = self._due[0]
                if wait.given_up:
                    heapq.heappop(self._due)
                    continue
                delay = at - time.monotonic()
                if delay <= 0:
                    heapq.heappop(self._due)
                    return at, wait
                self._cond.wait(delay)
            self._thread = None
            return None

    def _poll(self, wait: _Wait) -> bool:
        """One look at the sensor; whether to look again at the next turn."""
        try:
            present = wait.reader.touched()
        except Exception as exc:  # the reader's FingerError, or a bug: either way the waiting coroutine raises it
            _settle(wait, exc)
            return False
        if present:
            _settle(wait, wait.empty_seen)
            return False
        if present is False:
            wait.empty_seen = True
        return True  # empty, or the reader was busy with another call


def _settle(wait: _Wait, outcome: bool | BaseException) -> None:
    def settle() -> None:
        if wait.future.done():
            return
        if isinstance(outcome, BaseException):
            wait.future.set_exception(outcome)
        else:
            wait.future.set_result(outcome)

    try:
        wait.loop.call_soon_threadsafe(settle)
    except RuntimeError:  # the loop closed meanwhile: nobody waits any more
        log.debug("finger watch: the waiting loop is closed")


WATCH = FingerWatch()
"""The process's watch: every terminal of the process shares its thread."""
