"""The operator CLI answers bad input with a clear message and a non-zero exit, and does the job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from broker.mosquitto.local import LocalMosquitto
from tests.support.procs import write_toml


def hallfleet(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hallfleet.cli", *args], capture_output=True, text=True, timeout=60, check=False
    )


def centre_config(tmp_path: Path, port: int) -> str:
    return str(
        write_toml(
            tmp_path / "centre.toml",
            {"instance": "cli"},
            {"mqtt": {"port": port}, "store": {"url": f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"}},
        )
    )


def test_cmd_send_names_the_device_format_it_wants(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    out = hallfleet("cmd", "send", "kiosk-1", "diagnose", "--config", centre_config(tmp_path, mosquitto.port))
    assert out.returncode == 1
    assert "write it as SITE/DEVICE" in out.stderr


def test_cmd_send_refuses_an_argument_that_is_not_key_value(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    cfg = centre_config(tmp_path, mosquitto.port)
    out = hallfleet("cmd", "send", "qp/kiosk-1", "collect_logs", "lines", "--config", cfg)
    assert out.returncode == 1 and "write it as key=value" in out.stderr


def test_cfg_set_refuses_a_file_that_is_not_a_json_object(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    cfg = centre_config(tmp_path, mosquitto.port)
    (tmp_path / "list.json").write_text("[1, 2]")
    out = hallfleet("cfg", "set", "qp/kiosk-1", str(tmp_path / "list.json"), "--config", cfg)
    assert out.returncode == 1 and "must hold a JSON object" in out.stderr
    out = hallfleet("cfg", "set", "qp/kiosk-1", str(tmp_path / "missing.json"), "--config", cfg)
    assert out.returncode == 1 and "cannot read" in out.stderr


def test_a_queued_command_and_a_config_show_up_in_the_audit_log(mosquitto: LocalMosquitto, tmp_path: Path) -> None:
    cfg = centre_config(tmp_path, mosquitto.port)
    sent = hallfleet("cmd", "send", "qp/kiosk-1", "diagnose", "--reason", "slow UI", "--wait", "0", "--config", cfg)
    assert sent.returncode == 0, sent.stderr
    command_id = sent.stdout.split()[1]
    shown = hallfleet("cmd", "show", command_id, "--config", cfg)
    assert "queued" in shown.stdout and "slow UI" in shown.stdout
    (tmp_path / "cfg.json").write_text('{"heartbeat_s": 15}')
    assert hallfleet("cfg", "set", "qp/kiosk-1", str(tmp_path / "cfg.json"), "--config", cfg).returncode == 0
    audit = hallfleet("audit", "--device", "qp/kiosk-1", "--config", cfg).stdout
    assert "command.issue" in audit and "config.set" in audit
