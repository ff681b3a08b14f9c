"""The consumer's ingest counters, read by ``/metrics`` (broker/api/metrics.py) and the tests.

The rule: each counter is written by the one stage that knows it (receive: ``received``, ``statuses``;
commit: ``stored``, ``dead``, ``batches``, the store's errors; the $SYS reader: ``broker_dropped``), and the
names are the metric names the dashboards and alert rules use (deploy/grafana, deploy/prometheus).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from broker.store.db import Transition

TRANSITIONS_KEPT = 1000


@dataclass(slots=True)
class Counters:
    received: int = 0
    stored: int = 0  # events new to the store (a re-delivered event is stored once, counted once)
    dead: int = 0
    statuses: int = 0
    batches: int = 0
    store_errors: int = 0  # writes that failed because the store was unavailable (each retried)
    store_rejected: int = 0  # messages the store refused, moved to dead_letters as store_rejected
    store_unstorable: int = 0  # messages not even a dead letter could be written for (logged, acknowledged)
    store_unavailable_since: datetime | None = None  # set while ingest waits for the store
    store_last_error: str = ""  # the store's latest error while ingest waits (the health report names it)
    largest_batch: int = 0
    broker_dropped: int = 0  # Mosquitto's own count of messages it dropped (queue limits), from $SYS
    transitions: list[Transition] = field(default_factory=list)  # the latest presence changes, newest last

    def note_transitions(self, transitions: list[Transition]) -> None:
        self.transitions.extend(transitions)
        del self.transitions[:-TRANSITIONS_KEPT]
