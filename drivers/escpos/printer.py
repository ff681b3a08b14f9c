"""ReceiptPrinter: status, recovery and receipts, built only on a transport's ``_raw`` / ``_read``.

Chinese text is encoded as GB18030, the national standard Chinese printers' font ROMs follow
(GB2312 and GBK are its one- and two-byte subsets), after FS & selects two-byte character mode.
GB18030 encodes every Unicode character, so a rare character in a name (a four-byte sequence)
never raises; a printer whose font has only the GBK plane prints a placeholder glyph for it.
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from drivers.escpos.commands import (
    CHINESE_MODE_OFF,
    CHINESE_MODE_ON,
    CUT_PARTIAL_AFTER_FEED,
    FEED_LINES,
    INIT,
    STATUS_GROUPS,
    recover_command,
    status_query,
)
from drivers.escpos.errors import (
    PrinterAccessDenied,
    PrinterDisconnected,
    PrinterError,
    PrinterNotFound,
    PrinterStalled,
)
from drivers.escpos.status import PrinterStatus, decode

READ_SIZE = 64  # a full-speed bulk packet: status is 1 byte, anything longer is not a status reply
DRAIN_TIMEOUT_MS = 20
DRAIN_MAX_READS = 8
CHINESE_ENCODINGS = frozenset({"gb18030", "gbk", "gb2312"})
_UNREACHABLE = (PrinterNotFound, PrinterAccessDenied, PrinterDisconnected)


class Transport(Protocol):
    """What a printer needs from a connection: bytes out, bytes back (None when nothing came)."""

    @property
    def name(self) -> str: ...

    def _raw(self, data: bytes) -> None: ...

    def _read(self, size: int, timeout_ms: int | None = None) -> bytes | None: ...

    def close(self) -> None: ...


class ReceiptPrinter:
    """A thermal receipt printer speaking ESC/POS. Thread-safe: one exchange at a time, so a status
    poll never reads a reply meant for another query."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.last_error: PrinterError | None = None  # from the latest call, None when it went through
        self._lock = threading.RLock()

    def close(self) -> None:
        self.transport.close()

    # -- status --------------------------------------------------------------------------------

    def status(self) -> PrinterStatus:
        """Query DLE EOT 1..4. Unanswered groups are unknown (None); an unreachable printer gives
        reachable=False with every field unknown. Never raises for a missing or silent printer."""
        with self._lock:
            self.last_error = None
            try:
                return self._query()
            except PrinterDisconnected as exc:
                # A replug between two polls leaves a dead handle: the first write fails and the
                # transport closes itself, so one more try reaches the new device at once.
                self.last_error = exc
            except (PrinterNotFound, PrinterAccessDenied) as exc:
                self.last_error = exc
                return PrinterStatus.unreachable()
            try:
                return self._query()
            except _UNREACHABLE as exc:
                self.last_error = exc
                return PrinterStatus.unreachable()

    def _query(self) -> PrinterStatus:
        self._drain()  # an Automatic Status Back packet or a late reply would shift every answer
        replies: dict[int, bytes | None] = {}
        for n in STATUS_GROUPS:
            try:
                self.transport._raw(status_query(n))
            except PrinterStalled as exc:
                # Attached but NAKing: its buffer is full. The remaining groups stay unknown.
                self.last_error = exc
                break
            replies[n] = self.transport._read(READ_SIZE)
            if replies[n] is None:
                self._drain()  # its answer may still come; it must not be read as the next group's
        return decode(replies)

    def _drain(self) -> None:
        for _ in range(DRAIN_MAX_READS):
            if not self.transport._read(READ_SIZE, timeout_ms=DRAIN_TIMEOUT_MS):
                return

    # -- recovery ------------------------------------------------------------------------------

    def recover(self, clear_buffers: bool = False) -> bool:
        """Send DLE ENQ 1 (restart from the failed line) or 2 (clear the buffers first), only when
        the status shows a recoverable error (autocutter, mechanical) and no unrecoverable one.
        Returns whether the status is clean afterwards."""
        with self._lock:
            before = self.status()
            if before.clean:
                return True
            recoverable = bool(before.autocutter_error or before.recoverable_error)
            if not recoverable or before.unrecoverable_error is not False:
                return False
            try:
                self.transport._raw(recover_command(clear_buffers))
            except PrinterError as exc:
                self.last_error = exc
                return False
            return self.status().clean

    # -- printing ------------------------------------------------------------------------------

    def print_receipt(self, lines: Sequence[str], encoding: str = "gb18030", feed_lines: int = 3) -> None:
        """Print ``lines`` and cut. Raises PrinterError if the bytes cannot be delivered.

        ESC/POS acknowledges nothing per job: call status() afterwards to learn whether it printed.
        Not retried on a disconnect, because a retry could print the receipt twice."""
        if not 0 <= feed_lines <= 255:
            raise ValueError("feed_lines must be 0..255")
        chinese = codecs.lookup(encoding).name in CHINESE_ENCODINGS
        data = bytearray(INIT)
        data += CHINESE_MODE_ON if chinese else CHINESE_MODE_OFF
        for line in lines:
            for part in line.split("\n"):
                data += printable(part).encode(encoding) + b"\n"
        data += FEED_LINES + bytes([feed_lines]) + CUT_PARTIAL_AFTER_FEED
        with self._lock:
            self.last_error = None
            try:
                self.transport._raw(bytes(data))
            except PrinterError as exc:
                self.last_error = exc
                raise

    def test_slip(self) -> PrinterStatus:
        """Print a slip with the status read just before (Chinese and ASCII), and return that status."""
        status = self.status()
        self.print_receipt(
            [
                "hallfleet 打印测试 / test slip",
                f"打印机 printer: {self.transport.name}",
                f"纸张 paper: {status.paper_state}",
                "故障 faults: " + (", ".join(status.faults) or "none"),
                "政务服务 24小时自助终端",
                datetime.now().astimezone().isoformat(timespec="seconds"),
            ]
        )
        return status


def printable(text: str) -> str:
    """Control characters become spaces: a DLE EOT or ESC inside a citizen's text must not reach
    the printer as a command (DLE EOT and DLE ENQ are executed even inside print data)."""
    return "".join(" " if ord(c) < 0x20 or ord(c) == 0x7F else c for c in text)
