"""The commit stage: a batch of items into the store in one transaction, with the rules stage inside it.

The rules: a batch commits whole or, when the store refuses some values, every item but the offenders
(``commit_isolated``), each offender then kept as a ``store_rejected`` dead letter with the database's
message; while the store is unavailable the same batch is retried with backoff, visibly
(``store_unavailable_since``), and a stop ends the wait at once (``StopCommitting``: nothing acknowledged).
The result says which items the store now holds: only those may be acknowledged and confirmed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.ingest.counters import Counters
from broker.ingest.isolation import StoreRetry, commit_isolated, describe
from broker.ingest.items import Item, meanings, refused, to_batch
from broker.ingest.rules_stage import RulesStage
from broker.store.db import Store, Transition, Written
from protocol.bounds import printable
from protocol.events import RejectReason
from runtime.clock import Clock

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Committed:
    """Items the store holds after the commit (stored, or kept as dead letters), and what the writes did."""

    held: list[Item] = field(default_factory=list)
    written: list[Written] = field(default_factory=list)

    @property
    def transitions(self) -> list[Transition]:
        return [t for w in self.written for t in w.transitions]


class Committer:
    def __init__(
        self, store: Store, rules: RulesStage | None, clock: Clock, counters: Counters, stopping: asyncio.Event
    ) -> None:
        self.store = store
        self.rules = rules
        self.clock = clock
        self.counters = counters
        self.stopping = stopping  # set on stop: a retry wait ends at once

    async def __call__(self, items: Sequence[Item]) -> Committed:
        """Raises StopCommitting when stopped while the store is unavailable (what committed stays committed)."""
        retry = StoreRetry(self.stopping, self._store_waiting)
        c = self.counters
        out = Committed()
        try:
            first = await commit_isolated(items, self._write, retry)
            out.held, out.written = first.committed, first.results
            if first.rejected:
                now = self.clock.now()
                dead = [refused(item, RejectReason.STORE_REJECTED.value, why, now) for item, why in first.rejected]
                last = await commit_isolated(dead, self._write, retry)
                out.held += last.committed
                out.written += last.results
                c.store_rejected += len(last.committed)
                for item, why in last.rejected:  # escaped and truncated, so this is a bug: say so loudly
                    c.store_unstorable += 1
                    log.error(
                        "not even the dead letter of a message on %s could be stored (%s): acknowledged without it",
                        printable(item.topic[:200]),
                        why,
                    )
        finally:
            c.store_unavailable_since = None
        c.batches += 1
        c.largest_batch = max(c.largest_batch, len(items))
        for t in out.transitions:
            log.info("presence %s -> %s (session %d, %s)", t.key, t.state, t.session, t.reason)
        c.note_transitions(out.transitions)
        return out

    async def _write(self, items: Sequence[Item]) -> Written:
        batch = to_batch(items)
        then = None
        if self.rules is not None:
            rules, meant = self.rules, meanings(items)

            async def then(conn: AsyncConnection, written: Written) -> None:
                await rules.after_commit(conn, written, meant)

        written = await self.store.write(batch, then)
        self.counters.stored += len(written.new_events)
        self.counters.dead += len(batch.dead)
        return written

    def _store_waiting(self, exc: BaseException, delay: float) -> None:
        c = self.counters
        c.store_errors += 1
        if c.store_unavailable_since is None:
            c.store_unavailable_since = self.clock.now()
        c.store_last_error = describe(exc)
        log.error("store unavailable (%s); ingest waits, retrying in %.1f s", describe(exc), delay)
