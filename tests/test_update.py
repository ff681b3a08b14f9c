"""Agent updates end to end: a real Mosquitto, the consumer storing acks and events, agents as real processes run
from versioned venvs under a stand-in for systemd (tests/support/supervise.py), pip installing real wheels of this
checkout from a local package store, and the centre's ``hallfleet update`` CLI as a real process.

The device venvs see the project's dependencies through ``update.shared_site_packages`` (the test venv's
site-packages), so pip installs only hallfleet itself; each test device's 1.0.0 is one venv installed once per
session and linked into the device's versions/ (the updater installs every other version for real).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import http.server
import json
import os
import signal
import subprocess
import sys
import sysconfig
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.commands.update import UpdateConfig
from agent.config import AgentConfig, OutboxConfig
from agent.outbox import Outbox
from agent.state import StateStore
from agent.updater import (
    COMPLETE,
    LAST_RESULT,
    REQUEST,
    UpdateError,
    current_link,
    install,
    prune,
    switch,
    versions_dir,
)
from broker.commands import centre_link, issue_command
from broker.mosquitto.local import LocalMosquitto
from broker.store import commands as cmd_sql
from broker.store.schema import audit_log, commands, devices, events
from protocol.commands import Command
from protocol.ids import uuid7
from runtime.settings import MqttConfig
from runtime.transport import AsyncMqtt
from tests.conftest import RunningConsumer
from tests.support.procs import wait_for, write_toml
from tests.support.wheels import REPO, broken_cli, build_wheel

# The store is not what is tested here: SQLite only (the command path runs on both in test_commands.py).
SQLITE = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)

BASE, GOOD, BROKEN = "1.0.0", "1.0.1", "1.0.2"
SHARED = Path(sysconfig.get_paths()["purelib"])
SITE = "qp"


@pytest.fixture(scope="session")
def package_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The centre's package store: a directory of wheels (pip --no-index --find-links)."""
    store = tmp_path_factory.mktemp("package-store")
    build_wheel(store, BASE)
    build_wheel(store, GOOD)
    build_wheel(store, BROKEN, broken_cli())
    return store


@pytest.fixture(scope="session")
def base_venv(tmp_path_factory: pytest.TempPathFactory, package_store: Path) -> Path:
    """hallfleet 1.0.0 installed once, by the updater's own install step."""
    root = tmp_path_factory.mktemp("base")
    return install(root, BASE, str(package_store), shared_site_packages=SHARED)


@dataclass
class Device:
    name: str
    root: Path
    state: Path
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def current(self) -> str:
        return current_link(self.root).resolve().name


@pytest.fixture
def devices_started() -> Iterator[list[Device]]:
    started: list[Device] = []
    yield started
    for d in started:
        if d.popen.poll() is None:
            d.popen.send_signal(signal.SIGTERM)
            try:
                d.popen.wait(20)
            except subprocess.TimeoutExpired:
                d.popen.kill()
                d.popen.wait()


def start_device(tmp_path: Path, port: int, name: str, base_venv: Path, started: list[Device]) -> Device:
    """A device as first boot leaves it: versions/1.0.0, the link venv pointing at it, the agent run through it."""
    d = tmp_path / name
    root = d / "opt"
    versions_dir(root).mkdir(parents=True)
    (versions_dir(root) / BASE).symlink_to(base_venv)
    switch(root, versions_dir(root) / BASE)
    pidfile = d / "supervisor.pid"
    cfg = write_toml(
        d / "agent.toml",
        {"site": SITE, "device": name, "role": "none", "heartbeat_s": 30},
        {
            "mqtt": {"host": "127.0.0.1", "port": port, "backoff_initial_s": 0.1, "backoff_max_s": 1.0},
            "outbox": {"path": str(d / "state" / "outbox.db")},
            "update": {
                "root": str(root),
                "launcher": [],
                "restart_command": ["sh", "-c", f'kill -HUP "$(cat {pidfile})"'],
                "shared_site_packages": str(SHARED),
            },
        },
    )
    (d / "state").mkdir()
    log_path = d / "device.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HALLFLEET_", "PYTHON"))}
    agent = [str(current_link(root) / "bin" / "python"), "-m", "hallfleet.cli", "agent", "--config", str(cfg)]
    supervisor = [sys.executable, str(REPO / "tests" / "support" / "supervise.py"), str(pidfile), "--", *agent]
    with log_path.open("ab") as log:
        # cwd outside the checkout: `python -m` puts the cwd first on sys.path, and the repo would shadow the wheel.
        popen = subprocess.Popen(supervisor, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=d)
    device = Device(name, root, d / "state" / "update", popen, log_path)
    started.append(device)
    return device


