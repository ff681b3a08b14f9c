"""The kiosk's A4 printer over IPP: ``get_status(A4PrinterConfig(url=...)) -> A4Status``.

codec.py speaks IPP/1.1 bytes, status.py turns printer attributes into an A4Status, client.py
sends the request. The simulated twin is a real emulated printer, CUPS's ``ippeveprinter``
(tests/support/ippeveprinter.py).
"""

from drivers.ipp.client import A4PrinterConfig, get_status
from drivers.ipp.codec import IppError
from drivers.ipp.status import A4Status, Counters, Media, Supply, Tray

__all__ = ["A4PrinterConfig", "A4Status", "Counters", "IppError", "Media", "Supply", "Tray", "get_status"]
