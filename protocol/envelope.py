"""The event envelope every device sends, and the status message behind presence.

At-least-once delivery plus idempotent storage by ``(site, device, id)`` gives exactly-once storage.
Biometric templates and citizens' personal data never travel in an envelope: payload models forbid
unknown fields, so a field that is not in the contract is refused rather than carried along.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from protocol.topics import EVENT_TYPE_RE, SEGMENT_RE

MAX_EVENT_BYTES = 16 * 1024
"""Largest envelope accepted on the wire. Events are facts, not files: logs and reports travel otherwise."""

Segment = Annotated[str, StringConstraints(pattern=SEGMENT_RE.pattern)]
EventType = Annotated[str, StringConstraints(pattern=EVENT_TYPE_RE.pattern)]
EventId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Envelope(Frozen):
    v: Literal[1] = Field(description="Envelope version")
    id: EventId = Field(description="Device-unique event id (UUIDv7)")
    site: Segment = Field(description="Site (hall) id; must match the topic")
    device: Segment = Field(description="Device id; must match the topic")
    type: EventType = Field(description="Event type; selects the payload model")
    seq: int = Field(ge=0, description="Per-device sequence, persisted, monotonic across reboots")
    boot_id: str = Field(min_length=1, max_length=64, description="Changes on every agent start")
    ts: AwareDatetime = Field(description="Device wall clock, with zone")
    clock_synced: bool = Field(description="Whether the device clock was NTP-synchronised at ts")
    replayed: bool = Field(default=False, description="Sent from the outbox after an outage")
    data: dict[str, Any] = Field(description="The typed payload, validated by the model registered for type")


class Presence(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"  # the broker published the Last Will: the link died without a goodbye
    SHUTDOWN = "shutdown"  # the agent said goodbye (service stop, reboot)


class StatusMessage(Frozen):
    """Retained on ``.../status``. ``session`` works like Sparkplug's bdSeq: the Will registered for a
    connection carries that connection's counter, so a Will that arrives late from an old session can be
    told apart from the live one and ignored."""

    state: Presence
    session: int = Field(ge=0)
    boot_id: str = Field(min_length=1, max_length=64)
    ts: datetime
    heartbeat_s: float = Field(gt=0, le=3600, description="Health interval: the centre's stale timeout")
    agent_version: str = Field(default="", max_length=32)
    role: str = Field(default="", max_length=32)


class StoredAck(Frozen):
    """Published by the consumer on ``.../stored`` after a commit: the seqs now in the store.

    Mosquitto persists by periodic snapshot, so a broker killed with SIGKILL loses messages it had
    already PUBACKed (platform-notes.md). The agent therefore keeps an event until the store itself
    confirms it, and re-sends what was never confirmed; the store's unique key absorbs the duplicates.
    """

    ranges: list[tuple[int, int]] = Field(max_length=10_000, description="Inclusive [first, last] seq ranges")

    @classmethod
    def from_seqs(cls, seqs: list[int]) -> StoredAck:
        ranges: list[tuple[int, int]] = []
        for s in sorted(set(seqs)):
            if ranges and s == ranges[-1][1] + 1:
                ranges[-1] = (ranges[-1][0], s)
            else:
                ranges.append((s, s))
        return cls(ranges=ranges)

    def seqs(self) -> list[int]:
        return [s for first, last in self.ranges for s in range(first, last + 1)]
