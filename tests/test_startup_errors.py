"""``hallfleet consumer`` that cannot start says why in one line and exits 1; the traceback only with -v.

Real processes: the CLI as systemd runs it, a real Mosquitto that refuses the credentials, a store URL
with nothing listening behind it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from broker.mosquitto.local import LocalMosquitto

REPO = Path(__file__).resolve().parents[1]
SECRET = "s3cr3t-pw"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def run_consumer(tmp_path: Path, toml: str, *extra: str) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "consumer.toml"
    cfg.write_text(toml)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLFLEET_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "hallfleet.cli", *extra, "consumer", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=tmp_path,
    )


def sqlite(tmp_path: Path) -> str:
    return f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/store.db"\n'


def problem_lines(stderr: str) -> list[str]:
    """What the user is told: the stderr lines that are not the log's (those carry a level name)."""
    return [line for line in stderr.splitlines() if not any(lv in line for lv in (" INFO ", " WARNING ", " DEBUG "))]


def test_a_store_that_cannot_be_reached_is_one_line_naming_it_with_the_password_masked(tmp_path: Path) -> None:
    port = closed_port()
    toml = f'instance = "t"\n[store]\nurl = "postgresql+asyncpg://hallfleet:{SECRET}@127.0.0.1:{port}/hallfleet"\n'

    done = run_consumer(tmp_path, toml)

    assert done.returncode == 1, done.stderr
    [line] = problem_lines(done.stderr)
    assert line.startswith("hallfleet consumer: cannot open the store postgresql+asyncpg://hallfleet:***@127.0.0.1:")
    assert f":{port}/hallfleet" in line
    assert SECRET not in done.stderr
    assert "Traceback" not in done.stderr


def test_with_verbose_the_traceback_is_there_too(tmp_path: Path) -> None:
    toml = f'instance = "t"\n[store]\nurl = "postgresql+asyncpg://u:{SECRET}@127.0.0.1:{closed_port()}/x"\n'

    done = run_consumer(tmp_path, toml, "-v")

    assert done.returncode == 1
    assert "Traceback" in done.stderr
    assert "hallfleet consumer: cannot open the store" in done.stderr


def test_a_missing_password_file_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mqtt-password"
    toml = f'instance = "t"\n[mqtt]\nusername = "centre"\npassword_file = "{missing}"\n' + sqlite(tmp_path)

    done = run_consumer(tmp_path, toml)

    assert done.returncode == 1, done.stderr
    [line] = problem_lines(done.stderr)
    assert line.startswith("hallfleet consumer: MQTT password: ")
    assert str(missing) in line
    assert "Traceback" not in done.stderr


def test_a_broker_that_refuses_the_credentials_is_one_line_not_a_reconnect_loop(tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    passwords.touch()
    subprocess.run(["mosquitto_passwd", "-b", str(passwords), "centre", "right-one"], check=True)
    broker = LocalMosquitto(tmp_path / "mosq", extra_conf=f"allow_anonymous false\npassword_file {passwords}\n")
    broker.start()
    try:
        pw = tmp_path / "pw"
        pw.write_text("wrong-one\n")
        toml = (
            f'instance = "t"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nusername = "centre"\n'
            f'password_file = "{pw}"\n' + sqlite(tmp_path)
        )

        done = run_consumer(tmp_path, toml)
    finally:
        broker.stop()

    assert done.returncode == 1, done.stderr
    [line] = problem_lines(done.stderr)
    assert (
        line == f"hallfleet consumer: MQTT broker {broker.host}:{broker.port} refused user centre: Not authorized"
        or (
            line == f"hallfleet consumer: MQTT broker {broker.host}:{broker.port} refused user centre: "
            "Bad user name or password"
        )
    ), line
    assert "wrong-one" not in done.stderr
