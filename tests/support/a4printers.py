"""The two A4 printers the IPP tests run the same assertions against: CUPS's ippeveprinter (a real emulated
printer, tests/support/ippeveprinter.py) and the project's simulated twin (drivers/ipp/sim.py), behind one
handle with the moves a technician makes at the printer (set a supply, load a tray, switch it off).
Whatever the twin answers differently from ippeveprinter shows up as a failing test, not as drift.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from drivers.ipp.sim import SimulatedA4Printer, SimulatedIppServer
from tests.support.ippeveprinter import IppEvePrinter

Kind = Literal["ippeveprinter", "twin"]
KINDS: tuple[Kind, ...] = ("ippeveprinter", "twin")


@dataclass(frozen=True)
class A4Under:
    """One printer under test. ``twin`` is the simulated printer itself (None for ippeveprinter)."""

    kind: Kind
    url: str
    set_supply: Callable[[str, int], object]  # by printer-supply-description, e.g. "Black Toner"
    set_tray: Callable[..., object]  # (tray="main", sheets=250, size="iso_a4_210x297mm")
    stop: Callable[[], None]  # switched off: connections are refused from here on
    twin: SimulatedA4Printer | None = None


@contextlib.asynccontextmanager
async def a4_printer(kind: Kind, workdir: Path) -> AsyncIterator[A4Under]:
    if kind == "ippeveprinter":
        eve = IppEvePrinter(workdir / "ippeveprinter").start()
        try:
            yield A4Under(kind, eve.url, eve.set_supply, eve.set_tray, eve.stop)
        finally:
            eve.stop()
            assert not eve.alive, "ippeveprinter outlived its test"
        return
    async with SimulatedIppServer() as server:
        twin = server.add()
        yield A4Under(kind, server.url(), twin.set_supply, twin.set_tray, server.close, twin)
