"""Pin the behaviour of the service fixtures against the real Mosquitto and PostgreSQL processes.

Broker-restart tests elsewhere rely on exactly these properties (same port after restart,
retained messages and persistent sessions surviving a clean stop, and a crash after an autosave).
"""

from __future__ import annotations

import queue
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.mosquitto.local import LocalMosquitto
from tests.support.postgres import LocalPostgres

TIMEOUT_S = 5.0
RETAINED_TOPIC = "hall/v1/site1/dev1/state"


@dataclass
class Session:
    """A connected paho MQTT v5 client and what it has received."""

    client: mqtt.Client
    session_present: bool
    messages: queue.Queue[mqtt.MQTTMessage] = field(default_factory=queue.Queue)
    subacks: queue.Queue[int] = field(default_factory=queue.Queue)

    def next_message(self) -> mqtt.MQTTMessage:
        return self.messages.get(timeout=TIMEOUT_S)


@contextmanager
def mqtt_session(broker: LocalMosquitto, client_id: str, *, persistent: bool = False) -> Iterator[Session]:
    """Connect with MQTT v5; persistent = clean_start False plus a session expiry, as the consumer does."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    inbox: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    subacks: queue.Queue[int] = queue.Queue()
    connacks: queue.Queue[tuple[bool, mqtt.ReasonCode]] = queue.Queue()
    client.on_message = lambda _c, _u, msg: inbox.put(msg)
    client.on_subscribe = lambda _c, _u, mid, _rcs, _p: subacks.put(mid)
    client.on_connect = lambda _c, _u, flags, rc, _p: connacks.put((flags.session_present, rc))
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600 if persistent else 0
    client.connect(broker.host, broker.port, clean_start=not persistent, properties=props)
    client.loop_start()
    try:
        session_present, reason = connacks.get(timeout=TIMEOUT_S)
        assert not reason.is_failure, reason
        yield Session(client, session_present, inbox, subacks)
    finally:
        client.disconnect()
        client.loop_stop()


def publish(session: Session, topic: str, payload: bytes, *, retain: bool = False) -> None:
    info = session.client.publish(topic, payload, qos=1, retain=retain)
    info.wait_for_publish(TIMEOUT_S)
    assert info.is_published()


def subscribe(session: Session, topic: str) -> None:
    """Subscribe at QoS 1 and wait for the SUBACK, so the broker surely holds the subscription."""
    result, mid = session.client.subscribe(topic, qos=1)
    assert result == mqtt.MQTT_ERR_SUCCESS
    assert session.subacks.get(timeout=TIMEOUT_S) == mid


def read_retained(broker: LocalMosquitto, topic: str) -> bytes:
    with mqtt_session(broker, "reader") as reader:
        subscribe(reader, topic)
        msg = reader.next_message()
    assert msg.retain
    return bytes(msg.payload)


def publish_retained(broker: LocalMosquitto, payload: bytes) -> None:
    with mqtt_session(broker, "writer") as writer:
        publish(writer, RETAINED_TOPIC, payload, retain=True)


def refuses_connections(broker: LocalMosquitto) -> bool:
    try:
        with socket.create_connection((broker.host, broker.port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def wait_for_autosave_after(broker: LocalMosquitto, moment: float) -> None:
    """Wait until the periodic snapshot was written after `moment` (it then holds what came before)."""
    db = broker.persistence_dir / "mosquitto.db"
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        if db.exists() and db.stat().st_mtime > moment:
            return
        time.sleep(0.05)
    raise AssertionError(f"{db} not saved within {TIMEOUT_S} s")


def test_broker_listens_on_loopback_and_serves_retained(mosquitto: LocalMosquitto) -> None:
    assert mosquitto.is_running
    assert mosquitto.host == "127.0.0.1"
    publish_retained(mosquitto, b"online")
    assert read_retained(mosquitto, RETAINED_TOPIC) == b"online"
    assert mosquitto.log_path.is_file()


def test_config_raises_the_stock_queue_limits(mosquitto: LocalMosquitto) -> None:
    conf = mosquitto.conf_path.read_text()
    for line in ("max_queued_messages 1000000", "max_queued_bytes 0", "max_inflight_messages 1000"):
        assert line in conf.splitlines()


def test_kill_closes_the_port(mosquitto: LocalMosquitto) -> None:
    mosquitto.kill()
    assert not mosquitto.is_running
    assert refuses_connections(mosquitto)


def test_stop_and_restart_keep_port_and_retained(mosquitto: LocalMosquitto) -> None:
    port = mosquitto.port
    publish_retained(mosquitto, b"before-restart")
    mosquitto.stop()
    assert refuses_connections(mosquitto)
    mosquitto.restart()
    assert mosquitto.is_running
    assert mosquitto.port == port
    assert read_retained(mosquitto, RETAINED_TOPIC) == b"before-restart"


def test_kill_and_restart_keep_what_was_autosaved(mosquitto: LocalMosquitto) -> None:
    publish_retained(mosquitto, b"saved")
    wait_for_autosave_after(mosquitto, time.time())
    mosquitto.kill()
    mosquitto.restart()
    assert read_retained(mosquitto, RETAINED_TOPIC) == b"saved"


def test_persistent_session_queue_survives_restart(mosquitto: LocalMosquitto) -> None:
    topic = "hall/v1/site1/dev1/evt"
    with mqtt_session(mosquitto, "consumer", persistent=True) as consumer:
        subscribe(consumer, topic)
    with mqtt_session(mosquitto, "agent") as agent:
        publish(agent, topic, b"queued-while-offline")
    mosquitto.stop()
    mosquitto.restart()
    with mqtt_session(mosquitto, "consumer", persistent=True) as consumer:
        assert consumer.session_present
        assert consumer.next_message().payload == b"queued-while-offline"


def test_context_manager_stops_the_broker(tmp_path_factory: pytest.TempPathFactory) -> None:
    with LocalMosquitto(tmp_path_factory.mktemp("cm")) as broker:
        assert broker.is_running
    assert not broker.is_running
    assert refuses_connections(broker)


@pytest.mark.postgres
async def test_create_database_gives_a_usable_database(postgres_server: LocalPostgres) -> None:
    name = f"services_probe_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{postgres_server.port}/{name}"
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == name
    finally:
        await conn.close()


def test_sqlite_url_points_into_tmp_path(sqlite_url: str, tmp_path: Path) -> None:
    assert sqlite_url == f"sqlite+aiosqlite:///{tmp_path}/store.db"


def test_store_url_covers_both_backends(store_url: str) -> None:
    assert store_url.startswith(("sqlite+aiosqlite:///", "postgresql+asyncpg://"))
