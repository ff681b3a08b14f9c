"""The few ways talking to a receipt printer fails. Each names the device and says what to do."""

from __future__ import annotations


class PrinterError(Exception):
    """Base: ``device`` names the printer ("usb 0416:5011"), ``reason`` is what the OS/library said."""

    def __init__(self, device: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.device = device
        self.reason = reason


class PrinterNotFound(PrinterError):
    """No such printer is attached (or cannot be enumerated)."""

    def __init__(self, device: str, reason: str = "no matching device") -> None:
        super().__init__(
            device,
            reason,
            f"printer {device} not found ({reason}): check that it is powered and its cable is in; "
            "`lsusb` must list this VID:PID, else set vendor_id/product_id to what it shows",
        )


class PrinterDisconnected(PrinterError):
    """The printer went away while in use (unplugged, power cut, USB reset). The transport is
    closed; the next call finds and opens it again."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(
            device,
            reason,
            f"printer {device} disconnected ({reason}): check the cable and power; "
            "the next call reopens it, and a receipt being printed may be incomplete",
        )


class PrinterAccessDenied(PrinterError):
    """The printer is there but cannot be claimed: no permission, or another program holds it."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(
            device,
            reason,
            f"printer {device} cannot be opened ({reason}): give the agent's user access with a udev rule "
            "(MODE or GROUP for this VID:PID), and stop any other program (CUPS, a vendor tool) that holds it",
        )


class PrinterStalled(PrinterError):
    """The printer accepted no data within the timeout: it is attached but not taking data,
    usually because it is offline (cover open, paper out) with its receive buffer full."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(
            device,
            reason,
            f"printer {device} took no data ({reason}): it is probably offline with a full buffer; "
            "read status() for the cause (cover, paper, cutter) and fix it on site",
        )
