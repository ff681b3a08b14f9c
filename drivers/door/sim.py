"""The door controller's twin: a real controller's answers on a pty pair, from a model of its doors.

People act on it (``grant`` a card or the exit button: the relay unlocks for ``grant_s``; ``open_door``, ``shut_door``;
``force``: opened while locked), time moves on the given monotonic clock (the demo's scaled one), and ``mute``
is a controller without power. The driver reads it exactly as it reads the real one.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.door.controller import STATUS, UNLOCK
from drivers.rs485.frame import Frame
from drivers.rs485.twin import PtyTwin


@dataclass(slots=True)
class _Door:
    open: bool = False
    unlocked_until: float = 0.0
    lock_fault: bool = False
    grants: int = 0
    exits: int = 0


class SimulatedDoorController(PtyTwin):
    def __init__(
        self, addr: int = 1, doors: int = 1, grant_s: float = 5.0, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.doors = [_Door() for _ in range(doors)]
        self.grant_s = grant_s
        self.monotonic = monotonic
        super().__init__(addr)

    # -- what people do ------------------------------------------------------------------------------
    def grant(self, door: int = 0, exit_button: bool = False) -> None:
        with self.lock:
            d = self.doors[door]
            d.unlocked_until = self.monotonic() + self.grant_s
            if exit_button:
                d.exits += 1
            else:
                d.grants += 1

    def open_door(self, door: int = 0) -> None:
        with self.lock:
            self.doors[door].open = True

    def shut_door(self, door: int = 0) -> None:
        with self.lock:
            self.doors[door].open = False

    def force(self, door: int = 0) -> None:
        with self.lock:
            self.doors[door].unlocked_until = 0.0
            self.doors[door].open = True

    def set_lock_fault(self, fault: bool, door: int = 0) -> None:
        with self.lock:
            self.doors[door].lock_fault = fault

    # -- the wire ------------------------------------------------------------------------------------
    def answer(self, request: Frame) -> Frame | None:
        now = self.monotonic()
        if request.cmd == STATUS:
            data = bytes([len(self.doors)]) + b"".join(
                struct.pack(">BBBII", d.open, now < d.unlocked_until, d.lock_fault, d.grants, d.exits)
                for d in self.doors
            )
            return Frame(self.addr, STATUS, data)
        if request.cmd == UNLOCK and request.data and request.data[0] < len(self.doors):
            self.doors[request.data[0]].unlocked_until = now + self.grant_s
            return Frame(self.addr, UNLOCK, bytes([request.data[0], 1]))
        return None
