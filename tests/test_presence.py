"""Presence from the three signals: the Will (crash), the heartbeat (hung but connected) and the
session counter (a late Will of an old session never kills a live one). Real agent processes, real
signals, a real broker."""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import devices, presence_history
from protocol import topics
from protocol.envelope import Presence, StatusMessage
from tests.conftest import RunningConsumer
from tests.support.mqtt import publish
from tests.support.procs import Proc, agent_proc, presence, wait_for

KEY = "qp/att-1"


async def online(store: Store) -> bool:
    return await presence(store, KEY) == "online"


async def history(store: Store) -> list[tuple[str, str]]:
    rows = await store.fetch(
        sa.select(presence_history.c.state, presence_history.c.reason)
        .where(presence_history.c.key == KEY)
        .order_by(presence_history.c.id)
    )
    return [(r.state, r.reason) for r in rows]


async def session(store: Store) -> int:
    return int(await store.scalar(sa.select(devices.c.session).where(devices.c.key == KEY)))


async def test_agent_killed_without_goodbye_is_offline_within_one_and_a_half_keepalives(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, procs: list[Proc]
) -> None:
    keepalive = 2
    agent = agent_proc(tmp_path, mosquitto.port, keepalive_s=keepalive, heartbeat_s=60, rate=1)
    procs.append(agent.start())
    await wait_for(lambda: online(consumer.store), 20, "the birth")
    agent.kill()
    took = await wait_for(lambda: _is(consumer.store, "offline"), 10, "the Will")
    assert took <= 1.5 * keepalive + 1.5, f"offline after {took:.2f} s"
    assert (await history(consumer.store))[-1] == ("offline", "will (connection lost)")


async def test_hung_agent_is_stale_within_two_heartbeats_and_online_again_when_it_resumes(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, procs: list[Proc]
) -> None:
    heartbeat = 1.0
    agent = agent_proc(tmp_path, mosquitto.port, keepalive_s=60, heartbeat_s=heartbeat, rate=0.1)
    procs.append(agent.start())
    await wait_for(lambda: online(consumer.store), 20, "the birth")
    await asyncio.sleep(2 * heartbeat)  # let heartbeats flow
    assert await online(consumer.store), "a device sending heartbeats must stay online"
    agent.signal(signal.SIGSTOP)  # connected (the socket stays open, keepalive 60 s) but doing nothing
    took = await wait_for(lambda: _is(consumer.store, "stale"), 10, "the stale mark")
    assert took <= 2 * heartbeat, f"stale after {took:.2f} s"
    agent.signal(signal.SIGCONT)
    await wait_for(lambda: online(consumer.store), 10, "the device to come back")
    assert (await history(consumer.store))[-2:] == [
        ("stale", "heartbeat overdue"),
        ("online", "heartbeat resumed"),
    ]


async def test_late_will_of_an_old_session_does_not_mark_the_live_device_offline(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, procs: list[Proc]
) -> None:
    agent = agent_proc(tmp_path, mosquitto.port, keepalive_s=30, heartbeat_s=60, rate=1)
    procs.append(agent.start())
    await wait_for(lambda: online(consumer.store), 20, "the first birth")
    # SIGKILL and an immediate restart: the broker hands the client id to the new connection.
    agent.kill()
    agent.start()
    await wait_for(lambda: _session_at_least(consumer.store, 2), 20, "the second session's birth")
    live = await session(consumer.store)

    statuses = consumer.consumer.counters.statuses
    will = StatusMessage(state=Presence.OFFLINE, session=live - 1, boot_id="old", ts=datetime.now(UTC), heartbeat_s=60)
    publish(mosquitto.port, [(topics.status("qp", "att-1"), will.model_dump_json().encode(), False)])
    await wait_for(lambda: consumer.consumer.counters.statuses > statuses, 10, "the late Will to be read")
    await asyncio.sleep(0.2)  # its batch commits
    assert await presence(consumer.store, KEY) == "online"

    # The same Will carrying the live session is believed: the check above can fail.
    current = will.model_copy(update={"session": live})
    publish(mosquitto.port, [(topics.status("qp", "att-1"), current.model_dump_json().encode(), False)])
    await wait_for(lambda: _is(consumer.store, "offline"), 10, "the current session's Will")


async def test_clean_stop_says_shutdown_and_the_will_never_follows(
    mosquitto: LocalMosquitto, consumer: RunningConsumer, tmp_path: Path, procs: list[Proc]
) -> None:
    keepalive = 2
    agent = agent_proc(tmp_path, mosquitto.port, keepalive_s=keepalive, heartbeat_s=60, rate=1)
    procs.append(agent.start())
    await wait_for(lambda: online(consumer.store), 20, "the birth")
    assert agent.terminate() == 0
    await wait_for(lambda: _is(consumer.store, "shutdown"), 10, "the goodbye")
    await asyncio.sleep(1.5 * keepalive + 1)
    assert await presence(consumer.store, KEY) == "shutdown"
    assert [s for s, _ in await history(consumer.store)] == ["online", "shutdown"]


async def _is(store: Store, state: str) -> bool:
    return await presence(store, KEY) == state


async def _session_at_least(store: Store, n: int) -> bool:
    return await online(store) and await session(store) >= n


async def test_an_idle_link_pings_within_its_keepalive_while_waking_only_every_quarter_of_it(
    mosquitto: LocalMosquitto,
) -> None:
    """The link's keepalive check runs every keepalive/4 (issue 20: a wakeup per link per second was a fleet
    simulator's CPU); an idle connection still pings in time, so the broker never drops it nor fires its Will."""
    from runtime.transport import AsyncMqtt, LinkOptions

    keepalive = 8
    client = AsyncMqtt(LinkOptions(host=mosquitto.host, port=mosquitto.port, client_id="idle-1", keepalive_s=keepalive))
    await client.connect()
    checks: list[float] = []
    real = client._client.loop_misc

    def counting() -> int:
        checks.append(asyncio.get_running_loop().time())
        return real()

    client._client.loop_misc = counting  # type: ignore[method-assign]
    try:
        await asyncio.sleep(2 * keepalive)  # past the broker's 1.5 keepalives twice over
        assert client.is_connected, "the broker dropped an idle link: no PINGREQ in time"
        assert 5 <= len(checks) <= 9, f"{len(checks)} keepalive checks in {2 * keepalive} s"
    finally:
        await client.disconnect()
