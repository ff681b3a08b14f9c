"""Does the broker hold a manual-ack subscriber to its MQTT 5 Receive Maximum? Prints figures only.

    .venv/bin/python -m bench.receive_maximum [--receive-maximum 50] [--messages 3000]

The consumer relies on it: it acknowledges only after the commit and expects the broker to send no more
than ``receive_maximum`` unacknowledged messages meanwhile (broker/consumer.py ``_commit``). Steps, on a
private LocalMosquitto:

1. A persistent-session subscriber (manual acks, Receive Maximum R) on a shared subscription; a publisher
   sends M QoS 1 messages. Count what arrives before any ack (should be R).
2. Acknowledge exactly those, acknowledge nothing else, wait: count what arrives (should be at most R).
3. Drop the connection without acks, resume the session: count the messages delivered again, to tell
   "the broker over-sent unacknowledged messages" (redelivered) from "they were acknowledged" (lost).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.mosquitto.local import LocalMosquitto
from broker.mosquitto.local import find_mosquitto as _find

TOPIC = "hall/v1/rm-site/rm-dev/evt/attendance.punch"
FILTER = "$share/rm/hall/v1/+/+/evt/#"


class Subscriber:
    def __init__(self, broker: LocalMosquitto, receive_maximum: int, clean_start: bool) -> None:
        self.lock = threading.Lock()
        self.got: list[tuple[int, int]] = []  # (mid, message number)
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-rm", protocol=mqtt.MQTTv5, manual_ack=True
        )
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        props.ReceiveMaximum = receive_maximum
        self.client.connect(broker.host, broker.port, clean_start=clean_start, properties=props)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got.append((msg.mid, int(msg.payload)))

    def take(self) -> list[tuple[int, int]]:
        with self.lock:
            got, self.got = self.got, []
        return got

    def ack(self, got: list[tuple[int, int]]) -> None:
        for mid, _ in got:
            self.client.ack(mid, 1)


def publish(broker: LocalMosquitto, count: int) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-rm-pub", protocol=mqtt.MQTTv5)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        infos = [c.publish(TOPIC, str(i).encode(), qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.disconnect()
        c.loop_stop()


def run(receive_maximum: int, messages: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="hallfleet-rm-"))
    broker = LocalMosquitto(workdir)
    broker.start()
    try:
        sub = Subscriber(broker, receive_maximum, clean_start=True)
        sub.client.subscribe(FILTER, qos=1)
        time.sleep(0.5)
        publish(broker, messages)
        time.sleep(1.0)
        first = sub.take()
        sub.ack(first)
        time.sleep(1.0)
        after = sub.take()
        print(f"Receive Maximum {receive_maximum}, {messages} messages published")
        print(f"  1. before any ack: {len(first)} unacknowledged messages received")
        print(f"  2. after acking those {len(first)}, with no further ack: {len(after)} more received")
        sub.client.loop_stop()
        sock = sub.client.socket()
        if sock is not None:
            sock.close()  # a crash: no DISCONNECT, no acks
        time.sleep(1.0)
        acked = {n for _, n in first}
        again = Subscriber(broker, receive_maximum, clean_start=False)
        seen: set[int] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(seen | acked) < messages:
            got = again.take()
            seen.update(n for _, n in got)
            again.ack(got)
            time.sleep(0.05)
        print(
            f"  3. after a crash and resuming the session: {len(seen & {n for _, n in after}):,} of the "
            f"{len(after):,} over-sent messages delivered again; "
            f"{messages - len(seen | acked)} never delivered"
        )
        again.client.disconnect()
        again.client.loop_stop()
    finally:
        broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.receive_maximum", description=__doc__.split("\n\n")[0])
    p.add_argument("--receive-maximum", type=int, default=50)
    p.add_argument("--messages", type=int, default=3000)
    a = p.parse_args(argv)
    if not 1 <= a.receive_maximum <= 65535 or not a.receive_maximum < a.messages <= 100_000:
        p.error("--receive-maximum within 1 .. 65535 and below --messages (at most 100,000)")
    print(f"broker: {_find()}")
    try:
        run(a.receive_maximum, a.messages)
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
