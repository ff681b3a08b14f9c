"""The kiosk's A4 printer over IPP: ``get_status(A4PrinterConfig(url=...)) -> A4Status``, and ``print_job``.

codec.py speaks IPP/1.1 bytes, status.py turns printer attributes into an A4Status, client.py
sends the requests, raster.py writes and counts PWG Raster pages. sim.py is the simulated twin, a real
IPP printer on a socket (the demo's, the fleet's and the tests'); the tests hold it to the same
assertions as CUPS's ``ippeveprinter`` (tests/support/a4printers.py).
"""

from drivers.ipp.client import A4PrinterConfig, JobResult, get_status, print_job
from drivers.ipp.codec import IppError
from drivers.ipp.status import A4Status, Counters, Media, Supply, Tray

__all__ = [
    "A4PrinterConfig", "A4Status", "Counters", "IppError", "JobResult", "Media", "Supply", "Tray", "get_status",
    "print_job",
]  # fmt: skip
