"""Commands and desired config end to end: a real Mosquitto, a real agent process, the consumer
storing acks, the audit log."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from broker.commands import centre_link, command_row, issue_command, set_desired_config
from broker.mosquitto.local import LocalMosquitto
from broker.store.schema import audit_log, device_configs, devices, events
from protocol import topics
from runtime.settings import MqttConfig
from runtime.transport import AsyncMqtt
from tests.conftest import RunningConsumer
from tests.support.apps import app_command, free_port
from tests.support.procs import Proc, agent_proc, presence, wait_for

DEVICE = "qp/att-1"


@pytest.fixture
async def centre(mosquitto: LocalMosquitto) -> AsyncIterator[AsyncMqtt]:
    client = AsyncMqtt(centre_link(MqttConfig(host=mosquitto.host, port=mosquitto.port), "test"))
    await client.connect()
    yield client
    await client.disconnect()


@pytest.fixture
async def agent(mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, procs: list[Proc]) -> Proc:
    a = agent_proc(tmp_path, mosquitto.port, heartbeat_s=60, rate=0.01)
    procs.append(a.start())
    await wait_for(lambda: _online(consumer), 20, "the agent's birth")
    return a


async def _online(consumer: RunningConsumer) -> bool:
    return await presence(consumer.store, DEVICE) == "online"


async def final_state(consumer: RunningConsumer, command_id: str, limit_s: float = 20) -> Any:
    async def done() -> bool:
        row = await command_row(consumer.store, command_id)
        return row is not None and row.state in ("succeeded", "failed", "rejected", "expired")

    await wait_for(done, limit_s, f"command {command_id} to finish")
    return await command_row(consumer.store, command_id)


async def ack_states(consumer: RunningConsumer, command_id: str) -> list[str]:
    rows = await consumer.store.fetch(
        sa.select(events.c.data).where(events.c.type == "command.ack").order_by(events.c.seq)
    )
    return [json.loads(r.data)["state"] for r in rows if json.loads(r.data)["command_id"] == command_id]


async def audit_actions(consumer: RunningConsumer, command_id: str) -> list[str]:
    rows = await consumer.store.fetch(sa.select(audit_log).order_by(audit_log.c.id))
    return [r.action for r in rows if json.loads(r.detail).get("command_id") == command_id]


async def test_a_command_is_acked_in_order_and_every_transition_is_audited(
    consumer: RunningConsumer, centre: AsyncMqtt, agent: Proc
) -> None:
    cmd = await issue_command(consumer.store, centre, DEVICE, "diagnose", issuer="wang.li", reason="kiosk slow")
    row = await final_state(consumer, cmd.id)
    assert row.state == "succeeded"
    result = json.loads(row.result)
    assert result["link"]["connected"] is True and "outbox" in result and "health" in result
    assert await ack_states(consumer, cmd.id) == ["delivered", "running", "succeeded"]
    assert await audit_actions(consumer, cmd.id) == [
        "command.issue",
        "command.delivered",
        "command.running",
        "command.succeeded",
    ]
    issue = (await consumer.store.fetch(sa.select(audit_log).where(audit_log.c.action == "command.issue")))[0]
    assert (issue.actor, issue.target, issue.reason) == ("wang.li", DEVICE, "kiosk slow")


@pytest.mark.parametrize(
    ("name", "args", "reason", "why"),
    [
        ("format_disk", {}, "", "unknown command 'format_disk'"),
        ("collect_logs", {"lines": 9999}, "", "invalid arguments: lines"),
        ("diagnose", {"verbose": True}, "", "invalid arguments: verbose"),
        ("reboot", {}, "", "reboot needs a reason"),
    ],
)
async def test_refused_commands_are_rejected_with_the_reason(
    consumer: RunningConsumer,
    centre: AsyncMqtt,
    agent: Proc,
    name: str,
    args: dict[str, Any],
    reason: str,
    why: str,
) -> None:
    cmd = await issue_command(consumer.store, centre, DEVICE, name, args, issuer="it", reason=reason)
    row = await final_state(consumer, cmd.id)
    assert row.state == "rejected"
    assert why in row.refusal
    assert await audit_actions(consumer, cmd.id) == ["command.issue", "command.rejected"]


async def test_the_same_command_delivered_twice_runs_once(
    consumer: RunningConsumer, centre: AsyncMqtt, agent: Proc
) -> None:
    cmd = await issue_command(consumer.store, centre, DEVICE, "diagnose", issuer="it")
    await centre.publish_confirmed(topics.cmd("qp", "att-1"), cmd.model_dump_json().encode())
    await final_state(consumer, cmd.id)
    await asyncio.sleep(1.0)  # room for a second run, if there were one
    assert await ack_states(consumer, cmd.id) == ["delivered", "running", "succeeded"]


async def test_a_command_for_an_offline_device_waits_for_it_or_expires(
    consumer: RunningConsumer, centre: AsyncMqtt, agent: Proc
) -> None:
    assert agent.terminate() == 0
    await wait_for(lambda: _is(consumer, "shutdown"), 10, "the agent to leave")
    waits = await issue_command(consumer.store, centre, DEVICE, "diagnose", issuer="it", ttl_s=120)
    late = await issue_command(consumer.store, centre, DEVICE, "diagnose", issuer="it", ttl_s=1)
    row = await final_state(consumer, late.id, limit_s=10)
    assert row.state == "expired"
    assert await audit_actions(consumer, late.id) == ["command.issue", "command.expired"]
    agent.start()  # the persistent session kept the first command for it
    assert (await final_state(consumer, waits.id)).state == "succeeded"
    await asyncio.sleep(1.0)
    assert await ack_states(consumer, late.id) == [], "the broker discards an expired command"
    assert (await command_row(consumer.store, late.id)).state == "expired"


async def test_desired_config_is_applied_kept_across_restarts_and_a_bad_one_never_replaces_it(
    consumer: RunningConsumer, centre: AsyncMqtt, agent: Proc
) -> None:
    store = consumer.store
    good = await set_desired_config(store, centre, DEVICE, {"heartbeat_s": 0.5, "labels": {"zone": "24h"}}, issuer="it")
    await wait_for(lambda: _config_state(consumer, good.version, "applied"), 15, "config v1 applied")
    await wait_for(lambda: _heartbeat(consumer, 0.5), 10, "the new heartbeat announced in the birth")

    bad = await set_desired_config(store, centre, DEVICE, {"heartbeat_s": "fast", "colour": "red"}, issuer="it")
    await wait_for(lambda: _config_state(consumer, bad.version, "rejected"), 15, "config v2 rejected")
    errors = await store.scalar(sa.select(device_configs.c.errors).where(device_configs.c.version == bad.version))
    assert "heartbeat_s" in errors and "colour" in errors

    assert agent.terminate() == 0
    agent.start()
    diag = await issue_command(store, centre, DEVICE, "diagnose", issuer="it")
    result = json.loads((await final_state(consumer, diag.id)).result)
    assert result["config_version"] == good.version
    assert result["health"]["interval_s"] == 0.5, "the applied config survives a restart, the bad one never ran"


async def test_restart_agent_is_acknowledged_by_the_next_start(
    consumer: RunningConsumer, centre: AsyncMqtt, agent: Proc
) -> None:
    cmd = await issue_command(consumer.store, centre, DEVICE, "restart_agent", issuer="it", reason="stuck reader")
    assert agent.wait(20) == 75, "the agent leaves with EX_TEMPFAIL so systemd starts it again"
    agent.start()  # what systemd's Restart=on-failure does
    row = await final_state(consumer, cmd.id)
    assert row.state == "succeeded"
    assert await ack_states(consumer, cmd.id) == ["delivered", "running", "succeeded"]


async def _is(consumer: RunningConsumer, state: str) -> bool:
    return await presence(consumer.store, DEVICE) == state


async def _config_state(consumer: RunningConsumer, version: int, state: str) -> bool:
    got = await consumer.store.scalar(sa.select(device_configs.c.state).where(device_configs.c.version == version))
    return bool(got == state)


async def _heartbeat(consumer: RunningConsumer, value: float) -> bool:
    got = await consumer.store.scalar(sa.select(devices.c.heartbeat_s).where(devices.c.key == DEVICE))
    return bool(got == value)


async def test_restart_app_restarts_the_supervised_application_and_the_centre_sees_it(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, centre: AsyncMqtt, tmp_path: Path, procs: list[Proc]
) -> None:
    port = free_port()
    app = {
        "name": "kiosk",
        "command": app_command("http", port),
        "health_url": f"http://127.0.0.1:{port}/health",
        "probe_interval_s": 0.3,
        "failures_before_restart": 2,
        "recovery_timeout_s": 15,
    }
    agent = agent_proc(tmp_path, mosquitto.port, heartbeat_s=60, rate=0.01, app=app)
    procs.append(agent.start())
    await wait_for(lambda: _online(consumer), 20, "the agent's birth")
    await wait_for(lambda: _http_ok(port), 20, "the kiosk application to answer")
    cmd = await issue_command(consumer.store, centre, DEVICE, "restart_app", issuer="tech.zhao", reason="frozen UI")
    row = await final_state(consumer, cmd.id, limit_s=30)
    assert row.state == "succeeded", row.refusal
    assert json.loads(row.result) == {"healthy": True}
    restarts = await consumer.store.fetch(sa.select(events.c.data).where(events.c.type == "app.restart"))
    assert [json.loads(r.data)["trigger"] for r in restarts] == ["command"]
    assert json.loads(restarts[0].data)["ok"] is True
    assert agent.terminate() == 0
    assert not await _http_ok(port), "a clean agent stop also stops the application it supervises"


async def _http_ok(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.write(b"GET /health HTTP/1.0\r\n\r\n")
    line = await reader.readline()
    writer.close()
    return b" 200 " in line


async def test_a_command_for_a_device_that_never_connected_is_sent_again_until_it_comes(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, centre: AsyncMqtt, tmp_path: Path, procs: list[Proc]
) -> None:
    # No session for this client id yet: the broker keeps nothing for it, the consumer re-sends.
    cmd = await issue_command(consumer.store, centre, DEVICE, "diagnose", issuer="it", ttl_s=120)
    await asyncio.sleep(1.5)
    procs.append(agent_proc(tmp_path, mosquitto.port, heartbeat_s=60, rate=0.01).start())
    row = await final_state(consumer, cmd.id, limit_s=20)
    assert row.state == "succeeded"
    assert await ack_states(consumer, cmd.id) == ["delivered", "running", "succeeded"]
