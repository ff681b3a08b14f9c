"""The lock board's driver: STATUS reads every compartment, OPEN releases one lock.

Wire (drivers/rs485/frame.py): STATUS 0x50 answers ``n`` then one byte per compartment: bit 0 door open,
bit 1 item present (the compartment's infrared sensor), bit 2 lock fault (the lock did not latch or release).
OPEN 0x51 ``no`` answers ``no, 1`` when the lock released. Who deposits and who collects is the locker
application's business (its pick-up codes stay in it); the board knows compartments, doors and items only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from config.base import Section
from drivers.rs485.frame import Frame
from drivers.rs485.port import BusError, SerialPort, SerialPortConfig
from protocol.hall_events import MAX_COMPARTMENTS

STATUS, OPEN = 0x50, 0x51


class SerialLockerBoardConfig(Section):
    type: Literal["serial"] = Field(default="serial", description="A board on an RS-485 serial port")
    port: SerialPortConfig = Field(description="The RS-485 adapter the board hangs on")
    address: int = Field(default=1, ge=0, le=255, description="The board's bus address")
    compartments: int = Field(default=16, ge=1, le=MAX_COMPARTMENTS, description="Compartments wired to the board")


@dataclass(frozen=True, slots=True)
class CompartmentReading:
    no: int  # 1-based, as printed on the doors
    open: bool
    occupied: bool
    fault: bool


class LockerBoard:
    def __init__(self, cfg: SerialLockerBoardConfig, port: SerialPort | None = None) -> None:
        self.cfg = cfg
        self.port = port or SerialPort(cfg.port)

    def status(self) -> list[CompartmentReading]:
        data = self.port.request(Frame(self.cfg.address, STATUS)).data
        if not data or len(data) != 1 + data[0] or data[0] < self.cfg.compartments:
            raise BusError(self.cfg.port.path, f"status of {len(data)} bytes does not cover {self.cfg.compartments}")
        return [
            CompartmentReading(no, bool(b & 1), bool(b & 2), bool(b & 4))
            for no, b in enumerate(data[1 : 1 + self.cfg.compartments], start=1)
        ]

    def open(self, no: int) -> bool:
        if not 1 <= no <= self.cfg.compartments:
            raise ValueError(f"compartment {no}: this bank has 1..{self.cfg.compartments}")
        return self.port.request(Frame(self.cfg.address, OPEN, bytes([no]))).data == bytes([no, 1])

    def close(self) -> None:
        self.port.close()
