"""The few ways talking to a ZFM / R30x fingerprint module fails. Each names the device, carries the
module's confirmation code when it sent one, and says what to do.

Two families: the link failed (not found, disconnected, timeout, a garbled reply), or the module
answered and refused (ModuleError and its subclasses, with ``code``). "No finger" during a scan and
"no match" are outcomes, not errors, and not the same one: ZfmReader.scan() returns None for no finger (GenImg
0x02) and NoMatch for a finger that matches no template (Search 0x09), which the person must be told.
"""

from __future__ import annotations


class FingerError(Exception):
    """Base: ``device`` names the reader ("zfm 2109:7638"), ``reason`` is what happened, ``code`` is the
    module's confirmation code (None when the module sent none)."""

    def __init__(self, device: str, reason: str, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.device = device
        self.reason = reason
        self.code = code


class FingerNotFound(FingerError):
    """No such reader is attached (or it cannot be enumerated)."""

    def __init__(self, device: str, reason: str = "no matching device") -> None:
        super().__init__(
            device,
            reason,
            f"fingerprint reader {device} not found ({reason}): check its cable; "
            "`lsusb` must list this VID:PID, else set vendor_id/product_id to what it shows",
        )


class FingerAccessDenied(FingerError):
    """The reader is there but cannot be claimed: no permission, or another program holds it."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(
            device,
            reason,
            f"fingerprint reader {device} cannot be opened ({reason}): give the agent's user access with a "
            "udev rule (MODE or GROUP for this VID:PID) and stop any vendor tool that holds it",
        )


class FingerDisconnected(FingerError):
    """The reader went away while in use. The reader object is closed; its next call finds it again."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(
            device,
            reason,
            f"fingerprint reader {device} disconnected ({reason}): check the cable; "
            "the next call reopens it, and an enrolment in progress must be started again",
        )


class FingerTimeout(FingerError):
    """No complete reply within timeout_ms. The late reply, if any, is drained before the next command."""

    def __init__(self, device: str, reason: str) -> None:
        super().__init__(
            device,
            reason,
            f"fingerprint reader {device} did not answer ({reason}): if it repeats, the module is hung "
            "(unplug and replug it) or its address is not the configured `address`",
        )


class ProtocolError(FingerError):
    """A reply that is not a well-formed packet for us (header, address, packet id, length), or the
    module saying it received a garbled packet (code 0x01). Idempotent commands are retried once."""

    def __init__(self, device: str, reason: str, code: int | None = None) -> None:
        super().__init__(
            device,
            reason,
            f"fingerprint reader {device} sent a bad packet ({reason}): a noisy cable or USB hub is the usual "
            "cause; try another port or a shorter cable if it repeats",
            code,
        )


class EnrollCancelled(FingerError):
    """The host called the enrolment off (the command timed out or was cancelled) before Store was sent:
    the page was not written."""

    def __init__(self, device: str, page_id: int) -> None:
        super().__init__(
            device,
            f"enrolment of page {page_id} called off",
            f"fingerprint reader {device}: enrolment of page {page_id} was called off before it was stored; "
            "send the enrolment again",
        )


class ChecksumError(ProtocolError):
    """A reply whose checksum does not match its bytes."""


class ModuleError(FingerError):
    """The module answered with a failure confirmation code (flash, template, unknown codes)."""

    advice = "retry once; if it repeats, the module's flash may be failing: replace the module"

    def __init__(self, device: str, reason: str, code: int | None) -> None:
        code_text = "" if code is None else f", code {code:#04x}"
        super().__init__(device, reason, f"fingerprint reader {device}: {reason}{code_text}: {self.advice}", code)


class WrongPassword(ModuleError):
    """VfyPwd refused (0x13), or a command refused because the password was not verified (0x21)."""

    advice = "set `password` to the module's 4-byte password (0 unless someone changed it)"


class CaptureError(ModuleError):
    """No usable image: no finger in time (0x02), a failed or messy image, too few features (0x03, 0x06,
    0x07, 0x15), or a finger not lifted between enrolment captures (code None)."""

    advice = "ask the person to press the finger flat and still, then try again; clean the sensor if it repeats"


class EnrollMismatch(ModuleError):
    """The enrolment captures are not the same finger (RegModel 0x0A, Match 0x08)."""

    advice = "enrol again, pressing the same finger every time"


class LibraryFull(ModuleError):
    """The page is beyond the template library (the module says 0x0B or 0x1F, or page_id >= capacity)."""

    advice = "delete templates no longer needed (people who left) and reuse their pages"
