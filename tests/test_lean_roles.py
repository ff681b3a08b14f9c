"""An agent loads the stacks of the hardware it is configured with and no others: no OpenCV, dlib or numpy
without a camera, no evdev without a QR scanner or keypad, no pyusb without a USB printer or fingerprint reader
(or its twin, a pyusb backend), no HTTP library (httpx) at all, not even to poll a queue system (drivers/http1.py's
client does); and nothing under drivers/ loads the MQTT client.

Each role is started for real (``hallfleet agent --config``, against a private Mosquitto) and its modules are
read when it stops, after it reported READY to systemd's notify socket and its birth reached the broker: by
then the configured role and its drivers are running, not just imported.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from broker.mosquitto.local import LocalMosquitto
from drivers.qr.validators import staff_map_line
from protocol import topics
from tests.support.procs import write_toml

ROOT = Path(__file__).resolve().parents[1]
WATCHED = {"cv2", "numpy", "dlib", "face_recognition", "mediapipe", "evdev", "usb", "httpx", "paho"}
HEAVY = WATCHED - {"paho"}  # the agent's link is paho; the hardware stacks are what a role may not need
SITE = "lean"

RATING_KEYS = {f"KEY_{n}": f"rate_{n}" for n in range(1, 6)} | {"KEY_0": "service_end"}
# The CLI as systemd runs it; the modules it holds are printed as it exits (after SIGTERM).
PROBE = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), flush=True))\n"
    "from hallfleet.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def qr_files(tmp_path: Path) -> dict[str, Any]:
    salt = tmp_path / "qr-salt"
    salt.write_bytes(b"lean-roles-salt\n")
    staff_map = tmp_path / "qr-staff.map"
    staff_map.write_text(staff_map_line(b"lean-roles-salt", "310101199001011234", "s-001") + "\n")
    return {
        "type": "pattern",
        "region": "shanghai",
        "pattern": r"^SH(?P<ts>\d{10})(?P<id>[0-9A-Z]{18})$",
        "staff_map": str(staff_map),
        "salt_file": str(salt),
    }


def role_sections(tmp_path: Path) -> dict[str, tuple[str, dict[str, dict[str, Any]], set[str]]]:
    """case -> (role, its config sections, the hardware stacks it needs)."""
    return {
        "sim": ("sim", {"sim": {"events": 0}}, set()),
        "kiosk": ("kiosk", {"kiosk.receipt": {"type": "usb-sim"}}, {"usb"}),
        "attendance-fingerprint": ("attendance", {"attendance.fingerprint": {"type": "sim"}}, {"usb"}),
        "attendance-qr": (
            "attendance",
            {"attendance.qr": {"type": "sim"}, "attendance.qr_validator": qr_files(tmp_path)},
            {"evdev"},
        ),
        "queue": (
            "queue",
            {"queue": {"kind": "server"}, "queue.driver": {"type": "http", "url": "http://127.0.0.1:9/api"}},
            set(),
        ),
        "rating": (
            "rating",
            {"rating": {"window": "A1"}, "rating.keypad": {"type": "sim"}, "rating.keypad.keys": RATING_KEYS},
            {"evdev"},
        ),
    }


class Birth:
    """Waits for the device's retained birth (online) on the broker: the link is up, the role running."""

    def __init__(self, port: int, device: str) -> None:
        self.seen = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topics.status(SITE, device), qos=1)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if json.loads(msg.payload or b"{}").get("state") == "online":
            self.seen.set()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def ready(notify: socket.socket, proc: subprocess.Popen[bytes], log: Path) -> None:
    """READY=1 on the notify socket; an agent that exits first fails the test with its log's last line."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = log.read_text(errors="replace").strip().splitlines() or ["(empty log)"]
            raise AssertionError(f"the agent exited with {proc.returncode} before READY: {lines[-1]}")
        try:
            if b"READY=1" in notify.recv(4096):
                return
        except TimeoutError:
            continue
    raise AssertionError(f"no READY=1 within 60 s; see {log}")


def modules_of_running_agent(tmp_path: Path, port: int, role: str, sections: dict[str, dict[str, Any]]) -> set[str]:
    device = f"{role}-1"
    top = {"site": SITE, "device": device, "role": role, "heartbeat_s": 3600, "clock_sync_file": "/"}
    all_sections = {"mqtt": {"host": "127.0.0.1", "port": port}, "outbox": {"path": str(tmp_path / "outbox.db")}}
    cfg = write_toml(tmp_path / "agent.toml", top, {**all_sections, **sections})
    notify_path = tmp_path / "notify"
    birth = Birth(port, device)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(notify_path))
        notify.settimeout(0.5)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLFLEET_")} | {
            "NOTIFY_SOCKET": str(notify_path)
        }
        log = (tmp_path / "agent.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-c", PROBE, "agent", "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=log, env=env, cwd=ROOT,
        )  # fmt: skip
        try:
            ready(notify, proc, tmp_path / "agent.log")
            assert birth.seen.wait(30), f"no birth from the {role} agent; see {tmp_path / 'agent.log'}"
        finally:
            birth.close()
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=30)
            log.close()
    assert proc.returncode == 0, f"the {role} agent exited with {proc.returncode}; see {tmp_path / 'agent.log'}"
    return {m.split(".")[0] for m in json.loads(out.decode().splitlines()[-1])}


@pytest.mark.parametrize("case", ["sim", "kiosk", "attendance-fingerprint", "attendance-qr", "queue", "rating"])
def test_a_running_role_holds_only_the_hardware_stacks_its_config_names(
    case: str, mosquitto: LocalMosquitto, tmp_path: Path
) -> None:
    role, sections, needs = role_sections(tmp_path)[case]
    mods = modules_of_running_agent(tmp_path, mosquitto.port, role, sections)
    assert "paho" in mods, "the probe did not read the running agent's modules"
    assert HEAVY & mods == needs, f"{case}: loads {sorted(HEAVY & mods)}, its hardware needs {sorted(needs)}"


def driver_modules() -> list[str]:
    names = []
    for path in sorted((ROOT / "drivers").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_no_driver_module_loads_the_mqtt_client() -> None:
    """Every module under drivers/, imported one after the other in one fresh interpreter: the first that
    brings paho in is named."""
    probe = (
        "import importlib, json, sys\n"
        "for name in sys.argv[1:]:\n"
        "    importlib.import_module(name)\n"
        "    if any(m == 'paho' or m.startswith('paho.') for m in sys.modules):\n"
        "        print(json.dumps(name)); break\n"
        "else:\n"
        "    print(json.dumps(None))\n"
    )
    names = driver_modules()
    assert len(names) > 30 and "drivers.keypad" in names and "drivers.qr.keyboard" in names
    out = subprocess.run([sys.executable, "-c", probe, *names], capture_output=True, text=True, check=True, cwd=ROOT)
    culprit = json.loads(out.stdout.splitlines()[-1])
    assert culprit is None, f"importing {culprit} loads paho: drivers build their config on config.base only"


def test_the_input_drivers_load_evdev_only_when_a_device_is_used() -> None:
    """Importing the scanner's and keypad's modules (every agent's config does) loads no evdev; decoding a key
    (what a configured device does) does."""
    probe = (
        "import sys\n"
        "import drivers.keypad, drivers.qr, drivers.evdev_source\n"
        "before = 'evdev' in sys.modules\n"
        "drivers.qr.KeyDecoder()\n"
        "print(before, 'evdev' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "True"]


def test_the_usb_drivers_load_pyusb_only_when_a_device_is_used() -> None:
    """Importing the printer's and the fingerprint reader's modules (every agent's config does) loads no pyusb;
    opening a reader (here on its twin, a pyusb backend) does."""
    probe = (
        "import sys\n"
        "import agent.config, drivers.escpos, drivers.fingerprint, drivers.usbdev\n"
        "before = 'usb' in sys.modules\n"
        "from drivers.fingerprint.sim import SimulatedZfm\n"
        "sim = SimulatedZfm()\n"
        "reader = drivers.fingerprint.ZfmReader(\n"
        "    drivers.fingerprint.ZfmConfig(vendor_id=sim.vendor_id, product_id=sim.product_id), backend=sim\n"
        ")\n"
        "reader.open()\n"
        "print(before, 'usb' in sys.modules, reader.is_open)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["False", "True", "True"]
