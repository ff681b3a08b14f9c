"""The consumer's health row (``consumer_health``): what the dashboard's store banner reads.

The rule: the report is read off what the ingest already counts (a commit happened when ``batches`` rose;
ingest waits for the store while ``store_unavailable_since`` is set), so the per-message path does no extra
work. While the store is away the report's own write fails too: that is expected, logged once per outage and
tried again at the next interval (not the runner's failure backoff), so the row is fresh again as soon as the
store is. A row that stops being rewritten is itself the signal: the dashboard treats it as stale after
``STALE_INTERVALS`` intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from broker.ingest.counters import Counters
from broker.ingest.isolation import StoreFault, classify, describe
from broker.store.db import Store
from broker.store.schema import consumer_health

log = logging.getLogger(__name__)

RUNNING, WAITING, STOPPED = "running", "waiting", "stopped"
STALE_INTERVALS = 3  # a row older than this many of its own intervals means the consumer is not reporting
ERROR_CHARS = 200  # consumer_health.last_error
STOP_WRITE_S = 2.0  # the last report on a clean stop, at most


@dataclass(slots=True)
class HealthReport:
    store: Store
    counters: Counters
    instance: str
    interval_s: float
    name: str = "health"
    _batches_seen: int = field(default=0, init=False)
    _last_commit: datetime | None = field(default=None, init=False)
    _failing: bool = field(default=False, init=False)

    async def run_once(self, now: datetime) -> None:
        c = self.counters
        if c.batches > self._batches_seen:
            self._batches_seen, self._last_commit = c.batches, now
        waiting = c.store_unavailable_since
        row = {
            "state": WAITING if waiting is not None else RUNNING,
            "waiting_since": waiting,
            "last_error": c.store_last_error[:ERROR_CHARS] if waiting is not None else None,
        }
        await self._report(now, row)

    async def stopped(self, now: datetime) -> None:
        """A clean stop: the banner must not take a consumer stopped on purpose for one that went silent.
        Skipped while the store is known to be away, and bounded: the stop must stay well inside the unit's
        TimeoutStopSec (a row left 'waiting' goes stale, which the banner reports just the same)."""
        if self._failing or self.counters.store_unavailable_since is not None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._report(now, {"state": STOPPED, "waiting_since": None, "last_error": None}), STOP_WRITE_S
            )

    async def _report(self, now: datetime, row: dict[str, Any]) -> None:
        try:
            await self._write(
                {**row, "updated_at": now, "every_s": self.interval_s, "last_commit_at": self._last_commit}
            )
        except Exception as exc:
            if not isinstance(exc, SQLAlchemyError) and classify(exc) is not StoreFault.UNAVAILABLE:
                raise  # a bug: the runner logs it with its traceback
            if not self._failing:
                log.warning(
                    "health report not stored (%s): the store is away; trying every %.0f s",
                    describe(exc),
                    self.interval_s,
                )
            self._failing = True
            return
        if self._failing:
            log.info("health report stored again")
            self._failing = False

    async def _write(self, values: dict[str, Any]) -> None:
        # Update, then insert when there was no row: one process per instance, so no race to lose.
        async with self.store.engine.begin() as conn:
            t = consumer_health
            done = await conn.execute(t.update().where(t.c.instance == self.instance).values(**values))
            if done.rowcount == 0:
                await conn.execute(t.insert().values(instance=self.instance, **values))
