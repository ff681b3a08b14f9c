"""System health of the device itself: what /proc and /sys tell, nothing guessed.

A value this machine cannot give (no thermal zone in a VM, say) is ``None``, never a made-up number.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class SystemHealth:
    uptime_s: float
    load1: float | None
    cpu_temp_c: float | None
    mem_used_pct: float | None
    disk_used_pct: float | None


class SystemProbe:
    """Read once per heartbeat by every agent, so read cheaply (issue 20: a fleet simulator runs thousands of
    agents, each reading it; a Pi 3 reads it every heartbeat): the thermal zones are listed once, and /proc/meminfo
    is read only as far as the two lines it needs."""

    def __init__(self, root: Path = Path("/"), disk_path: Path = Path("/")) -> None:
        self.root = root
        self.disk_path = disk_path
        self._zones: list[Path] | None = None  # the kernel's thermal zones do not change while it runs

    def read(self) -> SystemHealth:
        return SystemHealth(
            uptime_s=self._uptime(),
            load1=self._load1(),
            cpu_temp_c=self._cpu_temp(),
            mem_used_pct=self._mem_used_pct(),
            disk_used_pct=self._disk_used_pct(),
        )

    def _uptime(self) -> float:
        try:
            return float((self.root / "proc/uptime").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0.0

    @staticmethod
    def _load1() -> float | None:
        try:
            return round(os.getloadavg()[0], 2)
        except OSError:
            return None

    def _cpu_temp(self) -> float | None:
        # The Pi's SoC sensor is thermal_zone0, in millidegrees.
        if self._zones is None:
            self._zones = sorted((self.root / "sys/class/thermal").glob("thermal_zone*/temp"))
        for zone in self._zones:
            try:
                return round(int(zone.read_text().strip()) / 1000, 1)
            except (OSError, ValueError):
                continue
        return None

    def _mem_used_pct(self) -> float | None:
        try:
            info: dict[str, int] = {}
            with (self.root / "proc/meminfo").open() as f:
                for line in f:  # MemTotal and MemAvailable are the first and third of some fifty lines
                    key, _, rest = line.partition(":")
                    if key in ("MemTotal", "MemAvailable"):
                        info[key] = int(rest.split()[0])
                        if len(info) == 2:
                            break
            total, avail = info["MemTotal"], info["MemAvailable"]
            return round(100 * (total - avail) / total, 1)
        except (OSError, ValueError, KeyError, ZeroDivisionError, IndexError):
            return None

    def _disk_used_pct(self) -> float | None:
        try:
            usage = shutil.disk_usage(self.disk_path)
            return round(100 * usage.used / usage.total, 1)
        except (OSError, ZeroDivisionError):
            return None


def kernel_boot_id(root: Path = Path("/")) -> str | None:
    try:
        return (root / "proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None
