"""The QR scanner of attendance terminals (随申码 in Shanghai, other apps elsewhere).

- ``keyboard``: the scanner is a USB HID keyboard; KeyDecoder turns its key events into codes,
  EvdevScanner reads the (grabbed) device and survives replugs, SimulatedScanner is its twin
- ``validators``: per-region check of a code (structure, freshness, replay) and its mapping to a
  pseudonymous staff id; the raw code and the personal id in it never leave the validator
"""

from drivers.qr.keyboard import EvdevScanner, KeyDecoder, QrScannerConfig, ScannerError, SimulatedScanner
from drivers.qr.validators import (
    PatternQrConfig,
    PatternQrValidator,
    QrConfig,
    QrResult,
    QrValidator,
    build_validator,
    staff_map_line,
)

__all__ = [
    "EvdevScanner",
    "KeyDecoder",
    "PatternQrConfig",
    "PatternQrValidator",
    "QrConfig",
    "QrResult",
    "QrScannerConfig",
    "QrValidator",
    "ScannerError",
    "SimulatedScanner",
    "build_validator",
    "staff_map_line",
]
