"""What every pyusb driver here shares: USB ids written as hex (lsusb, udev), and letting go of a device
that may already be gone. pyusb is imported by the calls that use it, as in the drivers."""

from __future__ import annotations

import logging
import string
from typing import Any


def hex_id(value: object) -> object:
    """USB ids are hex by convention (lsusb, udev): "0x0416" and "0416" both mean 0x0416. A pydantic
    ``mode="before"`` validator: other types pass through to the field's own checks."""
    if isinstance(value, str):
        text = value.strip().lower()
        digits = text.removeprefix("0x")
        if not digits or any(c not in string.hexdigits for c in digits):
            raise ValueError(f"{value!r} is not a hex USB number such as 0x0416")
        return int(digits, 16)
    return value


def dispose(dev: Any, name: str, log: logging.Logger) -> None:
    """Release the interface and the handle; pyusb's dispose already ignores releasing an interface of a
    device that is gone, and anything else it raises on an unplugged device is only worth a debug line."""
    import usb.core
    import usb.util

    try:
        usb.util.dispose_resources(dev)
    except usb.core.USBError as exc:
        log.debug("closing %s: %s", name, exc)
