"""The lock board's twin: a real board's answers on a pty pair, from a model of its compartments.

People act on it: ``release`` a lock (the locker application does, or the OPEN command), ``put``/``take`` an
item, ``shut`` the door; ``jam`` a lock (it neither latches nor releases); ``mute`` is a board without power.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.locker.board import OPEN, STATUS
from drivers.rs485.frame import Frame
from drivers.rs485.twin import PtyTwin


@dataclass(slots=True)
class _Box:
    open: bool = False
    occupied: bool = False
    fault: bool = False


class SimulatedLockerBoard(PtyTwin):
    def __init__(self, addr: int = 1, compartments: int = 16) -> None:
        self.boxes = [_Box() for _ in range(compartments)]
        super().__init__(addr)

    def _box(self, no: int) -> _Box:
        return self.boxes[no - 1]

    def release(self, no: int) -> None:
        with self.lock:
            if not self._box(no).fault:
                self._box(no).open = True

    def put(self, no: int) -> None:
        with self.lock:
            self._box(no).occupied = True

    def take(self, no: int) -> None:
        with self.lock:
            self._box(no).occupied = False

    def shut(self, no: int) -> None:
        with self.lock:
            self._box(no).open = False

    def jam(self, no: int, fault: bool = True) -> None:
        with self.lock:
            self._box(no).fault = fault

    def answer(self, request: Frame) -> Frame | None:
        if request.cmd == STATUS:
            data = bytes([len(self.boxes)]) + bytes(b.open | b.occupied << 1 | b.fault << 2 for b in self.boxes)
            return Frame(self.addr, STATUS, data)
        if request.cmd == OPEN and request.data and 1 <= request.data[0] <= len(self.boxes):
            box = self._box(request.data[0])
            box.open = box.open or not box.fault
            return Frame(self.addr, OPEN, bytes([request.data[0], 0 if box.fault else 1]))
        return None
