"""One runner for the centre's background jobs: start, stop and failures handled once, for every job.

The rules:
- a job is a name, a schedule (every ``interval_s``, and at once when its ``wake`` event is set) and
  ``async run_once(now)``; it keeps no loop of its own;
- a failing run is logged, counted (``failures[name]``, exported as a metric) and retried after a capped,
  jittered backoff instead of the interval; it never stops another job or the ingest;
- stop cancels, then awaits, in the reverse of the start order, by name (never by list position): a job whose
  run may not be cut half-way (a notification being sent) gets ``stop_grace_s`` to finish the run first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from broker.ingest.isolation import StoreFault, classify
from runtime.backoff import Backoff

log = logging.getLogger(__name__)

FAILURE_BACKOFF = Backoff(1.0, 60.0)


class Job(Protocol):
    """What the runner needs of a job. ``wake`` (optional) runs it before its interval is up."""

    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> float: ...

    async def run_once(self, now: datetime) -> None: ...


@dataclass(slots=True)
class JobStats:
    runs: int = 0
    failures: int = 0
    last_error: str = ""
    running: bool = False


@dataclass(frozen=True, slots=True)
class _Running:
    job: Job
    task: asyncio.Task[None]
    stopping: asyncio.Event


class JobRunner:
    """``async with JobRunner(now) as jobs: jobs.start(job) ...``: every job started is stopped on exit."""

    def __init__(self, now: Callable[[], datetime], backoff: Backoff = FAILURE_BACKOFF) -> None:
        self._now = now
        self._backoff = backoff
        self._running: dict[str, _Running] = {}  # insertion order is the start order
        self.stats: dict[str, JobStats] = {}

    async def __aenter__(self) -> JobRunner:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start(self, job: Job) -> None:
        if job.name in self._running:
            raise ValueError(f"a job named {job.name!r} is already running")
        stats = self.stats.setdefault(job.name, JobStats())
        stopping = asyncio.Event()
        task = asyncio.create_task(self._loop(job, stats, stopping), name=f"job-{job.name}")
        self._running[job.name] = _Running(job, task, stopping)

    def names(self) -> list[str]:
        return list(self._running)

    async def stop(self) -> None:
        """Reverse start order: later jobs may depend on earlier ones (deliveries on what the rules queued)."""
        for name in reversed(list(self._running)):
            await self.stop_job(name)

    async def stop_job(self, name: str) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        running.stopping.set()  # a job between runs ends now; one in a run may finish it within its grace
        grace = float(getattr(running.job, "stop_grace_s", 0.0))
        if grace > 0:
            await asyncio.wait({running.task}, timeout=grace)
        running.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running.task

    async def _loop(self, job: Job, stats: JobStats, stopping: asyncio.Event) -> None:
        failures = 0
        delay = job.interval_s
        while not stopping.is_set():
            await self._wait(job, stopping, delay)
            if stopping.is_set():
                return
            stats.running = True
            try:
                await job.run_once(self._now())
                stats.runs += 1
                failures, delay = 0, job.interval_s
            except Exception as exc:  # a bug or an outage in one job must never stop the others
                failures += 1
                stats.failures += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
                delay = max(job.interval_s, self._backoff.delay(failures - 1))
                # classify() reads the drivers' own errors too: asyncpg's refused connect is a bare OSError.
                if isinstance(exc, SQLAlchemyError) or classify(exc) is StoreFault.UNAVAILABLE:
                    log.error("job %s: store unavailable (%s); next try in %.1f s", job.name, type(exc).__name__, delay)
                else:
                    log.exception("job %s failed; next try in %.1f s", job.name, delay)
            finally:
                stats.running = False

    @staticmethod
    async def _wait(job: Job, stopping: asyncio.Event, delay: float) -> None:
        waits = [asyncio.ensure_future(stopping.wait())]
        wake: asyncio.Event | None = getattr(job, "wake", None)
        if wake is not None:
            waits.append(asyncio.ensure_future(wake.wait()))
        try:
            await asyncio.wait(waits, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if wake is not None:
            wake.clear()
