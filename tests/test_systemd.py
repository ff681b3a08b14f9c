"""The units are valid for systemd, and the processes speak its notify protocol for real."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from broker.mosquitto.local import LocalMosquitto
from runtime.sdnotify import watchdog_loop
from tests.support.procs import write_toml

UNITS = Path(__file__).parent.parent / "systemd"


def test_the_updater_unit_writes_only_the_versions_and_is_started_not_enabled() -> None:
    text = (UNITS / "hallfleet-update.service").read_text()
    for line in ("Type=oneshot", "ProtectSystem=strict", "ReadWritePaths=/opt/hallfleet /var/lib/hallfleet",
                 "NoNewPrivileges=yes", "-m agent.updater /var/lib/hallfleet/update/request.json"):  # fmt: skip
        assert line in text, f"hallfleet-update.service lacks {line}"
    assert "[Install]" not in text, "the updater runs when the update command starts it, never at boot"
    rules = (UNITS / "hallfleet-agent.polkit.rules").read_text()
    assert 'unit === "hallfleet-update.service" && verb === "start"' in rules


@pytest.mark.parametrize(
    ("unit", "name"),
    [
        ("hallfleet-agent.service", "hallfleet-agent.service"),
        ("hallfleet-consumer@.service", "hallfleet-consumer@1.service"),
        ("hallfleet-api.service", "hallfleet-api.service"),
        ("hallfleet-update.service", "hallfleet-update.service"),
    ],
)
def test_unit_passes_systemd_analyze_verify_without_a_word(unit: str, name: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of systemd: run scripts/setup"
    # Point ExecStart at a binary that exists here; everything else is verified as shipped.
    text = (UNITS / unit).read_text().replace("/opt/hallfleet/venv/bin/hallfleet", "/bin/true")
    (tmp_path / name).write_text(text)
    out = subprocess.run([analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, check=False)
    # systemd-analyze prints most mistakes as warnings and exits 0 (platform-notes.md): any output fails.
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_unit_is_hardened_and_keeps_the_secret_out_of_the_config() -> None:
    for unit in UNITS.glob("*.service"):
        if unit.name == "hallfleet-update.service":
            continue  # a root oneshot with no secret: its own test below
        text = unit.read_text()
        for line in (
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "Type=notify",
            "CapabilityBoundingSet=",
            "Restart=on-failure",
            "ReadWritePaths=/var/lib/hallfleet",
        ):
            assert line in text, f"{unit.name} lacks {line}"
        assert "LoadCredential=mqtt-password:" in text


def test_agent_says_ready_and_pets_the_watchdog(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(20)
        cfg = write_toml(
            tmp_path / "agent.toml",
            {"site": "qp", "device": "k1"},
            {"mqtt": {"port": mosquitto.port}, "outbox": {"path": str(tmp_path / "outbox.db")}},
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLFLEET_")}
        env |= {"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "hallfleet.cli", "agent", "--config", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            seen: list[str] = []
            while not ("READY=1" in "".join(seen) and "".join(seen).count("WATCHDOG=1") >= 3):
                seen.append(sock.recv(4096).decode())
            proc.terminate()
            assert proc.wait(20) == 0
            rest = []
            sock.settimeout(2)
            while True:
                try:
                    rest.append(sock.recv(4096).decode())
                except TimeoutError:
                    break
            assert any("STOPPING=1" in m for m in rest)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


async def test_watchdog_pings_stop_while_the_event_loop_is_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock_path = tmp_path / "wd.sock"
    arrivals: list[float] = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(0.05)
        stop = threading.Event()

        def listen() -> None:
            while not stop.is_set():
                try:
                    if sock.recv(64) == b"WATCHDOG=1":
                        arrivals.append(time.monotonic())
                except TimeoutError:
                    continue

        listener = threading.Thread(target=listen)
        listener.start()
        monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
        monkeypatch.setenv("WATCHDOG_USEC", "200000")  # ping every 0.1 s
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
        task = asyncio.create_task(watchdog_loop())
        try:
            await asyncio.sleep(0.5)
            blocked_from = time.monotonic()
            time.sleep(1.0)  # noqa: ASYNC251 - the point: a blocking call hangs the loop
            blocked_to = time.monotonic()
            await asyncio.sleep(0.5)
        finally:
            task.cancel()
            stop.set()
            listener.join()
    before = [t for t in arrivals if t < blocked_from]
    during = [t for t in arrivals if blocked_from + 0.05 < t < blocked_to]
    after = [t for t in arrivals if t > blocked_to]
    assert len(before) >= 3 and len(after) >= 3, arrivals
    assert during == [], "a blocked loop must stop petting the watchdog, so systemd restarts it"