async def device_row(consumer: RunningConsumer, name: str) -> Any:
    rows = await consumer.store.fetch(sa.select(devices).where(devices.c.key == f"{SITE}/{name}"))
    return rows[0] if rows else None


async def online_with(consumer: RunningConsumer, name: str, version: str, after_session: int = -1) -> bool:
    row = await device_row(consumer, name)
    return row is not None and row.presence == "online" and row.agent_version == version and row.session > after_session


async def updated_events(consumer: RunningConsumer, name: str) -> list[dict[str, Any]]:
    rows = await consumer.store.fetch(
        sa.select(events.c.data)
        .where(events.c.device == name, events.c.type == "device.updated")
        .order_by(events.c.seq)
    )
    return [json.loads(r.data) for r in rows]


async def commands_for(consumer: RunningConsumer, name: str) -> list[Any]:
    return list(await consumer.store.fetch(sa.select(commands).where(commands.c.key == f"{SITE}/{name}")))


def centre_toml(tmp_path: Path, mosquitto: LocalMosquitto, store_url: str) -> Path:
    return write_toml(
        tmp_path / "centre.toml",
        {"instance": "cli"},
        {"mqtt": {"host": "127.0.0.1", "port": mosquitto.port}, "store": {"url": store_url}},
    )


async def hallfleet(*args: str, timeout_s: float = 240) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLFLEET_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hallfleet.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    return proc.returncode or 0, out.decode()


@SQLITE
async def test_a_rollout_updates_the_canary_then_the_batch_and_each_reports_the_new_version(
    mosquitto: LocalMosquitto,
    consumer: RunningConsumer,
    store_url: str,
    tmp_path: Path,
    package_store: Path,
    base_venv: Path,
    devices_started: list[Device],
) -> None:
    a = start_device(tmp_path, mosquitto.port, "kiosk-1", base_venv, devices_started)
    b = start_device(tmp_path, mosquitto.port, "kiosk-2", base_venv, devices_started)
    for d in (a, b):
        await wait_for(lambda d=d: online_with(consumer, d.name, BASE), 60, f"{d.name} online on {BASE}")
    centre = centre_toml(tmp_path, mosquitto, store_url)

    code, out = await hallfleet(
        "update", "rollout", "--site", SITE, "--version", GOOD, "--store", str(package_store),
        "--canary", "kiosk-2", "--batch", "1", "--health-timeout", "60", "--reason", "版本升级",
        "--issuer", "it.zhang", "--config", str(centre),
    )  # fmt: skip

    assert code == 0, out + a.log() + b.log()
    assert out.index("金丝雀 canary: kiosk-2") < out.index("批次 batch 1: kiosk-1"), out
    assert "完成：2 台已更新 / done: 2 devices updated" in out
    for d in (a, b):
        await wait_for(lambda d=d: online_with(consumer, d.name, GOOD), 30, f"{d.name} reporting {GOOD}")
        assert d.current() == GOOD
        events_ = await updated_events(consumer, d.name)
        assert [(e["from_version"], e["to_version"], e["outcome"]) for e in events_] == [(BASE, GOOD, "updated")]
        (cmd,) = await commands_for(consumer, d.name)
        assert (cmd.name, cmd.state, cmd.issuer, cmd.reason) == ("update", "succeeded", "it.zhang", "版本升级")
        assert json.loads(cmd.result)["outcome"] == "updated"
        actions = [
            r.action
            for r in await consumer.store.fetch(sa.select(audit_log).where(audit_log.c.target == f"{SITE}/{d.name}"))
        ]
        assert actions[0] == "command.issue" and actions[-1] == "command.succeeded", actions
        assert (
            not (d.state / REQUEST).exists() and json.loads((d.state / LAST_RESULT).read_text())["outcome"] == "updated"
        )

    code, out = await hallfleet("update", "status", "--site", SITE, "--config", str(centre))
    assert code == 0, out
    for line in (ln for ln in out.splitlines() if ln.startswith("kiosk-")):
        assert f" {GOOD} " in line and "online" in line and f"{BASE} -> {GOOD} 已更新 updated" in line, out

    # Run again (a rollout resumed after a stop): devices on the version are not sent it again.
    code, out = await hallfleet(
        "update", "rollout", "--site", SITE, "--version", GOOD, "--store", str(package_store), "--config", str(centre)
    )
    assert code == 0 and "已是该版本 already on it: kiosk-1, kiosk-2" in out, out
    assert [len(await commands_for(consumer, d.name)) for d in (a, b)] == [1, 1]


