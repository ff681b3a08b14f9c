"""The consumer sees what the broker drops: Mosquitto's queue limits drop QoS 1 messages silently,
and only its $SYS counter tells."""

from __future__ import annotations

import asyncio
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.config import ConsumerConfig, IngestConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from runtime.settings import MqttConfig
from tests.support.mqtt import publish
from tests.support.procs import wait_for


def park_a_persistent_subscriber(port: int) -> None:
    """A client with a persistent session that subscribes and goes away: the broker queues for it."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="parked", protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    c.subscribe("parked/#", qos=1)
    asyncio.run(asyncio.sleep(0.3))
    c.disconnect()
    c.loop_stop()


async def test_consumer_reports_messages_the_broker_dropped(tmp_path: Path, sqlite_url: str) -> None:
    broker = LocalMosquitto(tmp_path / "mq", extra_conf="max_queued_messages 5\nsys_interval 1\n")
    broker.start()
    store = await Store.open(sqlite_url)
    consumer = Consumer(
        ConsumerConfig(
            instance="drops",
            mqtt=MqttConfig(host=broker.host, port=broker.port),
            store=StoreConfig(url=sqlite_url),
            ingest=IngestConfig(),
        ),
        store,
    )
    task = asyncio.create_task(consumer.run())
    try:
        await asyncio.wait_for(consumer.ready.wait(), 10)
        await asyncio.to_thread(park_a_persistent_subscriber, broker.port)
        await asyncio.to_thread(publish, broker.port, [(f"parked/{i}", b"x", False) for i in range(30)])
        await wait_for(lambda: consumer.counters.broker_dropped >= 25, 15, "the $SYS drop counter")
        assert consumer.counters.dead == 0, "the broker's counter is not a dead letter"
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)
        await store.close()
        broker.stop()
