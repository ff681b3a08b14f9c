"""What is expected to go wrong when the API or an agent starts (a database that is down, a credential or TLS file
that is not there) is said in one line that names it, with exit status 1 or 2: never a traceback, never a
password. Real processes, started as `hallfleet` is under systemd."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.mosquitto.local import free_port

REPO = Path(__file__).resolve().parents[1]


def hallfleet(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HALLFLEET_", "CREDENTIALS_"))}
    return subprocess.run(
        [sys.executable, "-m", "hallfleet.cli", *args],
        cwd=REPO,
        env={**env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_api_with_its_database_down_says_so_in_one_line_without_the_password(tmp_path: Path) -> None:
    port = free_port()  # nobody listens here: the database is down
    (tmp_path / "consumer.toml").write_text(
        f'[store]\nurl = "postgresql+asyncpg://hallfleet:S3cret@127.0.0.1:{port}/hf"\n'
    )
    (tmp_path / "api.toml").write_text(f'centre_config = "consumer.toml"\nport = {free_port()}\n')
    done = hallfleet("api", "--config", str(tmp_path / "api.toml"))
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith(
        f"hallfleet api: cannot open the store postgresql+asyncpg://hallfleet:***@127.0.0.1:{port}/hf"
    )
    assert "S3cret" not in done.stderr + done.stdout


def test_user_commands_with_the_database_down_say_so_in_one_line_without_the_password(tmp_path: Path) -> None:
    """`hallfleet user add` is the guide's first step after the API starts (docs/deployment.md, step 6)."""
    port = free_port()
    (tmp_path / "consumer.toml").write_text(
        f'[store]\nurl = "postgresql+asyncpg://hallfleet:S3cret@127.0.0.1:{port}/hf"\n'
    )
    (tmp_path / "api.toml").write_text('centre_config = "consumer.toml"\n')
    done = hallfleet("user", "list", "--config", str(tmp_path / "api.toml"))
    assert done.returncode == 1
    line = one_line(done)
    assert line.startswith(
        f"hallfleet user: cannot open the store postgresql+asyncpg://hallfleet:***@127.0.0.1:{port}/hf"
    )
    assert "S3cret" not in done.stderr + done.stdout


def test_api_with_a_missing_mqtt_password_file_names_it(tmp_path: Path) -> None:
    (tmp_path / "consumer.toml").write_text('[mqtt]\npassword_file = "/nonexistent/api-mqtt-password"\n')
    (tmp_path / "api.toml").write_text('centre_config = "consumer.toml"\n')
    done = hallfleet("api", "--config", str(tmp_path / "api.toml"))
    assert done.returncode == 2 and "/nonexistent/api-mqtt-password" in one_line(done)


def test_agent_with_a_missing_ca_file_or_password_file_names_the_key(tmp_path: Path) -> None:
    base = f'site = "qingpu"\ndevice = "sim-1"\nrole = "sim"\n[outbox]\npath = "{tmp_path}/outbox.db"\n'
    (tmp_path / "tls.toml").write_text(base + '[mqtt.tls]\nca_file = "/nonexistent/mqtt-ca"\n')
    done = hallfleet("agent", "--config", str(tmp_path / "tls.toml"))
    assert done.returncode == 2 and "mqtt.tls.ca_file = /nonexistent/mqtt-ca" in one_line(done)
    (tmp_path / "pw.toml").write_text(base.replace("[outbox]", '[mqtt]\npassword_file = "/nonexistent/pw"\n[outbox]'))
    done = hallfleet("agent", "--config", str(tmp_path / "pw.toml"))
    assert done.returncode == 2 and "/nonexistent/pw" in one_line(done)
    assert not (tmp_path / "outbox.db").exists(), "nothing is opened before the files are checked"


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another process already listens on (a second copy of the service, anything else)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_api_on_a_port_already_in_use_names_the_port_key_in_one_line(tmp_path: Path, held_port: int) -> None:
    (tmp_path / "consumer.toml").write_text(f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/store.db"\n')
    (tmp_path / "api.toml").write_text(f'centre_config = "consumer.toml"\nport = {held_port}\n')
    done = hallfleet("api", "--config", str(tmp_path / "api.toml"))
    line = one_line(done)
    assert done.returncode == 2
    assert line.startswith(f"hallfleet: port = {held_port}: cannot listen on 127.0.0.1:{held_port}: "), line
    assert not (tmp_path / "store.db").exists(), "the port is checked before the store is opened"


def test_consumer_and_agent_with_their_metrics_port_in_use_name_it_in_one_line(tmp_path: Path, held_port: int) -> None:
    (tmp_path / "consumer.toml").write_text(
        f'instance = "t"\nmetrics_port = {held_port}\n[mqtt]\nport = {free_port()}\n'
        f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/store.db"\n'
    )
    done = hallfleet("consumer", "--config", str(tmp_path / "consumer.toml"))
    assert done.returncode == 2
    assert one_line(done).startswith(f"hallfleet: metrics_port = {held_port}: cannot listen on 127.0.0.1:")
    (tmp_path / "agent.toml").write_text(
        f'site = "qingpu"\ndevice = "sim-1"\nrole = "sim"\nmetrics_port = {held_port}\n[mqtt]\nport = {free_port()}\n'
        f'[outbox]\npath = "{tmp_path}/outbox.db"\n'
    )
    done = hallfleet("agent", "--config", str(tmp_path / "agent.toml"))
    assert done.returncode == 2
    assert one_line(done).startswith(f"hallfleet: metrics_port = {held_port}: cannot listen on 127.0.0.1:")
