"""The agents' side of the daily duties, end to end on a real Mosquitto, consumer and store.

Network check (agent/netcheck.py): real probes on loopback. The centre is the agent's own broker (the private
Mosquitto, a real TCP listener), the extranet a TCP server this test runs, the gateway a loopback port nothing
listens on (a refusal proves the gateway is there), an unreachable extranet a closed port. DNS: a passing lookup
is the machine's resolver library answering ``localhost`` (from /etc/hosts, no query leaves the machine); a
failing lookup is a stub, because a real one would query the sandbox's nameserver at a private address, which
no test here may send to.

Patrol handheld (agent/roles/patrol.py): the QR scanner's twin types the officer's card and the devices' codes as
keystrokes through the real evdev decoder; only points scanned with an officer signed in leave the device.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent.agent import Agent
from agent.commands.registry import NoArgs
from agent.config import AgentConfig, OutboxConfig
from agent.netcheck import Endpoint, NetCheckConfig
from agent.roles.patrol import PatrolConfig, SimulatedScannerConfig
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import events
from runtime.settings import MqttConfig
from tests.conftest import RunningConsumer
from tests.support.hall import wait_until


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def extranet() -> AsyncIterator[Endpoint]:
    """A TCP server standing for the government extranet endpoint: it accepts and closes."""

    async def answer(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield Endpoint(host="127.0.0.1", port=port)
    server.close()
    await server.wait_closed()


def agent_for(mosquitto: LocalMosquitto, tmp_path: Path, device: str, role: str = "sim", **extra: Any) -> Agent:
    return Agent(
        AgentConfig(
            site="qp", device=device, role=role, heartbeat_s=60,
            mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
            outbox=OutboxConfig(path=tmp_path / f"{device}.db"), clock_sync_file=Path("/"), **extra,
        )
    )  # fmt: skip


async def stored(consumer: RunningConsumer, event_type: str, device: str) -> list[dict[str, Any]]:
    e = events.c
    rows = await consumer.store.fetch(sa.select(e.data).where(e.type == event_type, e.device == device).order_by(e.seq))
    return [json.loads(r.data) for r in rows]


def probes(check: dict[str, Any]) -> dict[str, bool]:
    return {p["target"]: p["ok"] for p in check["probes"]}


async def test_the_daily_check_reaches_the_centre_and_says_what_it_could_not_reach(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any, extranet: Endpoint
) -> None:
    """GIVEN a kiosk whose daily check is due at start WHEN its gateway refuses, localhost resolves, the broker and the
    extranet answer THEN the centre stores one passing check; WHEN the extranet then goes away and the check is run
    again by command THEN the centre stores a failing one naming the extranet, and the command's answer says so."""
    gateway = Endpoint(host="127.0.0.1", port=closed_port())
    cfg = NetCheckConfig(daily_at="00:00", gateway=gateway, dns_name="localhost", extranet=extranet, timeout_s=2)
    agent = running(agent_for(mosquitto, tmp_path, "k1", netcheck=cfg))
    first = await wait_until(lambda: stored(consumer, "duty.netcheck", "k1"), what="the start-up check")
    assert first[0]["ok"] and first[0]["trigger"] == "daily"
    assert probes(first[0]) == {"gateway": True, "dns": True, "centre": True, "extranet": True}
    assert "refused" in next(p["detail"] for p in first[0]["probes"] if p["target"] == "gateway")

    checker = agent.netcheck
    assert checker is not None
    checker.cfg = cfg.model_copy(update={"extranet": Endpoint(host="127.0.0.1", port=closed_port())})
    answer = await checker._cmd_check(NoArgs())  # what the network_check command runs
    assert answer == {"ok": False, "failed": ["extranet"]}
    both = await wait_until(lambda: _at_least(stored(consumer, "duty.netcheck", "k1"), 2), what="the failing check")
    assert (both[1]["ok"], both[1]["trigger"], probes(both[1])["extranet"]) == (False, "command", False)


async def test_a_dead_centre_and_a_failing_lookup_fail_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probes alone: the centre's port closed fails (a refusal is only good for the gateway); a resolver that
    cannot resolve fails the DNS probe (a stub: see the module docstring)."""
    from agent import netcheck

    centre = await netcheck.tcp_probe("centre", Endpoint(host="127.0.0.1", port=closed_port()), 2)
    assert not centre.ok and "refused" in centre.detail
    real = await netcheck.dns_probe("localhost", 2)
    assert (real.ok and "127.0.0.1" in real.detail) or "::1" in real.detail

    async def no_answer(*_a: Any, **_k: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_answer)
    stub = await netcheck.dns_probe("extranet.gov.example", 2)
    assert not stub.ok and "gaierror" in stub.detail


async def _at_least(rows: Any, n: int) -> Any:
    found = await rows
    return found if len(found) >= n else None


async def test_the_patrol_handheld_sends_only_points_scanned_by_a_signed_in_officer(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, running: Any
) -> None:
    """GIVEN a handheld with the scanner's twin WHEN a point is scanned before any card, then the officer's card, two
    points (one marked with an issue) and a code of another kind THEN the centre has exactly the two scans, with the
    officer's staff id and the finding, and the handheld counted the two codes it refused."""
    patrol = PatrolConfig(scanner=SimulatedScannerConfig(gap_s=0.05))
    agent = running(agent_for(mosquitto, tmp_path, "hand-1", role="patrol", patrol=patrol))
    role = agent.patrol
    assert role is not None
    await wait_until(_has_sim(role), what="the scanner twin")
    for code in ("HFP1:pad-9", "HFO1:S1", "HFP1:pad-1", "HFP1:pad-2:issue", "https://example.invalid/x"):
        role.sim.type(code)
        await asyncio.sleep(0.15)  # the decoder ends a code at Enter; a gap keeps them apart as a person's are
    scans = await wait_until(lambda: _at_least(stored(consumer, "patrol.scan", "hand-1"), 2), what="two scans")
    assert scans == [
        {"officer": "S1", "point": "pad-1", "finding": "ok"},
        {"officer": "S1", "point": "pad-2", "finding": "issue"},
    ]
    assert role.refused == 2


def _has_sim(role: Any) -> Any:
    async def check() -> bool:
        return role.sim is not None

    return check
