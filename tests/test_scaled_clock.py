"""Under a ScaledClock (the demo plays a day in minutes) the agent's heartbeat is kept in the clock's seconds,
the unit the centre's stale deadline is computed in, so a live device stays online; a hung one still goes
stale. A real broker, consumer and agent on the same clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from broker.config import ConsumerConfig, IngestConfig, RulesConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import devices, presence_history
from runtime.clock import ScaledClock, SystemClock, real_seconds
from runtime.settings import MqttConfig

SPEED = 120.0
HEARTBEAT_S = 120.0  # two minutes of hall time: one real second at 120x


def test_real_seconds_divide_by_the_speed_of_a_scaled_clock_only() -> None:
    assert real_seconds(ScaledClock(datetime(2026, 11, 20, tzinfo=UTC), SPEED), 600) == 5.0
    assert real_seconds(SystemClock(), 600) == 600


async def _presence(store: Store) -> tuple[str | None, list[str]]:
    state = await store.scalar(sa.select(devices.c.presence).where(devices.c.key == "qp/att-1"))
    rows = await store.fetch(sa.select(presence_history.c.state).where(presence_history.c.key == "qp/att-1"))
    return state, [r.state for r in rows]


async def test_a_heartbeating_agent_stays_online_through_hours_of_scaled_time_and_a_hung_one_goes_stale(
    mosquitto: LocalMosquitto, sqlite_url: str, tmp_path: Path
) -> None:
    clock = ScaledClock(datetime(2026, 11, 20, 0, 0, tzinfo=UTC), SPEED)
    mqtt = MqttConfig(host=mosquitto.host, port=mosquitto.port, keepalive_s=10)
    store = await Store.open(sqlite_url)
    cfg = ConsumerConfig(
        instance="t",
        mqtt=mqtt,
        store=StoreConfig(url=sqlite_url),
        ingest=IngestConfig(sweep_s=0.1),
        rules=RulesConfig(enabled=False),
    )
    consumer = Consumer(cfg, store, clock)
    consumer_task = asyncio.create_task(consumer.run())
    agent = Agent(
        AgentConfig(
            site="qp",
            device="att-1",
            heartbeat_s=HEARTBEAT_S,
            mqtt=mqtt,
            outbox=OutboxConfig(path=tmp_path / "outbox.db"),
        ),
        clock,
    )
    agent_task = asyncio.create_task(agent.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 10)
        for _ in range(100):
            if (await _presence(store))[0] == "online":
                break
            await asyncio.sleep(0.1)
        began = clock.now()
        # Six real seconds: twelve minutes of hall time, four stale deadlines (1.5 heartbeats = 3 min) over.
        await asyncio.sleep(6)
        state, history = await _presence(store)
        assert (clock.now() - began).total_seconds() > 4 * 1.5 * HEARTBEAT_S
        assert state == "online" and "stale" not in history, history
        # The agent hangs (its health loop stops): the deadline passes within two heartbeats of hall time.
        for task in asyncio.all_tasks():
            if task.get_name() == "health":
                task.cancel()
        for _ in range(60):
            if (await _presence(store))[0] == "stale":
                break
            await asyncio.sleep(0.1)
        assert (await _presence(store))[0] == "stale"
    finally:
        agent.stop()
        consumer.stop()
        await asyncio.wait_for(asyncio.gather(agent_task, consumer_task, return_exceptions=True), 20)
        await store.close()
