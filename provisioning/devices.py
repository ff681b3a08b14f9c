"""The devices a provisioned agent may open: its unit's DeviceAllow= and SupplementaryGroups=, from its config.

The rule: least privilege per device. The unit runs with DevicePolicy=closed and grants only the device classes
the hardware in this device's agent.toml drives (a door controller its serial port, a patrol handheld its
scanner's input device, an attendance terminal its camera, reader and scanner); a simulated twin needs none.
Granting the union to every role would let a rating pad's agent write to a door controller's bus.

A serial port is granted by its kernel class (char-ttyUSB), not by path: systemd resolves a path to one
major:minor when the unit starts, and an adapter plugged back in may come back under another minor
(drivers/rs485/port.py reopens it without a restart).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from agent.config import AgentConfig
from provisioning.registry import RegistryError

# Kernel names of serial ports as /proc/devices lists their class: USB adapters (FTDI/CH340: ttyUSB, CDC: ttyACM),
# the Pi's UART under an RS-485 HAT (ttyAMA), on-board UARTs (ttyS). Debian gives them to the group dialout.
SERIAL = re.compile(r"/dev/(ttyUSB|ttyACM|ttyAMA|ttyS)[0-9]+")
# udev's stable names of USB adapters: which of the two USB serial classes sits behind one is not known here.
USB_SERIAL_LINKS = ("/dev/serial/by-id/", "/dev/serial/by-path/")


@dataclass(frozen=True, slots=True)
class Grant:
    """One DeviceAllow= line and the group that owns such nodes."""

    device: str  # "char-ttyUSB"
    access: str  # "r" or "rw"
    group: str


INPUT = Grant("char-input", "r", "input")  # evdev scanners and keypads: read (and grabbed with an ioctl)
USB = Grant("char-usb_device", "rw", "plugdev")  # pyusb: receipt printers, fingerprint readers
VIDEO = Grant("char-video4linux", "rw", "video")


@dataclass(frozen=True, slots=True)
class DeviceAccess:
    grants: tuple[Grant, ...]

    def unit_lines(self) -> list[str]:
        """SupplementaryGroups= (when any) and one DeviceAllow= per class, in a stable order."""
        groups = sorted({g.group for g in self.grants})
        lines = [f"SupplementaryGroups={' '.join(groups)}"] if groups else []
        return lines + [f"DeviceAllow={g.device} {g.access}" for g in sorted(set(self.grants), key=lambda g: g.device)]


def serial_grants(path: Path, key: str) -> list[Grant]:
    """The classes of the serial port ``key`` names; a name whose class cannot be known here is refused."""
    text = str(path)
    if m := SERIAL.fullmatch(text):
        return [Grant(f"char-{m.group(1)}", "rw", "dialout")]
    if text.startswith(USB_SERIAL_LINKS):
        return [Grant("char-ttyUSB", "rw", "dialout"), Grant("char-ttyACM", "rw", "dialout")]
    raise RegistryError(
        f"{key} = {text}: name the port as /dev/ttyUSB0 (ttyACM, ttyAMA, ttyS) or /dev/serial/by-id/...; the unit"
        " grants the agent that class of serial device only, and cannot tell the class of another name"
    )


def device_access(cfg: AgentConfig) -> DeviceAccess:
    """What ``cfg``'s hardware needs; the twins (type 'sim', 'usb-sim') need nothing."""
    grants: list[Grant] = []
    if cfg.role == "door" and cfg.door is not None and cfg.door.controller.type == "serial":
        grants += serial_grants(cfg.door.controller.port.path, "door.controller.port.path")
    if cfg.role == "locker" and cfg.locker is not None and cfg.locker.board.type == "serial":
        grants += serial_grants(cfg.locker.board.port.path, "locker.board.port.path")
    if cfg.role == "patrol" and cfg.patrol is not None and cfg.patrol.scanner.type == "evdev":
        grants.append(INPUT)
    if cfg.role == "rating" and cfg.rating is not None and cfg.rating.keypad.type == "evdev":
        grants.append(INPUT)
    if cfg.role == "kiosk" and cfg.kiosk is not None and cfg.kiosk.receipt is not None:
        grants += [USB] if cfg.kiosk.receipt.type == "usb" else []
    if cfg.role == "attendance" and cfg.attendance is not None:
        grants += _attendance(cfg)
    return DeviceAccess(tuple(grants))


def _attendance(cfg: AgentConfig) -> list[Grant]:
    att = cfg.attendance
    assert att is not None
    grants = [INPUT] if att.qr is not None and att.qr.type == "evdev" else []
    grants += [USB] if att.fingerprint is not None and att.fingerprint.type == "zfm" else []
    # A camera by index or /dev/videoN is V4L2; a file or a stream URL opens no device node.
    source = att.camera.source if att.camera is not None else None
    if isinstance(source, int) or (isinstance(source, str) and source.startswith("/dev/")):
        grants.append(VIDEO)
    return grants
