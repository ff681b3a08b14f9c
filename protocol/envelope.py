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

from protocol.bounds import Int64, Line, storable_time
from protocol.topics import EVENT_TYPE_RE, SEGMENT_RE

MAX_EVENT_BYTES = 16 * 1024
"""Largest envelope accepted on the wire. Events are facts, not files: logs and reports travel otherwise."""

Segment = Annotated[str, StringConstraints(pattern=SEGMENT_RE.pattern)]
EventType = Annotated[str, StringConstraints(pattern=EVENT_TYPE_RE.pattern)]
EventId = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]


class Frozen(BaseModel):
    # allow_inf_nan: JSON has no NaN or Infinity, yet the parser takes them; no column, chart or report can.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Signature(Frozen):
    """A device's Ed25519 signature of the envelope as it encoded it (protocol/signing.py says over which bytes)."""

    kid: str = Field(pattern=r"^[0-9a-f]{16}$", description="Key id: SHA-256 of the public key, first 8 bytes, hex")
    s: str = Field(pattern=r"^[A-Za-z0-9+/]{86}==$", description="The 64-byte signature, base64")


class Envelope(Frozen):
    v: Literal[1] = Field(description="Envelope version")
    id: EventId = Field(description="Device-unique event id (UUIDv7)")
    site: Segment = Field(description="Site (hall) id; must match the topic")
    device: Segment = Field(description="Device id; must match the topic")
    type: EventType = Field(description="Event type; selects the payload model")
    seq: Int64 = Field(description="Per-device sequence, persisted, monotonic across reboots")
    boot_id: Line = Field(min_length=1, max_length=64, description="Changes on every agent start")
    ts: AwareDatetime = Field(
        description="Device wall clock, with zone. Outside 1970..2100 UTC it is not refused: the centre stores its"
        " receive time instead and clock_synced=false (settle_clock)"
    )
    clock_synced: bool = Field(description="Whether the device clock was NTP-synchronised at ts")
    replayed: bool = Field(default=False, description="Sent from the outbox after an outage")
    data: dict[str, Any] = Field(description="The typed payload, validated by the model registered for type")
    sig: Signature | None = Field(
        default=None,
        exclude_if=lambda v: v is None,  # an unsigned event encodes as before: old centres take it
        description="Critical events of a device with a key: its signature, always the last field",
    )


class Presence(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"  # the broker published the Last Will: the link died without a goodbye
    SHUTDOWN = "shutdown"  # the agent said goodbye (service stop, reboot)


class StatusMessage(Frozen):
    """Retained on ``.../status``. ``session`` works like Sparkplug's bdSeq: the Will registered for a
    connection carries that connection's counter, so a Will that arrives late from an old session can be
    told apart from the live one and ignored."""

    state: Presence = Field(description="online (birth), offline (the Last Will), shutdown (goodbye)")
    session: Int64 = Field(description="Connection counter: the Will of an older session is ignored")
    boot_id: Line = Field(min_length=1, max_length=64, description="Changes on every agent start")
    ts: datetime = Field(description="Device wall clock when it was written (informative, not stored)")
    heartbeat_s: float = Field(gt=0, le=3600, description="Health interval: the centre's stale timeout")
    agent_version: Line = Field(default="", max_length=32, description="The agent's version")
    role: Line = Field(default="", max_length=32, description="The device's role: its incidents' device class")


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


def settle_clock(env: Envelope, received_at: datetime) -> Envelope:
    """The rule for a device whose clock is far off: never refused. A ``ts`` outside what every store and
    report can represent (bounds.TIME_MIN .. TIME_MAX) is replaced by the centre's receive time and the event
    flagged ``clock_synced=false``, which is how every reader already treats an unsynchronised clock."""
    if storable_time(env.ts):
        return env
    return env.model_copy(update={"ts": received_at, "clock_synced": False})
