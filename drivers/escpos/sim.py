"""The simulated twin: a USB receipt printer written as a pyusb backend on drivers/usbsim.py (pyusb's
own find/write/read run unchanged against it, as against libusb). Used by the tests, the demo and the
simulator.

The model, kept to what the agent must react to:
- a roll of ``paper_mm``; each printed line and feed uses paper; at ``near_end_mm`` the near-end
  sensor trips, at 0 printing stops and further print data waits in a bounded receive buffer
  (when that is full, writes time out as a real printer NAKs them) until ``refill()``;
- cover open, autocutter error (recoverable by DLE ENQ), unrecoverable error, head overheat
  (auto-recoverable) all stop printing too;
- DLE EOT n and DLE ENQ n are executed on receipt, ahead of queued print data (real-time commands);
- ``answer_status = False``: a printer that takes DLE EOT but never answers (reads time out);
  ``garbage_status = True``: it answers 0x00, which is not a status byte;
- ``unplug()`` / ``plug()``: every handle dies with ENODEV, ``find`` sees nothing, and a replug is a
  new device (new address) with usblp bound to it again.
Timeouts are immediate: the sim never sleeps.
"""

from __future__ import annotations

from typing import Any

import usb.core

from drivers.escpos.commands import CUT_AFTER_FEED, DLE, ESC, FS, GS, LF
from drivers.usbsim import TIMEOUT, Handle, SimulatedUsbDevice

VENDOR_ID = 0x0416  # Winbond: the USB chip of many Chinese POS-58/POS-80 printers
PRODUCT_ID = 0x5011
OUT_EP = 0x01
IN_EP = 0x81

# Parameter bytes after ESC x / GS x / FS x for the commands the parser knows; others take none.
_ESC_ARGS = {0x21: 1, 0x2D: 1, 0x33: 1, 0x45: 1, 0x47: 1, 0x4A: 1, 0x4D: 1, 0x52: 1, 0x61: 1, 0x64: 1, 0x74: 1}
_GS_ARGS = {0x21: 1, 0x42: 1, 0x48: 1, 0x61: 1, 0x66: 1, 0x68: 1, 0x77: 1}
_FS_ARGS = {0x21: 1, 0x43: 1}


