"""The hall consumer's job towards the centre: announce the lead, send each incident's state when it changes.

The rule: a snapshot is sent when the incident's state differs from the last one the hall broker
acknowledged, and every incident of the last day again every ``resync_s`` (a snapshot the bridge's bounded
queue dropped during a long WAN cut is repaired by the next resync; the centre applies a state twice as
once). The lead is announced again on every new connection to the hall broker, where the Will of the last
one may have said ``offline``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from broker.hall.mirror import ONLINE, digest, incident_topic, lead_topic, snapshots
from broker.ingest.receive import Receiver
from broker.store.db import Store

log = logging.getLogger(__name__)


@dataclass(slots=True)
class HallMirror:
    store: Store
    link: Receiver
    site: str
    interval_s: float
    resync_s: float
    name: str = "hall-mirror"
    _announced_on: int = field(default=-1, init=False)
    _sent: dict[str, bytes] = field(default_factory=dict, init=False)
    _runs: int = field(default=0, init=False)

    async def run_once(self, now: datetime) -> None:
        connects = self.link.stats.connects
        if self._announced_on != connects:
            await self.link.publish(lead_topic(self.site), ONLINE, retain=True)
            self._announced_on = connects
        # Counted in runs, not hall time: the resync bounds real traffic, and hall time may run at 600x.
        resync = self._runs % max(1, round(self.resync_s / self.interval_s)) == 0
        self._runs += 1
        current = await snapshots(self.store.engine, now)
        topic = incident_topic(self.site)
        sent = 0
        for incident_id, payload in current:
            d = digest(payload)
            if not resync and self._sent.get(incident_id) == d:
                continue
            await self.link.publish(topic, payload)
            self._sent[incident_id] = d
            sent += 1
        live = {incident_id for incident_id, _ in current}
        for gone in set(self._sent) - live:  # older than a day: never sent again
            del self._sent[gone]
        if sent:
            log.debug("sent %d incident snapshots to the centre", sent)
