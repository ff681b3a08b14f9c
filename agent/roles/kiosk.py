"""The 24-hour self-service kiosk: receipt printer (ESC/POS over USB), A4 printer (IPP), the kiosk
application's health and its usage counters.

Publishes ``kiosk.state`` (up, degraded or down, with the functions affected), ``kiosk.fault``
(component, code, since; and its clearing), ``kiosk.consumable`` (state, level, raw values) and
``kiosk.usage``: on change, debounced per key, plus a periodic snapshot of everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from agent.commands.registry import CommandFailed, CommandSpec, NoArgs, Registry
from agent.device import DeviceContext
from agent.roles.debounce import Debouncer
from agent.roles.snapshots import SnapshotTimer
from agent.roles.usage import HttpUsageConfig, LogCounter, LogUsageConfig, UsageConfig, UsageError, read_http
from config.base import Section
from drivers.escpos import PrinterError, PrinterStatus, ReceiptPrinter, UsbPrinterConfig, UsbTransport
from drivers.ipp.client import A4PrinterConfig, get_status
from drivers.ipp.status import A4Status
from protocol.envelope import Frozen
from protocol.events import Fault, KioskConsumable, KioskState, KioskUsage

if TYPE_CHECKING:
    from agent.selfheal import AppWatch
    from drivers.escpos.sim import SimulatedUsbPrinter

log = logging.getLogger(__name__)
RECEIPT, A4, APP = "receipt_printer", "a4_printer", "app"


class SimulatedReceiptConfig(Section):
    """The simulated twin: a pyusb backend standing in for the USB device; the real driver runs on it."""

    type: Literal["usb-sim"] = "usb-sim"
    paper_mm: float = Field(default=50_000, gt=0, description="Roll length at start")
    near_end_mm: float = Field(default=2_000, ge=0, description="Near-end sensor trips below this")


ReceiptConfig = Annotated[UsbPrinterConfig | SimulatedReceiptConfig, Field(discriminator="type")]


class KioskConfig(Section):
    receipt: ReceiptConfig | None = Field(default=None, description="The thermal receipt/ticket printer")
    a4: A4PrinterConfig | None = Field(default=None, description="The A4 printer (IPP, to CUPS or the printer)")
    usage: UsageConfig | None = Field(default=None, description="Where the usage counters come from")
    functions: list[str] = Field(
        default_factory=lambda: ["ticket", "print", "query"], description="What the kiosk offers citizens"
    )
    receipt_functions: list[str] = Field(default_factory=lambda: ["ticket"], description="Lost without receipts")
    a4_functions: list[str] = Field(default_factory=lambda: ["print"], description="Lost without the A4 printer")
    poll_s: float = Field(default=10, gt=0, le=3600, description="How often printers and counters are read")
    debounce_s: float = Field(
        default=10,
        ge=0,
        le=3600,
        description="At most one event per key in this window; also how late a change may reach the centre",
    )
    snapshot_s: float = Field(default=900, gt=0, description="Everything is re-published this often")


@dataclass(slots=True)
class Reading:
    """One poll of everything the kiosk watches."""

    receipt: PrinterStatus | None = None
    a4: A4Status | None = None
    app: str = "unknown"
    usage: dict[str, int] | None = None
    faults: dict[tuple[str, str], str] = field(default_factory=dict)  # (component, code) -> detail
    consumables: dict[str, KioskConsumable] = field(default_factory=dict)


class KioskRole:
    def __init__(self, device: DeviceContext, cfg: KioskConfig, app_watch: AppWatch | None = None) -> None:
        """``app_watch``: the application's self-healing watch (agent/selfheal.py), whose state the kiosk reports."""
        self.device = device
        self.app_watch = app_watch
        self.cfg = cfg
        self.receipt_sim: SimulatedUsbPrinter | None = None
        self.receipt: ReceiptPrinter | None = self._receipt_printer(cfg.receipt)
        self._usage_log = LogCounter(cfg.usage, device.state) if isinstance(cfg.usage, LogUsageConfig) else None
        self._debounce: Debouncer[Any] = Debouncer(cfg.debounce_s, device.clock.monotonic)
        self._since: dict[tuple[str, str], datetime] = {}
        self._last: Reading | None = None
        self._receipt_lock = asyncio.Lock()  # pyusb calls run in a thread, one at a time

    def _receipt_printer(self, cfg: UsbPrinterConfig | SimulatedReceiptConfig | None) -> ReceiptPrinter | None:
        if cfg is None:
            return None
        if isinstance(cfg, SimulatedReceiptConfig):
            from drivers.escpos.sim import SimulatedUsbPrinter  # a pyusb backend: only for a configured twin

            self.receipt_sim = SimulatedUsbPrinter(paper_mm=cfg.paper_mm, near_end_mm=cfg.near_end_mm)
            usb = UsbPrinterConfig(vendor_id=self.receipt_sim.vendor_id, product_id=self.receipt_sim.product_id)
            return ReceiptPrinter(UsbTransport(usb, backend=self.receipt_sim))
        return ReceiptPrinter(UsbTransport(cfg))

    def register_commands(self, registry: Registry) -> None:
        registry.register(CommandSpec("printer_test_slip", NoArgs, self._cmd_test_slip))
        registry.register(CommandSpec("printer_recover", NoArgs, self._cmd_recover))

    # -- the loop ----------------------------------------------------------------------------------
    async def run(self) -> None:
        snapshots = SnapshotTimer(self.cfg.snapshot_s, self.device.clock.monotonic)
        try:
            while True:
                reading = await self.read()
                await self.publish(reading, snapshots.due())
                await asyncio.sleep(self.cfg.poll_s)
        finally:
            if self.receipt is not None:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.receipt.close)

    async def read(self) -> Reading:
        r = Reading()
        if self.receipt is not None:
            async with self._receipt_lock:
                r.receipt = await asyncio.to_thread(self.receipt.status)
            self._receipt_findings(r)
        if self.cfg.a4 is not None:
            r.a4 = await get_status(self.cfg.a4)
            self._a4_findings(r)
        if self.app_watch is not None:
            r.app = self.app_watch.state
            if r.app == "down":
                r.faults[(APP, "unhealthy")] = "the kiosk application fails its health probes"
        r.usage = await self._read_usage()
        return r

    def _receipt_findings(self, r: Reading) -> None:
        s = r.receipt
        assert s is not None
        for code in s.faults:
            r.faults[(RECEIPT, code)] = ""
        r.consumables["thermal_paper"] = KioskConsumable(
            consumable="thermal_paper",
            state=s.paper_state,
            raw={f"dle_eot_{n}": v for n, v in s.raw.items()},
        )

    def _a4_findings(self, r: Reading) -> None:
        a = r.a4
        assert a is not None
        for code in a.faults:
            r.faults[(A4, code)] = a.error or ""
        if not a.reachable:
            return
        for s in a.supplies:
            name = f"{s.kind}:{s.color}" if s.color else s.kind
            r.consumables[name] = KioskConsumable(
                consumable=name[:32],
                state=s.state,
                level_pct=s.level_pct,
                raw={"level": s.raw_level, "max_capacity": s.max_capacity, "name": s.name[:64]},
            )
        for tray in a.media.trays:
            name = f"a4_paper:{tray.name}"[:32]
            jam = any("jam" in reason for reason in a.state_reasons)
            r.consumables[name] = KioskConsumable(
                consumable=name,
                state="jam" if jam else tray.state,
                level_pct=tray.level_pct,
                raw={"level": tray.raw_level, "max_capacity": tray.max_capacity},
            )

    async def _read_usage(self) -> dict[str, int] | None:
        try:
            if isinstance(self.cfg.usage, HttpUsageConfig):
                return await read_http(self.cfg.usage)
            if self._usage_log is not None:
                return await self._usage_log.read()
        except UsageError as exc:
            log.warning("%s", exc)
        return None

    # -- what the kiosk can still do ---------------------------------------------------------------
    def state_of(self, r: Reading) -> KioskState:
        if r.app == "down":
            return KioskState(state="down", functions_affected=list(self.cfg.functions))
        lost: list[str] = []
        if any(c == RECEIPT for c, _ in r.faults):
            lost += self.cfg.receipt_functions
        if any(c == A4 for c, _ in r.faults):
            lost += self.cfg.a4_functions
        lost = sorted(set(lost))
        if lost and set(lost) >= set(self.cfg.functions):
            return KioskState(state="down", functions_affected=lost)
        return KioskState(state="degraded" if lost else "up", functions_affected=lost)

    # -- publishing --------------------------------------------------------------------------------
    async def publish(self, r: Reading, snapshot: bool) -> None:
        now = self.device.clock.now()
        events: list[tuple[str, Frozen]] = []
        previous = self._last.faults if self._last else {}
        for key, detail in r.faults.items():
            self._since.setdefault(key, now)
            if key not in previous or snapshot:
                events += self._offer(f"fault:{key}", "kiosk.fault", self._fault(key, True, detail), snapshot)
        for key in previous.keys() - r.faults.keys():
            events += self._offer(f"fault:{key}", "kiosk.fault", self._fault(key, False, ""), snapshot)
            self._since.pop(key, None)
        events += self._offer("state", "kiosk.state", self.state_of(r), snapshot)
        for name, consumable in r.consumables.items():
            events += self._offer(f"consumable:{name}", "kiosk.consumable", consumable, snapshot)
        if r.usage is not None:
            events += self._offer("usage", "kiosk.usage", KioskUsage(counters=r.usage), snapshot)
        events += [(t, v) for (_, (t, v)) in self._debounce.due()]
        self._last = r
        for event_type, payload in events:
            await self.device.emit(event_type, payload)

    def _offer(self, key: str, event_type: str, payload: Frozen, snapshot: bool) -> list[tuple[str, Frozen]]:
        if snapshot:  # the periodic snapshot bypasses the debouncer (and resets it)
            self._debounce.offer(key, (event_type, payload))
            return [(event_type, payload)]
        out = self._debounce.offer(key, (event_type, payload))
        return [out] if out is not None else []

    def _fault(self, key: tuple[str, str], active: bool, detail: str) -> Fault:
        component, code = key
        since = self._since.get(key)
        return Fault(component=component, code=code[:64], active=active, since=since, detail=detail[:500])

    # -- commands this role adds -------------------------------------------------------------------
    async def _cmd_test_slip(self, _args: NoArgs) -> dict[str, Any]:
        printer = self._need_receipt()
        async with self._receipt_lock:
            try:
                status = await asyncio.to_thread(printer.test_slip)
            except PrinterError as exc:
                raise CommandFailed(str(exc)) from None
        return {"paper": status.paper_state, "faults": status.faults}

    async def _cmd_recover(self, _args: NoArgs) -> dict[str, Any]:
        printer = self._need_receipt()
        async with self._receipt_lock:
            ok = await asyncio.to_thread(printer.recover)
            status = await asyncio.to_thread(printer.status)
        if not ok:
            raise CommandFailed(f"the printer still reports: {', '.join(status.faults) or 'unknown state'}")
        return {"faults": status.faults}

    def _need_receipt(self) -> ReceiptPrinter:
        if self.receipt is None:
            raise CommandFailed("this kiosk has no receipt printer configured")
        return self.receipt

    async def print_receipt(self, lines: list[str]) -> None:
        """For the kiosk application's local print path (and the simulator)."""
        printer = self._need_receipt()
        async with self._receipt_lock:
            await asyncio.to_thread(printer.print_receipt, lines)