class SimulatedUsbPrinter(SimulatedUsbDevice):
    """A USB ESC/POS receipt printer. Set the public attributes to stage a condition."""

    has_strings = True
    attributes = 0xC0  # self-powered

    def __init__(
        self,
        *,
        vendor_id: int = VENDOR_ID,
        product_id: int = PRODUCT_ID,
        paper_mm: float = 50_000.0,
        near_end_mm: float = 2_000.0,
        mm_per_line: float = 4.25,
        cut_feed_mm: float = 12.0,
        buffer_bytes: int = 4096,
        bidirectional: bool = True,
    ) -> None:
        super().__init__(
            vendor_id=vendor_id,
            product_id=product_id,
            out_ep=OUT_EP,
            in_ep=IN_EP if bidirectional else None,
            kernel_driver=True,  # usblp binds a printer-class interface
        )
        self.roll_mm = paper_mm
        self.paper_mm = paper_mm
        self.near_end_mm = near_end_mm
        self.mm_per_line = mm_per_line
        self.cut_feed_mm = cut_feed_mm
        self.buffer_bytes = buffer_bytes
        self.bidirectional = bidirectional
        # Conditions a test or the demo stages.
        self.cover_open = False
        self.cutter_error = False
        self.unrecoverable = False
        self.overheated = False
        self.feed_button = False
        self.answer_status = True
        self.garbage_status = False
        # What happened, for assertions.
        self.received = bytearray()
        self.printed: list[bytes] = []
        self.cuts = 0
        self.status_queries: list[int] = []
        self.enquiries: list[int] = []
        self.chinese_mode = False
        # Device internals.
        self._replies = bytearray()
        self._queue = bytearray()
        self._line = bytearray()
        self._carry = b""

    # -- staging -------------------------------------------------------------------------------

    def unplug(self) -> None:
        super().unplug()
        self._replies.clear()
        self._carry = b""

    def plug(self) -> None:
        """Reconnect: a new device on the bus, configured by the kernel, with usblp bound again."""
        super().plug()
        self._run()

    def refill(self, paper_mm: float | None = None) -> None:
        """Load a new roll; printing held back by paper end resumes."""
        self.paper_mm = self.roll_mm if paper_mm is None else paper_mm
        self._run()

    def lines(self, encoding: str = "gb18030") -> list[str]:
        """The printed lines as text."""
        return [line.decode(encoding) for line in self.printed]

    @property
    def queued(self) -> int:
        """Print data received but held back (paper end, cover, error)."""
        return len(self._queue)

    def status_byte(self, n: int) -> int | None:
        """The byte a real printer in this state returns to DLE EOT n (None: n is not a status group)."""
        paper_end = self.paper_mm <= 0
        byte = 0x12
        if n == 1:
            offline = self._stopped() or self.feed_button
            byte |= 0x08 * offline | 0x20 * self.cutter_error | 0x40 * self.feed_button
        elif n == 2:
            error = self.cutter_error or self.unrecoverable or self.overheated
            byte |= 0x04 * self.cover_open | 0x08 * self.feed_button | 0x20 * paper_end | 0x40 * error
        elif n == 3:
            byte |= 0x08 * self.cutter_error | 0x20 * self.unrecoverable | 0x40 * self.overheated
        elif n == 4:
            byte |= 0x0C * (self.paper_mm <= self.near_end_mm) | 0x60 * paper_end
        else:
            return None
        return byte

    @property
    def interface_class(self) -> tuple[int, int, int]:  # type: ignore[override]
        """Printer class, printer subclass; protocol 2 bidirectional (status readable), 1 write-only."""
        return (7, 1, 2 if self.bidirectional else 1)

    # -- IBackend: transfers -------------------------------------------------------------------

    def bulk_write(self, dev_handle: Handle, ep: int, intf: int, data: Any, timeout: int) -> int:
        self._claimed_or_raise(dev_handle, intf)
        chunk = bytes(data)
        realtime, payload, carry = _split_realtime(self._carry + chunk)
        if self._stopped() and len(self._queue) + len(payload) > self.buffer_bytes:
            raise usb.core.USBTimeoutError(*TIMEOUT)  # buffer full: the printer NAKs, nothing is taken
        self._carry = carry
        self.received += chunk
        self._queue += payload
        self._run()
        for command, n in realtime:
            self._realtime(command, n)
        self._run()
        return len(chunk)

    def bulk_read(self, dev_handle: Handle, ep: int, intf: int, buff: Any, timeout: int) -> int:
        self._claimed_or_raise(dev_handle, intf)
        if not self._replies:
            raise usb.core.USBTimeoutError(*TIMEOUT)
        n = min(len(buff), len(self._replies))
        for i in range(n):
            buff[i] = self._replies[i]
        del self._replies[:n]
        return n

    # -- the printer ---------------------------------------------------------------------------

    def _stopped(self) -> bool:
        return self.paper_mm <= 0 or self.cover_open or self.cutter_error or self.unrecoverable or self.overheated

    def _realtime(self, command: int, n: int) -> None:
        if command == 0x04:  # DLE EOT n
            self.status_queries.append(n)
            byte = self.status_byte(n)
            if self.answer_status and byte is not None:
                self._replies.append(0x00 if self.garbage_status else byte)
        elif command == 0x05:  # DLE ENQ n: only recoverable errors; the cause is taken as removed
            self.enquiries.append(n)
            if n in (1, 2) and self.cutter_error and not self.unrecoverable:
                self.cutter_error = False
                if n == 2:
                    self._queue.clear()
                    self._line.clear()

    def _run(self) -> None:
        while self._queue and not self._stopped():
            used = self._step(self._queue)
            if used == 0:  # a command split across writes: wait for the rest
                return
            del self._queue[:used]

    def _step(self, buf: bytearray) -> int:
        """Execute the command at the head of ``buf``; return the bytes it used (0: incomplete)."""
        head = buf[0]
        if head == LF:
            self.printed.append(bytes(self._line))
            self._line.clear()
            self._feed(self.mm_per_line)
            return 1
        if head == GS and len(buf) >= 3 and buf[1] == 0x56:  # GS V m [n]: cut
            size = 4 if buf[2] in CUT_AFTER_FEED else 3
            if len(buf) < size:
                return 0
            if size == 4:
                self._feed(self.cut_feed_mm)
            self.cuts += 1
            return size
        if head in (ESC, GS, FS, DLE):
            return self._control(buf)
        if head != 0x0D:
            self._line.append(head)
        return 1

    def _control(self, buf: bytearray) -> int:
        if len(buf) < 2:
            return 0
        head, code = buf[0], buf[1]
        if head == DLE:  # DLE EOT/ENQ were taken on receipt; DLE DC4 fn m t pulses the drawer
            return (5 if len(buf) >= 5 else 0) if code == 0x14 else 1
        args = {ESC: _ESC_ARGS, GS: _GS_ARGS, FS: _FS_ARGS}[head].get(code, 0)
        if head == GS and code == 0x56:
            return 0  # GS V without its m yet
        if len(buf) < 2 + args:
            return 0
        if head == ESC and code == 0x40:  # ESC @ clears the line being composed
            self._line.clear()
        elif head == ESC and code == 0x64:  # ESC d n
            self._feed(buf[2] * self.mm_per_line)
        elif head == FS and code in (0x26, 0x2E):  # FS & / FS .
            self.chinese_mode = code == 0x26
        return 2 + args

    def _feed(self, mm: float) -> None:
        self.paper_mm = max(0.0, self.paper_mm - mm)


def _split_realtime(data: bytes) -> tuple[list[tuple[int, int]], bytes, bytes]:
    """Take DLE EOT n / DLE ENQ n out of ``data`` as a printer's receive interrupt does.
    Returns (commands, the rest for the print queue, an incomplete tail to prepend next time)."""
    commands: list[tuple[int, int]] = []
    rest = bytearray()
    i = 0
    while i < len(data):
        if data[i] == DLE:
            if i + 1 >= len(data):
                return commands, bytes(rest), data[i:]
            if data[i + 1] in (0x04, 0x05):
                if i + 2 >= len(data):
                    return commands, bytes(rest), data[i:]
                commands.append((data[i + 1], data[i + 2]))
                i += 3
                continue
        rest.append(data[i])
        i += 1
    return commands, bytes(rest), b""
