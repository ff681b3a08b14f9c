"""Fingerprint readers: the ZhianTec ZFM / R30x family (R305, R307, R503, AS608) on USB.

- ``protocol``: the packet codec (pure): EF01 framing, checksum, instructions, confirmation codes
- ``zfm``: ZfmConfig + ZfmReader (pyusb): scan, enroll, delete, empty, count
- ``sim``: SimulatedZfm, a pyusb backend standing in for the module
- ``watch``: FingerWatch, one thread per process polling idle sensors for a finger (GenImg only)
- ``errors``: the typed errors, carrying the module's confirmation code
"""

from drivers.fingerprint.errors import (
    CaptureError,
    ChecksumError,
    EnrollCancelled,
    EnrollMismatch,
    FingerAccessDenied,
    FingerDisconnected,
    FingerError,
    FingerNotFound,
    FingerTimeout,
    LibraryFull,
    ModuleError,
    ProtocolError,
    WrongPassword,
)
from drivers.fingerprint.zfm import EnrolStep, FingerMatch, NoMatch, ZfmConfig, ZfmReader

__all__ = [
    "CaptureError",
    "ChecksumError",
    "EnrolStep",
    "EnrollCancelled",
    "EnrollMismatch",
    "FingerAccessDenied",
    "FingerDisconnected",
    "FingerError",
    "FingerMatch",
    "FingerNotFound",
    "FingerTimeout",
    "LibraryFull",
    "ModuleError",
    "NoMatch",
    "ProtocolError",
    "WrongPassword",
    "ZfmConfig",
    "ZfmReader",
]
