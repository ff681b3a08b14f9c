"""Nothing is lost, nothing is stored twice: real agent and consumer processes, a real Mosquitto that
is restarted and killed, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import events
from tests.support.procs import Proc, agent_proc, consumer_proc, outbox_state, stored_seqs, wait_for


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    # Migrate before any consumer process starts, so two migrations never race on one SQLite file.
    s = await Store.open(store_url)
    yield s
    await s.close()


async def count(store: Store) -> int:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(events)))


async def drained(agent_db: Path, n: int) -> bool:
    st = outbox_state(agent_db)
    return st["sim"] >= n and st["depth"] == 0


async def assert_exactly_once(store: Store, agent_db: Path, site: str, device: str, n: int) -> None:
    st = outbox_state(agent_db)
    seqs = await stored_seqs(store, site, device)
    assert st["sim"] == n
    assert len(seqs) == len(set(seqs)), "an event was stored twice"
    assert seqs == list(range(st["next_seq"])), "the store misses seqs the agent took"


async def test_every_event_stored_exactly_once_through_broker_restarts_and_agent_sigkill(
    mosquitto: LocalMosquitto, store: Store, store_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    n = 600
    consumer = consumer_proc(tmp_path, mosquitto.port, store_url).start()
    agent = agent_proc(tmp_path, mosquitto.port, events_n=n, rate=150, heartbeat_s=600, confirm_timeout_s=5)
    procs += [consumer, agent.start()]
    agent_db = tmp_path / "agent-qp-att-1.db"

    await wait_for(lambda: _at_least(store, 100), 60, "first 100 events")  # two processes start first
    mosquitto.stop()  # clean broker restart
    await asyncio.sleep(1.0)
    mosquitto.restart()
    await wait_for(lambda: _at_least(store, 250), 30, "250 events after the first broker restart")
    agent.kill()  # SIGKILL mid-stream: events committed to the outbox but unconfirmed must survive
    await asyncio.sleep(0.3)
    agent.start()
    await wait_for(lambda: _at_least(store, 350), 30, "350 events after the agent's SIGKILL")
    mosquitto.kill()  # SIGKILL: the broker loses what it PUBACKed since its last snapshot
    await asyncio.sleep(1.0)
    mosquitto.restart()

    await wait_for(lambda: drained(agent_db, n), 90, "the agent to finish and its outbox to drain")
    await assert_exactly_once(store, agent_db, "qp", "att-1", n)
    replayed = await store.scalar(sa.select(sa.func.count()).select_from(events).where(events.c.replayed))
    assert replayed > 0, "events kept through the broker outage should arrive marked replayed"


async def test_consumer_sigkill_mid_stream_loses_nothing(
    mosquitto: LocalMosquitto, store: Store, store_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    n = 600
    consumer = consumer_proc(tmp_path, mosquitto.port, store_url).start()
    agent = agent_proc(tmp_path, mosquitto.port, events_n=n, rate=200, heartbeat_s=600, confirm_timeout_s=5)
    procs += [consumer, agent.start()]
    await wait_for(lambda: _at_least(store, 150), 30, "first 150 events")
    consumer.kill()
    await asyncio.sleep(0.5)
    consumer.start()
    await wait_for(lambda: drained(tmp_path / "agent-qp-att-1.db", n), 90, "the outbox to drain")
    await assert_exactly_once(store, tmp_path / "agent-qp-att-1.db", "qp", "att-1", n)


@pytest.mark.postgres
async def test_two_consumers_in_one_share_group_store_each_event_once(
    mosquitto: LocalMosquitto, pg_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    store = await Store.open(pg_url)
    try:
        n = 300
        consumers = [consumer_proc(tmp_path, mosquitto.port, pg_url, instance=f"c{i}").start() for i in (1, 2)]
        devices = [f"att-{i}" for i in range(1, 4)]
        agents = [
            agent_proc(tmp_path, mosquitto.port, device=d, events_n=n, rate=150, heartbeat_s=600).start()
            for d in devices
        ]
        procs += consumers + agents
        for d in devices:
            await wait_for(lambda d=d: drained(tmp_path / f"agent-qp-{d}.db", n), 90, f"{d} to drain")
        for d in devices:
            await assert_exactly_once(store, tmp_path / f"agent-qp-{d}.db", "qp", d, n)
        stored_by = []
        for c in consumers:
            assert c.terminate() == 0
            found = re.search(r"stopped: received \d+, stored (\d+)", c.log())
            assert found, c.log()[-2000:]
            stored_by.append(int(found.group(1)))
        assert all(s > 0 for s in stored_by), f"both members should take a share: {stored_by}"
        assert sum(stored_by) >= n * len(devices)
    finally:
        await store.close()


async def _at_least(store: Store, n: int) -> bool:
    return await count(store) >= n
