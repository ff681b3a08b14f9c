"""Queue ticketing (排队叫号): a ticket dispenser or a call display reports its tickets' steps to the centre,
read from the hall's queue system through its adapter (drivers/queue/).

The rule: a step is read from the queue system, put in the outbox, and only then is the agent's cursor (the last
record number taken, in the agent's state) moved past it. Whatever the queue system logged while the agent, its
link or the centre was down is read when it is back, and nothing is skipped; a crash between the outbox and the
cursor sends one step twice, which the centre folds as one (broker/queueing/fold.py keys a step by its ticket,
kind and time). Only ticket numbers and service codes leave the device (protocol/queueing.py).

What each kind reports (``kind``), so that a hall's devices together report each step once:
- ``dispenser`` (取号机): the tickets it printed (``queue.ticket_issued``; records the queue system does not
  attribute to a dispenser are its when ``name`` is ``*``), and the steps no window can claim: a ticket
  cancelled before its call, or still waiting when the queue system closed the day.
- ``display`` (叫号屏): calls, services, transfers and abandoned tickets at the windows it shows (``windows``;
  none listed: every window, and the steps without a window too).
- ``server``: every step (an agent on the queue PC itself, where the hall has no agent at its dispensers).

A step without a window is the dispensers' as well as a window-less display's because a hall whose displays each
show their own windows would otherwise report it nowhere: the ticket would wait at the centre until midnight and
be told as past its limit. Two devices reporting it are one step at the centre (fold.py keys it).

The queue system unreachable, or logging records that cannot be read, is a ``device.fault`` (component
``queue``) raised once and cleared when it is over: the centre then knows why no tickets arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from agent.device import DeviceContext
from agent.outbox import OutboxFull
from config.base import Section
from drivers.queue import (
    BadRecord,
    HttpQueueConfig,
    HttpQueueSystem,
    QueueDriverConfig,
    QueueRecord,
    QueueSystem,
    QueueSystemError,
    SimQueueConfig,
    SimQueueSystem,
)
from protocol.envelope import Frozen
from protocol.events import Fault
from protocol.queueing import (
    TicketAbandoned,
    TicketCalled,
    TicketIssued,
    TicketServed,
    TicketTransferred,
    Window,
)
from runtime.backoff import Backoff

log = logging.getLogger(__name__)

CURSOR_KEY = "queue.cursor"
COMPONENT = "queue"


class QueueRoleConfig(Section):
    kind: Literal["dispenser", "display", "server"] = Field(
        description="dispenser (取号机): the tickets it printed and the steps without a window (cancelled, day"
        " closed); display (叫号屏): the steps at its windows; server: every step (an agent on the queue PC)"
    )
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="dispenser: its name in the queue system's records (default: the device id; '*': every"
        " ticket printed)",
    )
    windows: list[Window] = Field(
        default_factory=list, max_length=200, description="display: the windows it shows (none: all of them)"
    )
    driver: QueueDriverConfig = Field(description="How the queue system is reached: 'http' (its local API) or 'sim'")
    poll_s: float = Field(default=2.0, gt=0, le=60, description="How often the queue system is asked for new steps")
    page: int = Field(default=200, ge=1, le=1000, description="Steps asked for at once")
    retry_initial_s: float = Field(default=1.0, gt=0, le=60, description="First wait after the queue system failed")
    retry_max_s: float = Field(default=30.0, gt=0, le=600, description="Cap of that wait (doubles per failure)")
    fault_after_s: float = Field(
        default=60, ge=0, le=3600, description="The queue system unreachable this long is a device.fault"
    )

    @model_validator(mode="after")
    def _kind_fields(self) -> QueueRoleConfig:
        if self.windows and self.kind != "display":
            raise ValueError("windows are for kind = 'display'")
        if self.name is not None and self.kind != "dispenser":
            raise ValueError("name is for kind = 'dispenser'")
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retry_max_s must be >= retry_initial_s")
        return self


@dataclass(frozen=True, slots=True)
class Scope:
    """Which records a device reports (see the module's docstring)."""

    kind: Literal["dispenser", "display", "server"]
    name: str
    windows: frozenset[str]

    def takes(self, r: QueueRecord) -> bool:
        if self.kind == "server":
            return True
        if r.step == "issued":
            return self.kind == "dispenser" and (self.name == "*" or r.dispenser == self.name)
        if r.window is None:  # no window's display can claim it: see the module's docstring
            return self.kind == "dispenser" or not self.windows
        if self.kind == "dispenser":
            return False
        return r.window in self.windows if self.windows else True


def event_of(r: QueueRecord) -> tuple[str, Frozen]:
    """The event a record is; ValueError names what a step lacks (a call without a window)."""
    common = {"ticket": r.ticket, "service": r.service, "at": r.at}
    if r.step == "issued":
        return "queue.ticket_issued", TicketIssued(**common, channel=r.channel)
    if r.step in ("called", "served") and r.window is None:
        raise ValueError(f"a {r.step} step without its window")
    if r.step == "called":
        return "queue.ticket_called", TicketCalled(**common, window=r.window, recall=r.recall)
    if r.step == "served":
        return "queue.ticket_served", TicketServed(**common, window=r.window)
    if r.step == "transferred":
        if r.to_service is None:
            raise ValueError("a transfer without to_service")
        return "queue.ticket_transferred", TicketTransferred(**common, window=r.window, to_service=r.to_service)
    if r.reason is None:
        raise ValueError("an abandoned ticket without its reason")
    return "queue.ticket_abandoned", TicketAbandoned(**common, window=r.window, reason=r.reason)


class QueueRole:
    def __init__(self, device: DeviceContext, cfg: QueueRoleConfig) -> None:
        self.device = device
        self.cfg = cfg
        self.scope = Scope(cfg.kind, cfg.name or device.device, frozenset(cfg.windows))
        self.backoff = Backoff(cfg.retry_initial_s, cfg.retry_max_s)
        # The twin is the hall's queue system on this machine, read through the real HTTP driver.
        self.sim: SimQueueSystem | None = None
        if isinstance(cfg.driver, SimQueueConfig):
            self.sim = SimQueueSystem(device.clock.now, cfg.driver.services, port=cfg.driver.port)
        self.taken = self.skipped = self.bad = self.failures = 0
        self._faults: dict[str, bool] = {}  # fault code -> raised
        self._failing_since: float | None = None

    async def run(self) -> None:
        if self.sim is None:
            assert isinstance(self.cfg.driver, HttpQueueConfig)
            await self._poll(HttpQueueSystem(self.cfg.driver))
            return
        async with self.sim:
            await self._poll(HttpQueueSystem(HttpQueueConfig(url=self.sim.url)))

    async def _poll(self, system: QueueSystem) -> None:
        attempt = 0
        try:
            while True:
                try:
                    more = await self.step(system)
                    attempt = 0
                    await self._clear("unreachable")
                    if not more:
                        await asyncio.sleep(self.cfg.poll_s)
                except (QueueSystemError, OutboxFull) as exc:
                    await self._failed(exc)
                    await asyncio.sleep(self.backoff.delay(attempt))
                    attempt += 1
        finally:
            with contextlib.suppress(Exception):
                await system.aclose()

    async def step(self, system: QueueSystem) -> bool:
        """Take one page of steps; True when the page was full (more are waiting)."""
        after = int(await self.device.state.kv_get(CURSOR_KEY) or 0)
        page = await system.records(after, self.cfg.page)
        bad: list[BadRecord] = []
        passed: int | None = None  # the last record passed over without an event, its cursor move not yet written
        for r in page:
            taken = self.taken
            if isinstance(r, BadRecord):
                bad.append(r)
            else:
                bad += await self._take(r)
            if self.taken > taken:
                await self.device.state.kv_set(CURSOR_KEY, str(r.no))  # after the outbox took it: see the docstring
                passed = None
            else:
                # Nothing sent, nothing to protect: read again after a crash, it is passed over again. A display
                # passes over most of its hall's steps, and a write each (a commit; an fsync on a Pi) was most of
                # its poll's cost (issue 20); one write at the page's end moves the cursor past them all.
                passed = r.no
        if passed is not None:
            await self.device.state.kv_set(CURSOR_KEY, str(passed))
        if bad:
            await self._raise("bad_record", "; ".join(f"record {b.no}: {b.error}" for b in bad[:5])[:500])
        elif page:
            await self._clear("bad_record")
        return len(page) >= self.cfg.page

    async def _take(self, r: QueueRecord) -> list[BadRecord]:
        if not self.scope.takes(r):
            self.skipped += 1
            return []
        try:
            event_type, payload = event_of(r)
        except ValueError as exc:
            self.bad += 1
            log.warning("queue record %d cannot be reported: %s", r.no, exc)
            return [BadRecord(r.no, str(exc))]
        await self.device.emit(event_type, payload)
        self.taken += 1
        return []

    async def _failed(self, exc: Exception) -> None:
        self.failures += 1
        now = self.device.clock.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            log.warning("queue ticketing: %s (retrying)", exc)
        if isinstance(exc, QueueSystemError) and now - self._failing_since >= self.cfg.fault_after_s:
            with contextlib.suppress(OutboxFull):
                await self._raise("unreachable", str(exc)[:500])

    async def _raise(self, code: str, detail: str) -> None:
        if self._faults.get(code):
            return
        await self.device.emit("device.fault", Fault(component=COMPONENT, code=code, active=True, detail=detail))
        self._faults[code] = True

    async def _clear(self, code: str) -> None:
        if code == "unreachable":
            self._failing_since = None
        if not self._faults.get(code):
            return
        await self.device.emit("device.fault", Fault(component=COMPONENT, code=code, active=False))
        self._faults[code] = False

    def counters(self) -> dict[str, int]:
        return {"taken": self.taken, "skipped": self.skipped, "bad": self.bad, "failures": self.failures}
