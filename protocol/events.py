"""Typed payloads, chosen by the envelope's ``type`` from an explicit registry.

Each event type also names its outbox lane on the device: ``critical`` events (a punch, a rating, a
fault) are never dropped; ``telemetry`` may be dropped oldest-first when the outbox is full, and every
drop is counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache
from typing import Annotated, Literal, cast

from pydantic import Field, ValidationError, create_model

from protocol.bounds import Count, Int32, Line, Ordinal, Prose, Reading
from protocol.commands import CommandAck, ConfigReport
from protocol.envelope import MAX_EVENT_BYTES, Envelope, Frozen
from protocol.hall_events import DoorAlarm, DoorState, LockerAlarm, LockerBank, LockerParcel, NetCheck, PatrolScan
from protocol.queueing import QUEUE_EVENTS
from protocol.topics import Kind, Topic


class Lane(StrEnum):
    CRITICAL = "critical"
    TELEMETRY = "telemetry"


class Health(Frozen):
    """``tele/health``: the heartbeat. Every field is optional hardware: a value absent here is absent
    on the device, never guessed."""

    uptime_s: float = Field(ge=0)
    load1: float | None = None
    cpu_temp_c: float | None = None
    mem_used_pct: float | None = Field(default=None, ge=0, le=100)
    disk_used_pct: float | None = Field(default=None, ge=0, le=100)
    outbox_depth: Count
    outbox_dropped: Count = Field(description="Telemetry dropped since the outbox was created")
    clock_synced: bool
    interval_s: float = Field(gt=0)


PunchMethod = Literal["face", "fingerprint", "qr", "card"]


LIVENESS_MEASURE_MAX = 1000.0
"""Cap of a liveness measure (the terminal clamps to it: a degenerate frame must not cost the punch)."""


class PunchLiveness(Frozen):
    """What a face sitting showed the liveness check (drivers/face/liveness.py), as numbers and never pixels, so the
    centre can audit a punch or a refusal and retune a hall's limits. The maxima compare with the terminal's
    ``limits`` of the same name."""

    challenge: Literal["none", "blink", "turn"] = Field(default="none", description="What the screen asked for")
    ear_open: float = Field(ge=0, le=LIVENESS_MEASURE_MAX, description="Open eye aspect ratio before the drop")
    drop: float = Field(ge=0, le=1, description="Deepest drop of both eyes at once, share of ear_open")
    eyes: float = Field(
        ge=0, le=LIVENESS_MEASURE_MAX, description="Change of the eye regions' pixels at that drop (lid over the iris)"
    )
    blink_s: float | None = Field(
        default=None, ge=0, le=3600, description="Last open frame before the drop to the first after; null: no blink"
    )
    rigid: float = Field(ge=0, le=LIVENESS_MEASURE_MAX, description="Largest landmark residual off the eyes")
    light: float = Field(ge=0, le=LIVENESS_MEASURE_MAX, description="Largest brightness change of the face")
    texture: float = Field(ge=0, le=LIVENESS_MEASURE_MAX, description="Largest texture change outside the eyes")
    blur: float = Field(ge=0, le=LIVENESS_MEASURE_MAX, description="Largest sharpness change, |ln ratio|")
    turn: float = Field(
        ge=0, le=LIVENESS_MEASURE_MAX, description="Largest parallax of the nose against the face's outline (head turn)"
    )
    frames: Count = Field(description="Frames of the sitting")
    unsteady: Count = Field(description="Of which changed too much from the one before to count")
    sitting_s: float = Field(ge=0, le=3600, description="First frame of the sitting to this outcome")


class AttendancePunch(Frozen):
    staff_id: Line = Field(min_length=1, max_length=64, description="Pseudonymous staff id, never a name")
    method: PunchMethod
    direction: Literal["in", "out", "unknown"] = "unknown"
    offline: bool = Field(default=False, description="Taken while the device was offline")
    score: float | None = Field(
        default=None, ge=0, description="How sure: 1 - face distance, or the fingerprint module's match score"
    )
    liveness: PunchLiveness | None = Field(default=None, description="Face punches: what the liveness check saw")


class AttendanceRejected(Frozen):
    """A punch the terminal refused, so a missing punch can be explained (a device fault, a stranger, a
    photo held up). Never carries an image, an encoding or a raw QR code."""

    method: PunchMethod
    reason: Literal[
        "unknown",  # a face or a finger that matches nobody enrolled (method says which)
        "no_face",
        "multiple_faces",
        "too_small",
        "blurry",
        "not_live",
        "revoked",
        "malformed",
        "expired",
        "replayed",
        "wrong_region",
        "unknown_staff",
        "device_error",
    ]
    staff_id: Line | None = Field(default=None, max_length=64, description="When known (e.g. revoked staff)")
    detail: Prose = Field(default="", max_length=200)
    liveness: PunchLiveness | None = Field(default=None, description="not_live: what the sitting showed")


class GalleryHeld(Frozen):
    """``attendance.gallery``: which face gallery a terminal holds (at start and after each change), so the
    centre knows what to send and whether a revocation has taken effect."""

    version: Int32
    staff: Count = Field(description="Identities in it")
    fingerprints: Count = Field(default=0, description="Templates in the fingerprint module's library")


PadState = Literal["idle", "serving", "awaiting", "paused", "please_wait", "offline"]


class RatingSubmitted(Frozen):
    window: Line = Field(min_length=1, max_length=32)
    staff_id: Line = Field(min_length=1, max_length=64)
    service_id: Line | None = Field(
        default=None, max_length=64, description="Ticket or 办件编号 the rating is bound to"
    )
    level: Literal[1, 2, 3, 4, 5] = Field(description="5 非常满意 ... 1 非常不满意")
    delay_s: float | None = Field(default=None, ge=0, description="Seconds from service end to the key press")
    pad_state: PadState = Field(
        default="awaiting", description="The pad's state when the key was pressed (anything but awaiting is odd)"
    )
    since_staff_key_s: float | None = Field(
        default=None, ge=0, description="Seconds since a staff key was last pressed on this pad (proxy rating)"
    )


class RatingPadState(Frozen):
    """``rating.pad_state``: the pad changed state (暂停服务 and back, serving, awaiting a rating)."""

    window: Line = Field(min_length=1, max_length=32)
    state: PadState
    staff_id: Line | None = Field(default=None, max_length=64)
    service_id: Line | None = Field(default=None, max_length=64)


class Fault(Frozen):
    component: Line = Field(min_length=1, max_length=32)
    code: Line = Field(min_length=1, max_length=64)
    active: bool = True
    since: datetime | None = None
    detail: Prose = Field(default="", max_length=500)


class KioskState(Frozen):
    state: Literal["up", "degraded", "down"]
    functions_affected: list[Annotated[Line, Field(max_length=64)]] = Field(default_factory=list, max_length=32)


class KioskConsumable(Frozen):
    consumable: Line = Field(min_length=1, max_length=32)
    state: Literal["ok", "low", "empty", "almost-full", "full", "jam", "unknown"] = Field(
        description="almost-full / full: waste receptacles, which count up"
    )
    level_pct: float | None = Field(default=None, ge=0, le=100)
    raw: dict[Annotated[Line, Field(max_length=64)], Reading | Annotated[Prose, Field(max_length=200)] | None] = Field(
        default_factory=dict, max_length=32, description="The driver's own readings, for the technician"
    )


class KioskUsage(Frozen):
    counters: dict[Annotated[Line, Field(max_length=64)], Count] = Field(
        max_length=64, description="Cumulative counters, e.g. tickets, prints, copies, queries"
    )


class AppRestart(Frozen):
    """The agent restarted the device's application (self-healing, or a restart_app command)."""

    app: Line = Field(min_length=1, max_length=64, description="systemd unit or process name")
    attempt: Ordinal = Field(description="Attempt number in the current outage")
    trigger: Literal["probe", "exited", "command"]
    reason: Prose = Field(default="", max_length=500, description="What the failing probes said")
    ok: bool = Field(description="Healthy again after the restart")


