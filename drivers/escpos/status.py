"""Decode ESC/POS real-time status (the replies to DLE EOT 1..4) into a PrinterStatus.

Pure: bytes in, a frozen value out, no I/O. The rule that matters: a group the printer did not
answer, or answered with a byte that is not a status byte, decodes to ``None`` ("unknown") for
every field of that group, never to False or True. python-escpos turns a missing reply into
"no paper" (peers.md section 15), which pages a technician for a full roll; here an unanswered
query is a communication fact, and paper_state says "unknown".

Each reply is one byte whose fixed bits are 0xx1xx10 (bit 0 = 0, bit 1 = 1, bit 4 = 1, bit 7 = 0).
Bit meanings (Epson ESC/POS reference, DLE EOT; the same on Bixolon, Citizen, HPRT, Xprinter):

- n=1 printer: bit 2 drawer pin 3 (not used here), bit 3 offline, bit 5 waiting for online
  recovery, bit 6 paper feed button pressed. Older models (TM-T88III, TM-U295) leave bits 5 and 6
  undefined, so those two fields are informative only and never count as faults.
- n=2 offline cause: bit 2 cover open, bit 3 paper being fed by the feed button, bit 5 printing
  stopped by paper end, bit 6 error.
- n=3 error cause: bit 2 recoverable error (mechanical error on some models, undefined on older
  ones), bit 3 autocutter error, bit 5 unrecoverable error, bit 6 auto-recoverable error (head
  overheat, cover opened while printing).
- n=4 roll sensor: bits 2,3 near-end; bits 5,6 roll end. Epson sets each pair together. Other
  makers do not: Citizen kiosk models report two near-end sensors on bit 2 and bit 3 separately,
  and some (PPU-231II) report the *presenter* sensor on bit 6. So near-end is "either of bits 2,3"
  and roll end is bit 5 alone: correct for Epson, and neither misses a sensor nor mistakes an empty
  presenter for an empty roll on the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Literal

from drivers.escpos.commands import (
    STATUS_ERROR_CAUSE,
    STATUS_GROUPS,
    STATUS_OFFLINE_CAUSE,
    STATUS_PRINTER,
    STATUS_ROLL_SENSOR,
)

FIXED_MASK = 0x93  # bits 7, 4, 1, 0
FIXED_VALUE = 0x12  # bit 4 and bit 1 on, bit 7 and bit 0 off
ALL_CLEAR = FIXED_VALUE  # a valid reply with no condition set

PaperState = Literal["ok", "low", "empty", "unknown"]


@dataclass(frozen=True, slots=True)
class _Bit:
    name: str
    mask: int
    inverted: bool = False  # the byte reports "offline"; the field says "online"


GROUPS: dict[int, tuple[_Bit, ...]] = {
    STATUS_PRINTER: (
        _Bit("online", 0x08, inverted=True),
        _Bit("waiting_online_recovery", 0x20),
        _Bit("feed_button", 0x40),
    ),
    STATUS_OFFLINE_CAUSE: (
        _Bit("cover_open", 0x04),
        _Bit("paper_feed_by_button", 0x08),
        _Bit("stopped_by_paper_end", 0x20),
        _Bit("error", 0x40),
    ),
    STATUS_ERROR_CAUSE: (
        _Bit("recoverable_error", 0x04),
        _Bit("autocutter_error", 0x08),
        _Bit("unrecoverable_error", 0x20),
        _Bit("auto_recoverable_error", 0x40),
    ),
    STATUS_ROLL_SENSOR: (
        _Bit("paper_near_end", 0x0C),
        _Bit("paper_end", 0x20),
    ),
}


@dataclass(frozen=True, slots=True)
class PrinterStatus:
    """One reading of the printer. Every condition is True, False or None (unknown: not answered)."""

    reachable: bool
    raw: dict[int, int | None] = field(default_factory=dict, hash=False)
    # n=1
    online: bool | None = None
    waiting_online_recovery: bool | None = None
    feed_button: bool | None = None
    # n=2
    cover_open: bool | None = None
    paper_feed_by_button: bool | None = None
    stopped_by_paper_end: bool | None = None
    error: bool | None = None
    # n=3
    recoverable_error: bool | None = None
    autocutter_error: bool | None = None
    unrecoverable_error: bool | None = None
    auto_recoverable_error: bool | None = None
    # n=4
    paper_near_end: bool | None = None
    paper_end: bool | None = None

    @classmethod
    def unreachable(cls) -> PrinterStatus:
        """The printer could not be talked to at all (unplugged, not found, no permission)."""
        return cls(reachable=False, raw=dict.fromkeys(STATUS_GROUPS))

    @property
    def paper_state(self) -> PaperState:
        # Either sensor group saying "paper end" is enough: n=2 bit 5 is the printer telling us it
        # stopped for that reason, even when n=4 went unanswered.
        if self.paper_end or self.stopped_by_paper_end:
            return "empty"
        if self.paper_near_end:
            return "low"
        if self.paper_end is False and self.paper_near_end is False:
            return "ok"
        return "unknown"

    @property
    def faults(self) -> list[str]:
        """Conditions known to be true that stop or threaten printing, most urgent first."""
        if not self.reachable:
            return ["unreachable"]
        found = [
            code
            for code, on in (
                ("offline", self.online is False),
                ("cover_open", self.cover_open),
                ("paper_end", self.paper_state == "empty"),
                ("unrecoverable_error", self.unrecoverable_error),
                ("autocutter_error", self.autocutter_error),
                ("recoverable_error", self.recoverable_error),
                ("auto_recoverable_error", self.auto_recoverable_error),
            )
            if on
        ]
        # n=2 bit 6 is the summary; name it only when n=3 gave no specific cause.
        if self.error and not any(c.endswith("_error") for c in found):
            found.append("error")
        return found

    @property
    def unknown(self) -> list[str]:
        """Fields the printer did not answer for."""
        return [f.name for f in fields(self) if f.name not in ("reachable", "raw") and getattr(self, f.name) is None]

    @property
    def clean(self) -> bool:
        """Reachable, every group answered, nothing wrong (near-end is a warning, not a fault)."""
        return self.reachable and not self.unknown and not self.faults


def valid_status_byte(reply: bytes | None) -> int | None:
    """The status byte if ``reply`` is exactly one byte with the fixed bits right, else None."""
    if reply is None or len(reply) != 1:
        return None
    byte = reply[0]
    return byte if byte & FIXED_MASK == FIXED_VALUE else None


def decode(replies: Mapping[int, bytes | None]) -> PrinterStatus:
    """Decode the replies to DLE EOT 1..4 (keyed by n). A missing, empty, too long or invalid
    reply leaves that group's fields None."""
    values: dict[str, bool | None] = {}
    raw: dict[int, int | None] = {}
    for n, bits in GROUPS.items():
        reply = replies.get(n)
        # Keep a single wrong byte for diagnosis; a multi-byte answer has no one byte to keep.
        raw[n] = reply[0] if reply is not None and len(reply) == 1 else None
        byte = valid_status_byte(reply)
        for bit in bits:
            values[bit.name] = None if byte is None else bool(byte & bit.mask) != bit.inverted
    return PrinterStatus(reachable=True, raw=raw, **values)
