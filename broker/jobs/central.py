"""The centre's background jobs, each a few lines over the module that does the work.

The rule: a job says what to run and how often, nothing else; the runner (broker/jobs/runner.py) owns the
loop, the failures and the stop. A job that produces commands hands them to broker/outbound.py, the only
module that publishes to devices. Each job reads only what it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection

from broker import gallery
from broker.alerts.deliveries import Deliverer
from broker.gallery import GalleryCentreConfig
from broker.ingest.counters import Counters
from broker.ingest.items import Meaning
from broker.ingest.rules_stage import RulesStage
from broker.outbound import BROKER_EXPIRY_SLACK_S, Link, send_commands
from broker.rules.sla import SlaClock
from broker.store.db import Store, Then, Written
from runtime.sdnotify import notify

log = logging.getLogger(__name__)

NO_MEANINGS: tuple[Meaning, ...] = ()


def _rules_then(rules: RulesStage | None) -> Then | None:
    if rules is None:
        return None

    async def then(conn: AsyncConnection, written: Written) -> None:
        await rules.after_commit(conn, written, NO_MEANINGS)

    return then


@dataclass(slots=True)
class PresenceSweep:
    """Online devices whose heartbeat is overdue become stale (the rules see the transition in the same
    transaction); commands past their expiry before a device took them are marked expired."""

    store: Store
    rules: RulesStage | None
    counters: Counters
    interval_s: float
    name: str = "presence-sweep"

    async def run_once(self, now: datetime) -> None:
        transitions = await self.store.sweep_stale(now, _rules_then(self.rules))
        for t in transitions:
            log.info("presence %s -> %s (session %d, %s)", t.key, t.state, t.session, t.reason)
        self.counters.note_transitions(transitions)
        for command_id, key in await self.store.expire_commands(now, grace_s=BROKER_EXPIRY_SLACK_S):
            log.info("command %s for %s expired before the device took it", command_id, key)


@dataclass(slots=True)
class CommandRepublish:
    """Commands still ``queued``: the first publish may have failed, or reached a device that had no session
    yet (the broker keeps nothing for it). Sent again; the device runs an id once."""

    store: Store
    link: Link
    interval_s: float
    name: str = "command-republish"

    async def run_once(self, now: datetime) -> None:
        await send_commands(self.link, await self.store.queued_commands(now, older_than_s=self.interval_s), now)


@dataclass(slots=True)
class SlaTicks:
    """SLA timers, verified recovery, hall outages, escalation (restock and maintenance planning: ``planning``)."""

    sla: SlaClock
    link: Link
    interval_s: float
    name: str = "sla-clock"

    async def run_once(self, now: datetime) -> None:
        result = await self.sla.tick(now)
        await send_commands(self.link, result.commands, now)


@dataclass(slots=True)
class GallerySync:
    """Terminals get the face-gallery updates they lack; a revocation past its deadline is an incident."""

    store: Store
    cfg: GalleryCentreConfig
    rules: RulesStage | None
    link: Link
    interval_s: float
    name: str = "gallery"

    async def run_once(self, now: datetime) -> None:
        rules = self.rules.rules if self.rules is not None else None
        await send_commands(self.link, await gallery.reconcile(self.store, self.cfg, now, rules), now)


class Tick(Protocol):
    """A module's own timer step: ``AttendanceJobs.tick``, ``RatingJobs.tick``, ``DutyJobs.tick``, ``QueueJobs.tick``
    (what it returns, if anything, is for its tests; the job only awaits it)."""

    def __call__(self, now: datetime, /) -> Awaitable[object]: ...


@dataclass(frozen=True, slots=True)
class Ticking:
    """A module that keeps its own checks behind ``tick(now)`` (attendance, ratings, duties, queueing), run as a
    job: ``Ticking("ratings", r.ratings_every_s, ratings.tick)``. ``name`` is the ``job`` label of
    ``hallfleet_consumer_job_failures`` and the name in the runner's logs, so it stays as deployed."""

    name: str
    interval_s: float
    tick: Tick

    async def run_once(self, now: datetime) -> None:
        await self.tick(now)


@dataclass(slots=True)
class AlertDeliveries:
    """Routed notifications sent and retried. A pass in progress may finish on stop (``stop_grace_s``): a page
    that went out is then recorded as sent instead of being sent again after a restart."""

    deliverer: Deliverer
    interval_s: float
    stop_grace_s: float = 15.0  # a notifier's own timeout is 10 s
    name: str = "deliveries"

    async def run_once(self, now: datetime) -> None:
        await self.deliverer.send_due()


@dataclass(slots=True)
class Watchdog:
    """systemd's watchdog petted from the event loop itself: a loop that hangs stops petting it."""

    interval_s: float
    name: str = "watchdog"
    runs: int = field(default=0)

    async def run_once(self, now: datetime) -> None:
        notify("WATCHDOG=1")
        self.runs += 1
