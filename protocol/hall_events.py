"""Payloads of the 24-hour area's doors and lockers and of the daily duties devices prove (issue 23).

The rule these models keep: **nothing personal on the wire.** A door event names the door and the alarm, never
the card or the person; a locker event names the compartment and an opaque parcel id the agent draws (a UUID,
so a phone number or a pick-up code cannot ride in it); a patrol scan names the pseudonymous staff id of the
duty officer (as attendance punches do) and the device scanned. Registered in ``protocol/events.py``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from protocol.bounds import Count, Line, Prose, storable_time
from protocol.envelope import Frozen


def _storable(value: datetime) -> datetime:
    if not storable_time(value):
        raise ValueError("a time with its offset, between 1970 and 2100")
    return value


# A device's time of a condition or a deposit: aware and in range, because the centre compares it with its own
# aware clock (an item's time in a locker, an alarm's start); a naive one would stop the duties job for every site.
DeviceTime = Annotated[datetime, AfterValidator(_storable)]

UUID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
MAX_COMPARTMENTS = 256  # a locker bank's board addresses at most this many locks (several boards: several banks)

DoorAlarmKind = Literal["held_open", "forced", "offline", "lock_fault"]


class DoorAlarm(Frozen):
    """``door.alarm``: a condition of one door of the 24-hour area began (``active``) or ended."""

    door: Line = Field(min_length=1, max_length=32, description="The door's id on its controller, e.g. 'main'")
    alarm: DoorAlarmKind = Field(
        description="held_open: open past the controller's limit; forced: opened while locked without a grant or"
        " exit request; offline: the controller does not answer; lock_fault: the lock does not take its state"
    )
    active: bool = True
    since: DeviceTime | None = Field(default=None, description="When the condition began (device clock)")


class DoorState(Frozen):
    """``door.state``: one door's contacts and counters, on change and in the periodic snapshot."""

    door: Line = Field(min_length=1, max_length=32)
    controller: Literal["ok", "unreachable"]
    contact: Literal["open", "closed", "unknown"] = Field(description="The door's reed contact")
    lock: Literal["locked", "unlocked", "unknown"] = Field(description="The lock relay as the controller reports it")
    grants: Count = Field(default=0, description="Entries the controller granted, cumulative since its start")
    exits: Count = Field(default=0, description="Exit-button presses, cumulative since its start")


CompartmentDoor = Literal["closed", "open", "fault"]


class Compartment(Frozen):
    no: int = Field(ge=1, le=MAX_COMPARTMENTS, description="Compartment number on the bank")
    door: CompartmentDoor
    occupied: bool = Field(description="The compartment's presence sensor sees an item")
    occupied_since: DeviceTime | None = Field(default=None, description="When the item was deposited (device clock)")


class LockerBank(Frozen):
    """``locker.bank``: every compartment of one bank, on change and in the periodic snapshot (the centre
    decides from it which items stayed too long: the limit is the hall's, not the device's)."""

    bank: Line = Field(min_length=1, max_length=32)
    board: Literal["ok", "unreachable"]
    compartments: list[Compartment] = Field(default_factory=list, max_length=MAX_COMPARTMENTS)


class LockerParcel(Frozen):
    """``locker.parcel``: an item deposited in or collected from a compartment, by its opaque id only."""

    bank: Line = Field(min_length=1, max_length=32)
    compartment: int = Field(ge=1, le=MAX_COMPARTMENTS)
    action: Literal["deposit", "collect"]
    parcel: str = Field(pattern=UUID_PATTERN, description="Opaque id the agent drew at deposit (never a person's)")
    held_s: float | None = Field(default=None, ge=0, le=10 * 365 * 86400, description="collect: how long it stayed")


class LockerAlarm(Frozen):
    """``locker.alarm``: a compartment whose door does not take its state, or the bank's board not answering."""

    bank: Line = Field(min_length=1, max_length=32)
    compartment: int | None = Field(default=None, ge=1, le=MAX_COMPARTMENTS, description="None: the whole bank")
    alarm: Literal["door_fault", "offline"]
    active: bool = True
    since: DeviceTime | None = Field(default=None, description="When the condition began (device clock)")


NetTarget = Literal["gateway", "dns", "centre", "extranet"]


class NetProbe(Frozen):
    target: NetTarget
    ok: bool
    ms: float | None = Field(default=None, ge=0, le=600_000, description="How long the probe took")
    detail: Prose = Field(default="", max_length=200, description="Why it failed (or how it answered)")


class NetCheck(Frozen):
    """``duty.netcheck``: the daily network check a kiosk's agent ran itself (QP 000:389 「网络日常检查」)."""

    ok: bool = Field(description="Every configured probe passed")
    probes: list[NetProbe] = Field(min_length=1, max_length=8)
    trigger: Literal["daily", "command", "start"] = "daily"


class PatrolScan(Frozen):
    """``patrol.scan``: a duty officer's round reached a device (the code on it scanned by a handheld)."""

    officer: Line = Field(min_length=1, max_length=64, description="Pseudonymous staff id, never a name")
    point: Line = Field(min_length=1, max_length=64, description="The device scanned (its id in the site)")
    finding: Literal["ok", "issue"] = Field(default="ok", description="issue: the officer marked a problem here")
