"""ESC/POS thermal receipt printers (the kiosk's receipt printer).

- ``status``: DLE EOT decoding into PrinterStatus (pure; unknown is None, never "no paper")
- ``usb``: UsbPrinterConfig + UsbTransport (pyusb), the ``_raw``/``_read`` primitive pair
- ``printer``: ReceiptPrinter (status, recover, print_receipt, test_slip) on any transport
- ``sim``: SimulatedUsbPrinter, a pyusb backend standing in for the device
"""

from drivers.escpos.errors import (
    PrinterAccessDenied,
    PrinterDisconnected,
    PrinterError,
    PrinterNotFound,
    PrinterStalled,
)
from drivers.escpos.printer import ReceiptPrinter, Transport
from drivers.escpos.status import PrinterStatus, decode
from drivers.escpos.usb import UsbPrinterConfig, UsbTransport

__all__ = [
    "PrinterAccessDenied",
    "PrinterDisconnected",
    "PrinterError",
    "PrinterNotFound",
    "PrinterStalled",
    "PrinterStatus",
    "ReceiptPrinter",
    "Transport",
    "UsbPrinterConfig",
    "UsbTransport",
    "decode",
]