@SQLITE
async def test_an_update_that_fails_its_health_check_rolls_back_and_stops_the_rollout(
    mosquitto: LocalMosquitto,
    consumer: RunningConsumer,
    store_url: str,
    tmp_path: Path,
    package_store: Path,
    base_venv: Path,
    devices_started: list[Device],
) -> None:
    canary = start_device(tmp_path, mosquitto.port, "att-1", base_venv, devices_started)
    other = start_device(tmp_path, mosquitto.port, "att-2", base_venv, devices_started)
    for d in (canary, other):
        await wait_for(lambda d=d: online_with(consumer, d.name, BASE), 60, f"{d.name} online on {BASE}")
    session_before = (await device_row(consumer, canary.name)).session
    centre = centre_toml(tmp_path, mosquitto, store_url)
    refusals = [
        (["--version", "banana"], "--version 'banana' is not a PEP 440 version"),
        (["--version", BROKEN, "--canary", "att-9"], "--canary att-9: not among the devices of this rollout"),
        (["--version", BROKEN, "--devices", "att-1,ghost"], "--devices ghost: the centre has never heard of them"),
    ]
    for args, why in refusals:
        code, out = await hallfleet(
            "update", "rollout", "--site", SITE, "--store", "/w", *args, "--config", str(centre)
        )
        assert (code, why in out) == (1, True), out

    code, out = await hallfleet(
        "update", "rollout", "--site", SITE, "--version", BROKEN, "--store", str(package_store),
        "--canary", "att-1", "--health-timeout", "30", "--config", str(centre),
    )  # fmt: skip

    assert code == 3, out + canary.log()
    assert "att-1: 已回滚 rolled back" in out and "failed its health check" in out, out
    assert "未执行 not touched: att-2" in out and "1 not touched" in out, out
    # The broken version really ran and exited, and the old one came back and reports again.
    assert "this build is broken: the agent exits at start" in canary.log()
    await wait_for(
        lambda: online_with(consumer, canary.name, BASE, session_before), 30, "the canary back on 1.0.0 (a new session)"
    )
    assert canary.current() == BASE and (versions_dir(canary.root) / BROKEN / "bin" / "python").exists()
    (event,) = await updated_events(consumer, canary.name)
    assert (event["from_version"], event["to_version"], event["outcome"]) == (BASE, BROKEN, "rolled_back")
    assert "no agent reported healthy within 30 s" in event["reason"]
    (cmd,) = await commands_for(consumer, canary.name)
    assert cmd.state == "failed" and cmd.refusal.startswith("rolled back 已回滚: ")
    # The rollout stopped: the other device never got a command, and nothing about it is in the audit log.
    assert await commands_for(consumer, other.name) == []
    assert await consumer.store.fetch(sa.select(audit_log).where(audit_log.c.target == f"{SITE}/{other.name}")) == []
    assert other.current() == BASE and (await device_row(consumer, other.name)).agent_version == BASE


