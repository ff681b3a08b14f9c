"""The example configurations a newcomer starts from (docs/examples/) and the key reference
(docs/configuration.md), generated from the pydantic models by ``hallfleet config generate``.

Only the values that make each example a real deployment are written here (hosts, ids, the role's hardware);
every other key, and every comment, comes from the model: its default and its ``description``. Each example
is validated by its model as it is built, so an example that would not start cannot be generated.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hallfleet.config_cli import EXAMPLES_DIR, KINDS, REFERENCE
from hallfleet.configdoc import reference, render_toml

SITES = Path(__file__).resolve().parents[1] / "broker" / "attendance" / "examples"
# Where the bundle puts credentials (provisioning/bundle.py): systemd's LoadCredential= directory.
AGENT_CREDENTIALS = "/run/credentials/hallfleet-agent.service"

_AGENT_COMMON: dict[str, Any] = {
    "site": "qingpu",
    "mqtt": {
        "host": "mqtt.qingpu.hall.local",
        "port": 8883,
        "tls": {"ca_file": f"{AGENT_CREDENTIALS}/mqtt-ca"},
    },
    "metrics_port": 9102,
}

_HEADERS = {
    "consumer": (
        "The central consumer: `hallfleet consumer --config /etc/hallfleet/consumer.toml`",
        "(systemd/hallfleet-consumer@.service). PostgreSQL over its Unix socket with peer authentication, so no",
        "database password is written anywhere; the MQTT password comes from LoadCredential=.",
    ),
    "api": (
        "The API and dashboard: `hallfleet api --config /etc/hallfleet/api.toml` (systemd/hallfleet-api.service).",
        "Store, MQTT, sites and alerts are the consumer's: centre_config names its TOML (relative to this file).",
    ),
    "agent-sim": (
        "An agent with simulated events (role sim): a Pi or VM that proves the path from device to centre before",
        "any hardware is fitted. `hallfleet agent --config /etc/hallfleet/agent.toml`.",
    ),
    "agent-kiosk": (
        "A 24-hour self-service kiosk: receipt printer on USB, A4 printer over IPP, usage counters from the",
        "application, and the application kept alive by the agent.",
    ),
    "agent-attendance": (
        "An attendance terminal: entrance camera with the sealed face gallery, ZFM fingerprint reader on USB, HID QR",
        "scanner. The gallery key arrives through LoadCredential= (gallery-key).",
    ),
    "agent-rating": (
        "A 好差评 rating pad at window A12: a USB keypad read with evdev and the queue system's local HTTP call.",
    ),
    "agent-queue": (
        "The ticket dispenser (取号机) of the queue system (排队叫号): the agent reads the tickets it printed and",
        "their steps from the queue system's local HTTP API. A call display: kind = 'display' and its windows.",
    ),
    "agent-door": (
        "The door controller of the 24-hour area: an RS-485 board on a USB adapter (a udev symlink names it), two",
        "doors. Alarms (forced, held open) and the `door_unlock` command.",
    ),
    "agent-locker": (
        "A self-service locker bank (自助寄取柜): its lock board on RS-485. Items held too long, stuck doors and the",
        "`locker_open` command.",
    ),
    "agent-patrol": (
        "A patrol handheld: the officer scans their card, then each point's code, with an HID QR scanner (evdev).",
    ),
}


def _qingpu() -> dict[str, Any]:
    with (SITES / "qingpu.toml").open("rb") as f:
        sites: dict[str, Any] = tomllib.load(f)["sites"]
    return sites


def example_data() -> dict[str, tuple[str, dict[str, Any]]]:
    """File stem -> (kind, the values that differ from the defaults)."""
    return {
        "consumer": (
            "consumer",
            {
                "instance": "centre-1",
                "mqtt": {"host": "127.0.0.1", "port": 1883, "username": "hallfleet-consumer"},
                "store": {"url": "postgresql+asyncpg://hallfleet@/hallfleet?host=/run/postgresql"},
                "sites": _qingpu(),
                "alerts": {
                    "channels": {"ops-webhook": {"type": "webhook", "url": "https://ops.hall.local/hooks/hallfleet"}},
                    "recipients": {
                        "wang.li": {"role": "technician", "channel": "ops-webhook", "sites": ["qingpu"]},
                    },
                },
                "metrics_port": 9101,
            },
        ),
        "api": (
            "api",
            {
                "centre_config": "consumer.toml",
                "listen": "127.0.0.1",
                "port": 8080,
                "metrics_token_file": "metrics-token",
            },
        ),
        "agent-sim": ("agent", {**_AGENT_COMMON, "device": "sim-1", "role": "sim", "sim": {"rate_per_s": 0.2}}),
        "agent-kiosk": (
            "agent",
            {
                **_AGENT_COMMON,
                "device": "kiosk-24h-1",
                "role": "kiosk",
                "kiosk": {
                    "receipt": {"type": "usb", "vendor_id": 0x0416, "product_id": 0x5011},
                    "a4": {"url": "ipp://127.0.0.1:631/printers/kiosk-a4"},
                    "usage": {"type": "http", "url": "http://127.0.0.1:8080/usage"},
                },
                "app": {"name": "kiosk-app", "unit": "kiosk-app.service", "health_url": "http://127.0.0.1:8080/health"},
            },
        ),
        "agent-attendance": (
            "agent",
            {
                **_AGENT_COMMON,
                "device": "att-entrance-1",
                "role": "attendance",
                "attendance": {
                    "camera": {"source": 0},
                    "gallery": {"path": "/var/lib/hallfleet/gallery.sealed", "key_file": "gallery-key"},
                    "fingerprint": {"type": "zfm", "vendor_id": 0x2109, "product_id": 0x7638},
                    "qr": {"type": "evdev", "device": "/dev/input/by-id/usb-qr-scanner-event-kbd"},
                    # The region's app format is site configuration: this pattern is an illustration only.
                    "qr_validator": {
                        "type": "pattern",
                        "region": "shanghai",
                        "pattern": r"^SH(?P<ts>\d{10})(?P<id>[0-9A-Z]{18})$",
                        "staff_map": "/etc/hallfleet/qr-staff.map",
                        "salt_file": "qr-salt",
                    },
                },
            },
        ),
        "agent-rating": (
            "agent",
            {
                **_AGENT_COMMON,
                "device": "rating-a12",
                "role": "rating",
                "rating": {
                    "window": "A12",
                    "keypad": {"type": "evdev", "device": "/dev/input/by-id/usb-keypad-event-kbd"},
                    "queue": {"port": 8731},
                },
            },
        ),
        "agent-queue": (
            "agent",
            {
                **_AGENT_COMMON,
                "device": "queue-1",
                "role": "queue",
                "queue": {"kind": "dispenser", "driver": {"type": "http", "url": "http://192.0.2.10:8090/api"}},
            },
        ),
        "agent-door": (
            "agent",
            {
                **_AGENT_COMMON,
                "device": "door-24h-1",
                "role": "door",
                "door": {
                    "controller": {"type": "serial", "port": {"path": "/dev/ttyRS485-door"}, "doors": ["main", "side"]}
                },
            },
        ),
        "agent-locker": (
            "agent",
            {
                **_AGENT_COMMON,
                "device": "locker-24h-1",
                "role": "locker",
                "locker": {
                    "bank": "A",
                    "board": {"type": "serial", "port": {"path": "/dev/ttyRS485-locker"}, "compartments": 24},
                },
            },
        ),
        "agent-patrol": (
            "agent",
            {
                **_AGENT_COMMON,
                "device": "patrol-1",
                "role": "patrol",
                "patrol": {"scanner": {"type": "evdev", "device": "/dev/input/by-id/usb-qr-scanner-event-kbd"}},
            },
        ),
    }


def build(kind: str, data: dict[str, Any]) -> BaseModel:
    """Validate without reading the environment (model_validate skips pydantic-settings' sources)."""
    return KINDS[kind].model().model_validate(data)


def example(stem: str) -> str:
    kind, data = example_data()[stem]
    head = [f"# {line}" for line in _HEADERS[stem]]
    head += [
        "# Generated by `hallfleet config generate` from the models' descriptions: edit those, not this file.",
        "# Every key is shown with its default unless set above; `hallfleet config check FILE` validates a copy.",
        "",
        "",
    ]
    return "\n".join(head) + render_toml(build(kind, data), skip=frozenset({"centre"}))


def configuration_md() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated by `hallfleet config generate` from the pydantic models (a test regenerates it and compares):",
        "every key, its type, its default and what it does. Worked examples: "
        + ", ".join(f"[{stem}.toml](examples/{stem}.toml)" for stem in example_data())
        + ".",
        "",
        "Each file is TOML; `HALLFLEET_*` environment variables override it (nested keys with `__`:",
        "`HALLFLEET_MQTT__PORT=8883`; the API's own keys use `HALLFLEET_API_`). Secrets are never values: a",
        "`*_file` key names a file, and a relative one is looked up in systemd's `$CREDENTIALS_DIRECTORY`",
        "(`LoadCredential=`). `hallfleet config check FILE` validates a file as its process would at start;",
        "`hallfleet config show FILE` prints what the process runs with, secrets masked.",
        "",
    ]
    intros = {
        "consumer": "`hallfleet consumer --config consumer.toml`: ingest, store, presence, rules and alerts.",
        "api": "`hallfleet api --config api.toml`: REST, dashboard and /metrics; the rest is the consumer's TOML.",
        "agent": "`hallfleet agent --config agent.toml`: one device; `role` selects the hardware section it needs.",
    }
    for name, kind in KINDS.items():
        lines += reference(f"The {name}", kind.model(), intros[name])
    return "\n".join(lines).rstrip("\n") + "\n"


def generate() -> dict[Path, str]:
    """Relative path -> content of every generated file."""
    files = {EXAMPLES_DIR / f"{stem}.toml": example(stem) for stem in example_data()}
    files[REFERENCE] = configuration_md()
    return files
