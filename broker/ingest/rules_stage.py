"""The rules stage: what a commit means, applied in the commit's own transaction, after its dedup.

The rule: the incident rules see only what is new to the store (events the commit inserted, presence
transitions it made), so a re-delivered event or a replayed status opens, clears or counts nothing twice;
and they run inside the same transaction as the write, so an event is never stored without its meaning
or the other way round. Nothing reaches into the store for them: the commit stage hands this stage to
``Store.write`` explicitly, and the presence sweep does the same with its transitions.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.ingest.items import Meaning
from broker.rules.incidents import IncidentRules, Signal
from broker.store.db import Written


class RulesStage:
    def __init__(self, rules: IncidentRules) -> None:
        self.rules = rules
        self.skipped = 0  # meanings of events the store already held (re-deliveries), not applied again

    async def after_commit(self, conn: AsyncConnection, written: Written, meanings: Sequence[Meaning]) -> None:
        signals: list[Signal] = []
        levels = []
        for m in meanings:
            if m.ref not in written.new_events:
                self.skipped += 1
                continue
            signals += m.signals
            if m.level is not None:
                levels.append(m.level)
        if written.transitions or signals or levels:
            await self.rules.apply_batch(conn, signals, list(written.transitions), levels)
