"""How the centre names a device: a frozen ``DeviceKey(site, device)`` wherever identity travels.

The rule: a device's identity is the pair, never a ``"site/device"`` string that someone splits back. The
joined text exists only as the value of the store's ``key`` columns (devices, commands, incidents), written
by ``DeviceKey.text`` and never parsed (a segment is validated by the wire contract, so it holds no ``/``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple


@dataclass(frozen=True, slots=True, order=True)
class DeviceKey:
    site: str
    device: str

    @property
    def text(self) -> str:
        """The value of the store's ``key`` columns for this device."""
        return f"{self.site}/{self.device}"

    def __str__(self) -> str:
        return self.text


class EventRef(NamedTuple):
    """One stored event: the events table's primary key. A NamedTuple, so a row the store returns compares
    equal to it without building anything per row."""

    site: str
    device: str
    id: str
