"""A consumer coming back to a backlog takes it in bounded bites: Mosquitto 2.0 does not hold it to its
Receive Maximum, so the consumer stops reading until what it holds is committed and acknowledged."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import sqlalchemy as sa

from broker.config import ConsumerConfig, IngestConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import events
from protocol import topics
from runtime.settings import MqttConfig
from tests.support.events import punch
from tests.support.mqtt import publish
from tests.support.procs import wait_for

N = 3000
RECEIVE_MAXIMUM = 50


async def test_a_backlog_is_taken_in_bites_no_larger_than_the_receive_maximum(
    mosquitto: LocalMosquitto, sqlite_url: str, tmp_path: Path
) -> None:
    store = await Store.open(sqlite_url)
    cfg = ConsumerConfig(
        instance="bp",
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
        store=StoreConfig(url=sqlite_url),
        ingest=IngestConfig(receive_maximum=RECEIVE_MAXIMUM, batch_size=500),
    )

    async def run_once(until: asyncio.Event | None) -> Consumer:
        consumer = Consumer(cfg, store)
        task = asyncio.create_task(consumer.run())
        await asyncio.wait_for(consumer.ready.wait(), 10)
        if until is not None:
            await until.wait()
        consumer.stop()
        await asyncio.wait_for(task, 20)
        return consumer

    try:
        await run_once(None)  # leaves a persistent session: the broker queues for it while it is away
        topic = topics.event("qp", "att-1", "attendance.punch")
        await asyncio.to_thread(
            publish, mosquitto.port, [(topic, punch(i).model_dump_json().encode(), False) for i in range(N)]
        )
        done = asyncio.Event()

        async def all_stored() -> bool:
            n = int(await store.scalar(sa.select(sa.func.count()).select_from(events)))
            if n >= N:
                done.set()
            return n >= N

        back = asyncio.create_task(run_once(done))
        await wait_for(all_stored, 20, "the backlog to be stored")
        consumer = await back
        assert consumer.counters.stored == N
        assert 0 < consumer.counters.largest_batch <= RECEIVE_MAXIMUM
        seqs = [r[0] for r in await store.fetch(sa.select(events.c.seq).order_by(events.c.seq))]
        assert seqs == list(range(N))
        assert json.loads((await store.fetch(sa.select(events.c.data).limit(1)))[0][0])["method"] == "face"
    finally:
        await store.close()