@pytest.fixture
async def centre_client(mosquitto: LocalMosquitto) -> AsyncIterator[AsyncMqtt]:
    client = AsyncMqtt(centre_link(MqttConfig(host=mosquitto.host, port=mosquitto.port), "test"))
    await client.connect()
    yield client
    await client.disconnect()


async def final(consumer: RunningConsumer, command_id: str, limit_s: float = 60) -> Any:
    async def done() -> Any:
        rows = await consumer.store.fetch(sa.select(commands).where(commands.c.id == command_id))
        return rows and rows[0].state in ("succeeded", "failed", "rejected", "expired")

    await wait_for(done, limit_s, f"command {command_id} to finish")
    return (await consumer.store.fetch(sa.select(commands).where(commands.c.id == command_id)))[0]


@SQLITE
async def test_bad_updates_are_refused_with_why_and_a_failed_install_switches_nothing(
    mosquitto: LocalMosquitto,
    consumer: RunningConsumer,
    centre_client: AsyncMqtt,
    running: Any,
    tmp_path: Path,
) -> None:
    """An in-process agent (version 0.1.0, this checkout) on a versions layout; its updater runs for real."""
    root = tmp_path / "opt"
    (versions_dir(root) / "0.1.0").mkdir(parents=True)
    switch(root, versions_dir(root) / "0.1.0")
    empty_store = tmp_path / "empty-store"
    empty_store.mkdir()
    cfg = AgentConfig(
        site=SITE,
        device="pad-1",
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port, backoff_initial_s=0.1, backoff_max_s=1.0),
        outbox=OutboxConfig(path=tmp_path / "outbox.db"),
        update=UpdateConfig(root=root, launcher=[], restart_command=["false"]),
    )
    running(cfg)
    await wait_for(lambda: online_with(consumer, "pad-1", "0.1.0"), 30, "pad-1 online")

    async def send(args: dict[str, Any]) -> Any:
        cmd = await issue_command(consumer.store, centre_client, f"{SITE}/pad-1", "update", args, issuer="it")
        return cmd

    store = str(empty_store)
    cases = [
        (
            {"version": "banana", "store": store},
            "rejected",
            "invalid arguments: version: Value error, 'banana' is not a PEP 440",
        ),
        (
            {"version": "2.0", "store": "wheels/"},
            "rejected",
            "invalid arguments: store: Value error, the package store is",
        ),
        ({"version": "2.0", "store": store, "health_timeout_s": 1}, "rejected", "invalid arguments: health_timeout_s"),
        (
            {"version": "0.0.9", "store": store},
            "failed",
            "0.0.9 is older than 0.1.0: a downgrade needs allow_downgrade",
        ),
        ({"version": "0.1.0", "store": store}, "failed", "this device already runs 0.1.0"),
        ({"version": 0, "store": store}, "failed", "0 is older than 0.1.0"),  # `cmd send ... version=0`: a number
    ]
    for args, state, why in cases:
        row = await final(consumer, (await send(args)).id)
        assert (row.state, why in row.refusal) == (state, True), (args, row.refusal)

    first = await send({"version": "9.9.9", "store": store})
    second = await send({"version": "9.9.8", "store": store})
    second_row = await final(consumer, second.id)
    assert second_row.state == "failed" and "an update to 9.9.9 is already running" in second_row.refusal
    first_row = await final(consumer, first.id)
    assert first_row.state == "failed" and first_row.refusal.startswith("update failed 更新失败: install failed")
    assert "hallfleet==9.9.9" in first_row.refusal
    (event,) = await updated_events(consumer, "pad-1")
    assert (event["to_version"], event["outcome"]) == ("9.9.9", "failed")
    assert current_link(root).resolve().name == "0.1.0" and not (versions_dir(root) / "9.9.9").exists()


