"""The duty officer's handheld for patrol rounds (QP 000 窗口巡查制度 「每天两次巡查」; WZ 002:133 定时巡查
上午 9:30, 下午 13:40): a QR scanner (drivers/qr/) reads the officer's duty card and the code on each device.

Codes: ``HFO1:{staff_id}`` on the officer's card (the pseudonymous staff id, as attendance uses; never a name)
signs the officer in until another card is scanned or ``officer_timeout_min`` passes; ``HFP1:{device}`` on the
label at each device is a patrol point, and ``HFP1:{device}:issue`` marks a problem seen there. Each point
scanned while an officer is signed in is a ``patrol.scan`` event; a point scanned with nobody signed in, or a
code of another kind, is refused and counted (``refused``), never sent: a raw code may be anything.
The centre decides from the scans which rounds were made (broker/duties/patrol.py).
"""

from __future__ import annotations

import logging
import re
from typing import Annotated, Literal

from pydantic import Field

from agent.device import DeviceContext
from config.base import Section
from drivers.qr.keyboard import EvdevScanner, QrScannerConfig, SimulatedScanner
from protocol.hall_events import PatrolScan

log = logging.getLogger(__name__)
OFFICER = re.compile(r"^HFO1:([A-Za-z0-9._-]{1,64})$")
POINT = re.compile(r"^HFP1:([A-Za-z0-9._-]{1,64})(:issue)?$")


class SimulatedScannerConfig(Section):
    type: Literal["sim"] = Field(default="sim", description="The simulated twin")
    gap_s: float = Field(default=0.5, gt=0, description="As the real scanner's decoder")


ScannerConfig = Annotated[QrScannerConfig | SimulatedScannerConfig, Field(discriminator="type")]


class PatrolConfig(Section):
    scanner: ScannerConfig = Field(description="The handheld's HID QR scanner (evdev), or its twin")
    officer_timeout_min: float = Field(
        default=120, gt=0, le=24 * 60, description="A signed-in officer is signed out after this long without a scan"
    )


class PatrolRole:
    def __init__(self, device: DeviceContext, cfg: PatrolConfig) -> None:
        self.device = device
        self.cfg = cfg
        self.sim: SimulatedScanner | None = None
        self.officer: str | None = None
        self._last_scan = float("-inf")
        self.refused = 0  # codes not taken (unknown kind, or a point with nobody signed in)

    def _scanner(self) -> EvdevScanner:
        cfg = self.cfg.scanner
        if isinstance(cfg, SimulatedScannerConfig):
            self.sim = SimulatedScanner()
            return EvdevScanner(QrScannerConfig(device="sim", grab=False, gap_s=cfg.gap_s), source=self.sim.events)
        return EvdevScanner(cfg)

    async def run(self) -> None:
        scanner = self._scanner()
        async for code in scanner.codes():
            await self.take(code)

    async def take(self, code: str) -> bool:
        """One scanned code; True when it was an officer's card or a point recorded."""
        now = self.device.clock.monotonic()
        if self.officer is not None and now - self._last_scan > self.cfg.officer_timeout_min * 60:
            self.officer = None
        if m := OFFICER.match(code):
            self.officer, self._last_scan = m.group(1), now
            return True
        m = POINT.match(code)
        if m is None or self.officer is None:
            self.refused += 1
            log.warning("patrol: code refused (%s)", "not a patrol code" if m is None else "no officer signed in")
            return False
        self._last_scan = now
        finding: Literal["ok", "issue"] = "issue" if m.group(2) else "ok"
        await self.device.emit("patrol.scan", PatrolScan(officer=self.officer, point=m.group(1), finding=finding))
        return True