class DeviceUpdated(Frozen):
    """``device.updated``: how an update of the agent ended, told by the agent that runs afterwards (the new
    version, or the old one after a rollback)."""

    command_id: Line = Field(max_length=64, description="The update command this answers")
    from_version: Line = Field(max_length=64)
    to_version: Line = Field(max_length=64)
    outcome: Literal["updated", "rolled_back", "failed"] = Field(
        description="updated: the new version is healthy; rolled_back: it was not, the old one runs again; "
        "failed: nothing was switched (install failed)"
    )
    reason: Prose = Field(default="", max_length=1000)


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    model: type[Frozen]
    lane: Lane


REGISTRY: dict[str, EventSpec] = {
    spec.name: spec
    for spec in (
        EventSpec("device.health", Health, Lane.TELEMETRY),
        EventSpec("device.fault", Fault, Lane.CRITICAL),
        EventSpec("attendance.punch", AttendancePunch, Lane.CRITICAL),
        EventSpec("attendance.punch_rejected", AttendanceRejected, Lane.CRITICAL),
        EventSpec("attendance.gallery", GalleryHeld, Lane.CRITICAL),
        EventSpec("rating.submitted", RatingSubmitted, Lane.CRITICAL),
        EventSpec("rating.pad_state", RatingPadState, Lane.CRITICAL),
        EventSpec("kiosk.state", KioskState, Lane.CRITICAL),
        EventSpec("kiosk.fault", Fault, Lane.CRITICAL),
        EventSpec("kiosk.consumable", KioskConsumable, Lane.TELEMETRY),
        EventSpec("kiosk.usage", KioskUsage, Lane.TELEMETRY),
        EventSpec("command.ack", CommandAck, Lane.CRITICAL),
        EventSpec("config.applied", ConfigReport, Lane.CRITICAL),
        EventSpec("config.rejected", ConfigReport, Lane.CRITICAL),
        EventSpec("app.restart", AppRestart, Lane.CRITICAL),
        EventSpec("device.updated", DeviceUpdated, Lane.CRITICAL),
        # The 24-hour area's doors and lockers, the daily duties (protocol/hall_events.py, issue 23).
        EventSpec("door.alarm", DoorAlarm, Lane.CRITICAL),
        EventSpec("door.state", DoorState, Lane.TELEMETRY),
        EventSpec("locker.alarm", LockerAlarm, Lane.CRITICAL),
        EventSpec("locker.bank", LockerBank, Lane.TELEMETRY),
        EventSpec("locker.parcel", LockerParcel, Lane.CRITICAL),
        EventSpec("duty.netcheck", NetCheck, Lane.CRITICAL),
        EventSpec("patrol.scan", PatrolScan, Lane.CRITICAL),
        *(EventSpec(name, model, Lane.CRITICAL) for name, model in QUEUE_EVENTS.items()),  # protocol/queueing.py
    )
}
HEALTH_TYPE = "device.health"
ACK_TYPE = "command.ack"


