"""Pin SystemProbe over a fake /proc and /sys: real values are read and converted, and what the
machine cannot tell is None, never a made-up number.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from drivers.system import SystemHealth, SystemProbe, kernel_boot_id

# MemFree differs from MemAvailable on purpose: used memory is Total - Available (75.0 %), not
# Total - Free (87.5 %).
MEMINFO = """\
MemTotal:        4000000 kB
MemFree:          500000 kB
MemAvailable:    1000000 kB
Buffers:          120000 kB
Cached:           380000 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""
BOOT_ID = "6b0d6a3e-3a55-4c1e-9d0b-2f5b8f3f2a11"


def put(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A Raspberry-Pi-like tree: uptime, meminfo, SoC temperature in millidegrees, boot id."""
    put(tmp_path, "proc/uptime", "12345.67 43210.98\n")
    put(tmp_path, "proc/meminfo", MEMINFO)
    put(tmp_path, "sys/class/thermal/thermal_zone0/temp", "48312\n")
    put(tmp_path, "proc/sys/kernel/random/boot_id", BOOT_ID + "\n")
    return tmp_path


def test_probe_reads_uptime_from_proc(root: Path) -> None:
    assert SystemProbe(root=root).read().uptime_s == 12345.67


def test_probe_reports_used_memory_as_total_minus_available(root: Path) -> None:
    assert SystemProbe(root=root).read().mem_used_pct == 75.0


def test_probe_rounds_memory_percentage_to_one_decimal(root: Path) -> None:
    put(root, "proc/meminfo", "MemTotal: 3000 kB\nMemFree: 1 kB\nMemAvailable: 1000 kB\n")

    assert SystemProbe(root=root).read().mem_used_pct == 66.7


def test_probe_converts_millidegrees_to_celsius_with_one_decimal(root: Path) -> None:
    assert SystemProbe(root=root).read().cpu_temp_c == 48.3


def test_probe_reads_thermal_zone0_first(root: Path) -> None:
    put(root, "sys/class/thermal/thermal_zone1/temp", "30000\n")

    assert SystemProbe(root=root).read().cpu_temp_c == 48.3


def test_probe_reads_negative_temperatures(root: Path) -> None:
    put(root, "sys/class/thermal/thermal_zone0/temp", "-5300\n")

    assert SystemProbe(root=root).read().cpu_temp_c == -5.3


def test_without_a_thermal_zone_cpu_temp_is_none(root: Path) -> None:
    shutil.rmtree(root / "sys")

    health = SystemProbe(root=root).read()

    assert health.cpu_temp_c is None
    assert health.uptime_s == 12345.67  # the rest is still read


def test_thermal_class_without_zones_gives_none(root: Path) -> None:
    shutil.rmtree(root / "sys/class/thermal/thermal_zone0")

    assert SystemProbe(root=root).read().cpu_temp_c is None


def test_unparsable_thermal_zone_gives_none_not_a_number(root: Path) -> None:
    put(root, "sys/class/thermal/thermal_zone0/temp", "n/a\n")

    assert SystemProbe(root=root).read().cpu_temp_c is None


def test_an_unparsable_zone_is_skipped_for_the_next_one(root: Path) -> None:
    put(root, "sys/class/thermal/thermal_zone0/temp", "\n")
    put(root, "sys/class/thermal/thermal_zone1/temp", "51000\n")

    assert SystemProbe(root=root).read().cpu_temp_c == 51.0


def test_without_meminfo_mem_used_is_none(root: Path) -> None:
    (root / "proc/meminfo").unlink()

    assert SystemProbe(root=root).read().mem_used_pct is None


def test_meminfo_without_memavailable_gives_none(root: Path) -> None:
    put(root, "proc/meminfo", "MemTotal: 4000000 kB\nMemFree: 500000 kB\n")

    assert SystemProbe(root=root).read().mem_used_pct is None


def test_disk_usage_is_read_from_disk_path(root: Path) -> None:
    usage = shutil.disk_usage(root)

    disk = SystemProbe(root=root, disk_path=root).read().disk_used_pct

    assert disk is not None
    assert 0 <= disk <= 100
    assert disk == pytest.approx(100 * usage.used / usage.total, abs=1.0)


def test_missing_disk_path_gives_none(root: Path) -> None:
    assert SystemProbe(root=root, disk_path=root / "no-such-mount").read().disk_used_pct is None


def test_read_returns_a_system_health(root: Path) -> None:
    health = SystemProbe(root=root).read()

    assert isinstance(health, SystemHealth)
    assert (health.uptime_s, health.cpu_temp_c, health.mem_used_pct) == (12345.67, 48.3, 75.0)
    assert health.load1 is None or health.load1 >= 0


def test_kernel_boot_id_is_read_and_stripped(root: Path) -> None:
    assert kernel_boot_id(root) == BOOT_ID


def test_kernel_boot_id_missing_is_none(tmp_path: Path) -> None:
    assert kernel_boot_id(tmp_path) is None


def test_kernel_boot_id_empty_is_none(root: Path) -> None:
    put(root, "proc/sys/kernel/random/boot_id", "\n")

    assert kernel_boot_id(root) is None
