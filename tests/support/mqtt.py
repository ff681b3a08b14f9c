"""A plain paho client for tests that play the part of a device or the broker's Will."""

from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def publish(port: int, items: list[tuple[str, bytes, bool]], client_id: str = "test-publisher") -> None:
    """Publish (topic, payload, retain) at QoS 1 and wait for every PUBACK."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        infos = [c.publish(topic, payload, qos=1, retain=retain) for topic, payload, retain in items]
        for info in infos:
            info.wait_for_publish(timeout=10)
            assert info.is_published(), "broker did not PUBACK"
    finally:
        c.disconnect()
        c.loop_stop()