class RejectReason(StrEnum):
    OVERSIZED = "oversized"
    MALFORMED = "malformed"
    BAD_TOPIC = "bad_topic"
    UNKNOWN_TYPE = "unknown_type"
    INVALID_PAYLOAD = "invalid_payload"
    TOPIC_MISMATCH = "topic_mismatch"
    BAD_SIGNATURE = "bad_signature"  # detail starts with unknown_key, revoked, retired, mismatch or unsigned
    STORE_REJECTED = "store_rejected"  # valid by the contract, yet the database refused it: detail is its message


class Rejected(Exception):
    """An event that cannot be stored as such; it goes to dead-letter with ``reason`` and ``detail``."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:2000]


class ContractError(ValueError):
    """An event the device must not send: the centre would refuse it. Raised where it is built."""


def encode_event(env: Envelope) -> bytes:
    """The envelope's wire bytes; refuses (ContractError) what the centre would dead-letter as oversized, so the
    device learns at the call site instead of its outbox re-sending a refusal for ever."""
    raw = env.model_dump_json().encode()
    if len(raw) > MAX_EVENT_BYTES:
        raise ContractError(f"{env.type} event of {len(raw)} bytes > {MAX_EVENT_BYTES}: the centre would refuse it")
    return raw


def lane_of(event_type: str) -> Lane:
    spec = REGISTRY.get(event_type)
    return spec.lane if spec else Lane.CRITICAL


@cache
def typed_envelope(event_type: str) -> type[Envelope]:
    """The envelope whose ``data`` is ``event_type``'s payload model, so one JSON parse validates both (built
    on first use: agents never validate what they receive this way)."""
    model = REGISTRY[event_type].model
    data = (model, Field(description=f"The {event_type} payload ({model.__name__})"))
    return create_model(f"Envelope_{event_type.replace('.', '_')}", __base__=Envelope, data=data)


def validate_event(topic: Topic, raw: bytes) -> tuple[Envelope, Frozen]:
    """Validate the bytes received on an ``evt/{type}`` or ``tele/health`` topic.

    Returns the envelope and its typed payload, or raises Rejected with the reason for dead-letter.
    The bytes are parsed once, into the envelope typed by the topic's event type (``typed_envelope``); only
    what that refuses is parsed again the general way, to name the reason exactly as a refusal always did
    (malformed envelope, topic mismatch, unknown type, invalid payload).
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise Rejected(RejectReason.OVERSIZED, f"{len(raw)} bytes > {MAX_EVENT_BYTES}")
    expected_type = {Kind.HEALTH: HEALTH_TYPE, Kind.CMD_ACK: ACK_TYPE}.get(topic.kind, topic.event_type)
    if expected_type in REGISTRY:
        try:
            typed = typed_envelope(expected_type).model_validate_json(raw)
        except ValidationError:
            pass  # said below, the general way
        else:
            if (typed.site, typed.device, typed.type) == (topic.site, topic.device, expected_type):
                return typed, cast(Frozen, typed.data)
    return _validate_in_steps(topic, expected_type, raw)


def _validate_in_steps(topic: Topic, expected_type: str | None, raw: bytes) -> tuple[Envelope, Frozen]:
    """The envelope, then the topic, then the payload: the first that fails is the reason."""
    try:
        env = Envelope.model_validate_json(raw)
    except ValidationError as exc:
        reason = RejectReason.MALFORMED
        raise Rejected(reason, errors_of(exc)) from None
    if (env.site, env.device, env.type) != (topic.site, topic.device, expected_type):
        raise Rejected(
            RejectReason.TOPIC_MISMATCH,
            f"envelope says {env.site}/{env.device} {env.type}, topic says {topic.site}/{topic.device} {expected_type}",
        )
    spec = REGISTRY.get(env.type)
    if spec is None:
        raise Rejected(RejectReason.UNKNOWN_TYPE, f"no payload model registered for {env.type!r}")
    try:
        payload = spec.model.model_validate(env.data)
    except ValidationError as exc:
        raise Rejected(RejectReason.INVALID_PAYLOAD, errors_of(exc)) from None
    return env, payload


def errors_of(exc: ValidationError) -> str:
    """A validation error in one line: where and what, never the offending value (it may be anything)."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5])
