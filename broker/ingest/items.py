"""One received message as a unit of ingest: where it came from and what it adds to the store's batch.

The rule: every message the consumer takes becomes exactly one Item, so whatever the store refuses can be
traced back to the message that brought it, and that message (its topic and raw bytes) dead-lettered in
its place. A batch is built from items only when it is written, so a batch can be split at any item.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from broker.store.db import Batch, StatusUpdate
from broker.store.keys import DeviceKey, EventRef
from protocol.bounds import printable
from protocol.commands import CommandAck, ConfigReport

if TYPE_CHECKING:
    from broker.hall.mirror import Snapshot
    from broker.rules.consumables import LevelReading
    from broker.rules.incidents import Signal

TOPIC_MAX = 512  # dead_letters.topic


class Seen(NamedTuple):
    """Anything a device sends proves it alive at ``at``."""

    key: DeviceKey
    at: datetime


@dataclass(frozen=True, slots=True)
class Meaning:
    """What an event means to the rules (incident signals, a consumable level). The rules stage applies it
    only if the commit found the event new to the store: a re-delivered event means nothing twice. A hall
    incident snapshot is no event: it is a state, applied every time (twice is once)."""

    ref: EventRef
    signals: tuple[Signal, ...] = ()
    level: LevelReading | None = None
    mirror: Snapshot | None = None  # a hall consumer's incident, as it holds it (broker/hall/mirror.py)


class Item(NamedTuple):
    """Immutable like every value here, and a NamedTuple because one is made per message: a frozen
    dataclass's ``__init__`` (a ``object.__setattr__`` per field) cost more than parsing the message."""

    topic: str
    raw: bytes
    mid: int | None = None  # None for QoS 0: nothing to acknowledge
    event: dict[str, Any] | None = None
    dead: dict[str, Any] | None = None
    status: StatusUpdate | None = None
    seen: Seen | None = None
    meaning: Meaning | None = None
    ack: tuple[DeviceKey, CommandAck, datetime] | None = None
    config_report: tuple[DeviceKey, bool, ConfigReport, datetime] | None = None
    confirm: tuple[DeviceKey, int] | None = None  # (device, seq) to confirm to the device once held


def dead_letter(topic: str, raw: bytes, reason: str, detail: str, at: datetime) -> dict[str, Any]:
    """A dead_letters row any backend takes: topic and detail with their control characters escaped."""
    return {
        "received_at": at,
        "topic": printable(topic)[:TOPIC_MAX],
        "reason": reason,
        "detail": printable(detail)[:4000],
        "raw": raw,
    }


def refused(item: Item, reason: str, detail: str, at: datetime) -> Item:
    """The item replaced by its dead letter: the rest of what it carried is not written. Its event is still
    confirmed to the device (the store holds it, in dead_letters), or the device would re-send it for ever."""
    return Item(
        item.topic, item.raw, item.mid, dead=dead_letter(item.topic, item.raw, reason, detail, at), confirm=item.confirm
    )


def to_batch(items: Iterable[Item]) -> Batch:
    """The store's batch for these items, in receive order (a device's later status wins)."""
    b = Batch()
    for it in items:
        if it.event is not None:
            b.events.append(it.event)
        if it.dead is not None:
            b.dead.append(it.dead)
        if it.status is not None:
            b.statuses.append(it.status)
        if it.seen is not None:
            b.seen[it.seen.key] = it.seen.at
        if it.ack is not None:
            b.acks.append(it.ack)
        if it.config_report is not None:
            b.config_reports.append(it.config_report)
    return b


def meanings(items: Iterable[Item]) -> list[Meaning]:
    """What the items' events mean to the rules, in receive order (the rules stage keeps only new events')."""
    return [it.meaning for it in items if it.meaning is not None]
