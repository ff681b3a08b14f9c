"""The door controller's driver: one STATUS request reads every door; UNLOCK opens one for its grant time.

Wire (drivers/rs485/frame.py): STATUS 0x30 answers ``n`` then per door 11 bytes: contact (0 closed, 1 open),
lock (0 locked, 1 unlocked), flags (bit 0: lock fault, the lock's bond sensor disagrees with its relay),
grants and exits as big-endian uint32. UNLOCK 0x31 ``door`` answers ``door, 1`` when the relay took it.
The controller decides who may enter (its own card list); nothing about a card or a person is ever read here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from config.base import Section
from drivers.rs485.frame import Frame
from drivers.rs485.port import BusError, SerialPort, SerialPortConfig

STATUS, UNLOCK = 0x30, 0x31
_DOOR = struct.Struct(">BBBII")


class SerialDoorControllerConfig(Section):
    type: Literal["serial"] = Field(default="serial", description="A board on an RS-485 serial port")
    port: SerialPortConfig = Field(description="The RS-485 adapter the controller hangs on")
    address: int = Field(default=1, ge=0, le=255, description="The controller's bus address (DIP switches)")
    doors: list[str] = Field(
        default_factory=lambda: ["main"], min_length=1, max_length=8, description="Names of its doors, in order"
    )


@dataclass(frozen=True, slots=True)
class DoorReading:
    door: str
    open: bool
    unlocked: bool
    lock_fault: bool
    grants: int
    exits: int


class DoorController:
    def __init__(self, cfg: SerialDoorControllerConfig, port: SerialPort | None = None) -> None:
        self.cfg = cfg
        self.port = port or SerialPort(cfg.port)

    def status(self) -> list[DoorReading]:
        """Every configured door; raises BusError when the controller does not answer or answers wrongly."""
        data = self.port.request(Frame(self.cfg.address, STATUS)).data
        if not data or len(data) != 1 + data[0] * _DOOR.size or data[0] < len(self.cfg.doors):
            why = f"status of {len(data)} bytes does not describe {len(self.cfg.doors)} doors"
            raise BusError(self.cfg.port.path, why)
        out = []
        for i, name in enumerate(self.cfg.doors):
            contact, lock, flags, grants, exits = _DOOR.unpack_from(data, 1 + i * _DOOR.size)
            out.append(DoorReading(name, contact == 1, lock == 1, bool(flags & 1), grants, exits))
        return out

    def unlock(self, door: str) -> bool:
        index = self.cfg.doors.index(door)
        data = self.port.request(Frame(self.cfg.address, UNLOCK, bytes([index]))).data
        return data == bytes([index, 1])

    def close(self) -> None:
        self.port.close()
