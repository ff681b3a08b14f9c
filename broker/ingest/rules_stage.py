"""The rules stage: what a commit means, applied in the commit's own transaction, after its dedup.

The rule: the incident rules see only what is new to the store (events the commit inserted, presence
transitions it made), so a re-delivered event or a replayed status opens, clears or counts nothing twice;
and they run inside the same transaction as the write, so an event is never stored without its meaning
or the other way round. Nothing reaches into the store for them: the commit stage hands this stage to
``Store.write`` explicitly, and the presence sweep does the same with its transitions. At the centre, a site
led by its own hall consumer is left to it: its signals and transitions are not applied here, its incident
snapshots are (broker/hall/mirror.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from broker.hall.mirror import Leads, apply_snapshots
from broker.ingest.items import Meaning
from broker.rules.incidents import IncidentRules, Signal
from broker.store.db import Written


class RulesStage:
    def __init__(self, rules: IncidentRules, leads: Leads | None = None) -> None:
        self.rules = rules
        self.leads = leads  # the centre's: sites led by their hall consumer (broker/hall/mirror.py)
        self.skipped = 0  # meanings of events the store already held (re-deliveries), not applied again
        self.hall_led = 0  # signals and transitions left to a hall consumer

    async def after_commit(self, conn: AsyncConnection, written: Written, meanings: Sequence[Meaning]) -> None:
        signals: list[Signal] = []
        levels = []
        mirrors = []
        for m in meanings:
            if m.mirror is not None:
                mirrors.append(m.mirror)
                continue
            if m.ref not in written.new_events:
                self.skipped += 1
                continue
            signals += m.signals
            if m.level is not None:
                levels.append(m.level)
        transitions = list(written.transitions)
        if self.leads is not None and self.leads.sites:
            signals, transitions = self._centre_led(signals, transitions)
        if transitions or signals or levels:
            await self.rules.apply_batch(conn, signals, transitions, levels)
        if mirrors:
            await apply_snapshots(conn, mirrors)

    def _centre_led(self, signals: list[Signal], transitions: list[Any]) -> tuple[list[Signal], list[Any]]:
        """What the centre still decides: a hall-led site's incidents are its hall consumer's (one incident,
        one clock, one page), which the centre records from the hall's snapshots."""
        leads = self.leads
        assert leads is not None
        kept_s = [s for s in signals if s.site not in leads]
        kept_t = [t for t in transitions if t.key.site not in leads]
        self.hall_led += len(signals) - len(kept_s) + len(transitions) - len(kept_t)
        return kept_s, kept_t
