"""Poison that stays: a retained status the consumer refuses is replayed to every consumer that subscribes.

A new consumer must still start and ingest: the poison is dead-lettered (once per subscription, as the
broker replays it) and acknowledged, and every other device's traffic is stored.
"""

from __future__ import annotations

import asyncio
import json

import sqlalchemy as sa

from broker.config import ConsumerConfig, IngestConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import dead_letters, devices, events
from protocol import topics
from protocol.bounds import INT64_MAX
from runtime.settings import MqttConfig
from tests.support.events import punch
from tests.support.mqtt import publish
from tests.support.procs import wait_for

GOOD_STATUS = {"state": "online", "session": 1, "boot_id": "b1", "ts": "2026-05-01T08:00:00+08:00", "heartbeat_s": 30}
POISONS = {
    "session past 64 bits": {**GOOD_STATUS, "session": INT64_MAX + 1},
    "NaN heartbeat": json.dumps({**GOOD_STATUS, "heartbeat_s": 1}).replace('"heartbeat_s": 1', '"heartbeat_s": NaN'),
    "NUL in the role": {**GOOD_STATUS, "role": "kiosk\u0000"},
}


async def test_a_retained_poison_status_does_not_stop_a_new_consumer(mosquitto: LocalMosquitto, store_url: str) -> None:
    retained = [
        (topics.status("qp", f"bad-{n}"), (p if isinstance(p, str) else json.dumps(p)).encode(), True)
        for n, p in enumerate(POISONS.values())
    ]
    retained.append((topics.status("qp", "att-1"), json.dumps(GOOD_STATUS).encode(), True))
    publish(mosquitto.port, retained)
    store = await Store.open(store_url)
    cfg = ConsumerConfig(
        instance="poison",
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port, backoff_initial_s=0.1, backoff_max_s=1.0),
        store=StoreConfig(url=store_url),
        ingest=IngestConfig(sweep_s=0.1),
    )
    consumer = Consumer(cfg, store)
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 15)
        publish(
            mosquitto.port,
            [(topics.event("qp", "att-1", "attendance.punch"), punch(1).model_dump_json().encode(), False)],
        )

        await wait_for(lambda: _count(store, events), 20, "the punch stored behind the retained poison")
        await wait_for(lambda: _count(store, dead_letters, len(POISONS)), 20, "every poison dead-lettered")
        reasons = {r.topic: r.reason for r in await store.fetch(sa.select(dead_letters))}
        assert reasons == {t: "malformed" for t, _, _ in retained[:-1]}
        assert await store.scalar(sa.select(devices.c.presence).where(devices.c.key == "qp/att-1")) == "online"
        assert consumer.uncommitted == 0, "the poison was acknowledged, not held"
        assert not task.done()
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 15)
        await store.close()


async def _count(store: Store, table: sa.Table, at_least: int = 1) -> bool:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(table))) >= at_least