@SQLITE
async def test_an_update_interrupted_before_its_updater_started_fails_instead_of_passing_for_a_success(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, running: Any, tmp_path: Path
) -> None:
    """The agent died between taking the command (running) and starting the updater: nothing changed. A mangled
    request file left behind does not stop the agent either."""
    now = datetime.now(UTC)
    cmd = Command(id=uuid7(), name="update", args={}, issuer="it", issued_at=now, expires_at=now + timedelta(hours=1))
    async with consumer.store.engine.begin() as conn:
        await cmd_sql.insert_command(conn, f"{SITE}/pad-2", cmd)
    async with Outbox(tmp_path / "outbox.db") as outbox:
        state = StateStore(outbox.db)
        await state.prepare()
        await state.set_command_state(cmd.id, "update", "running")
    (tmp_path / "update").mkdir()
    mangled = {"command_id": cmd.id, "from_version": "0.1.0", "to_version": "9", "store": "/w", "root": "/opt"}
    mangled |= {"health_timeout_s": "soon", "state_dir": "/x", "previous": "/y", "restart_command": []}
    (tmp_path / "update" / REQUEST).write_text(json.dumps(mangled))
    cfg = AgentConfig(
        site=SITE,
        device="pad-2",
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port, backoff_initial_s=0.1, backoff_max_s=1.0),
        outbox=OutboxConfig(path=tmp_path / "outbox.db"),
        update=UpdateConfig(root=tmp_path / "opt", launcher=[]),
    )
    running(cfg)
    row = await final(consumer, cmd.id, 30)
    assert row.state == "failed" and "before the updater started; nothing was changed" in row.refusal
    assert await online_with(consumer, "pad-2", "0.1.0")


def test_old_versions_are_pruned_but_never_the_current_or_previous_one(tmp_path: Path) -> None:
    root = tmp_path / "opt"
    for n, version in enumerate(["1.0", "1.1", "1.2", "1.3", "1.4"]):
        (versions_dir(root) / version).mkdir(parents=True)
        (versions_dir(root) / version / COMPLETE).write_text("")
        os.utime(versions_dir(root) / version / COMPLETE, (1000 + n, 1000 + n))
    (versions_dir(root) / "2.0").mkdir()  # half-installed: not counted, replaced by the next install of 2.0
    # Rolled back to 1.0 earlier, now 1.4 is current: 1.0 is the oldest by install time but is protected.
    removed = prune(root, 3, [versions_dir(root) / "1.4", versions_dir(root) / "1.0"])
    assert sorted(p.name for p in removed) == ["1.1", "1.2"]
    assert sorted(p.name for p in versions_dir(root).iterdir()) == ["1.0", "1.3", "1.4", "2.0"]


def test_a_version_installs_from_an_http_simple_index_and_only_from_it(tmp_path: Path, package_store: Path) -> None:
    """The centre's store served over HTTP as a PEP 503 simple index (what pypiserver or devpi serve)."""
    web = tmp_path / "web"
    (web / "simple" / "hallfleet").mkdir(parents=True)
    links = []
    for wheel in sorted(package_store.glob("*.whl")):
        (web / wheel.name).write_bytes(wheel.read_bytes())
        links.append(
            f'<a href="../../{wheel.name}#sha256={hashlib.sha256(wheel.read_bytes()).hexdigest()}">{wheel.name}</a>'
        )
    (web / "simple" / "hallfleet" / "index.html").write_text("<html><body>" + "".join(links) + "</body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(web))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
        venv = install(tmp_path / "opt", GOOD, url, shared_site_packages=SHARED)
        assert (venv / COMPLETE).exists()
        cli = subprocess.run(
            [str(venv / "bin" / "hallfleet"), "--help"], capture_output=True, text=True, check=True, cwd=tmp_path
        )
        assert "update" in cli.stdout  # the new version's own console script runs
        # A version the store does not have is not looked for anywhere else (pip --isolated: no pip.conf, no
        # PIP_* from the environment), and leaves no half-made venv behind.
        with pytest.raises(UpdateError, match=r"installing hallfleet==7\.0\.0 from http://127\.0\.0\.1:\d+/simple/"):
            install(tmp_path / "opt", "7.0.0", url, shared_site_packages=SHARED)
        assert not (versions_dir(tmp_path / "opt") / "7.0.0").exists()
    finally:
        server.shutdown()
        server.server_close()
