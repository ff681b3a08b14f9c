"""Bad input goes to dead-letter with its reason and its raw bytes, and the consumer keeps consuming."""

from __future__ import annotations

import json

import sqlalchemy as sa

from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import dead_letters, events
from protocol import topics
from protocol.envelope import MAX_EVENT_BYTES
from tests.conftest import RunningConsumer
from tests.support.events import punch
from tests.support.mqtt import publish
from tests.support.procs import wait_for


def envelope(n: int, **over: object) -> dict[str, object]:
    return {**json.loads(punch(n).model_dump_json()), **over}


def raw(d: dict[str, object]) -> bytes:
    return json.dumps(d).encode()


async def test_each_kind_of_bad_input_is_dead_lettered_with_its_reason_and_consuming_goes_on(
    mosquitto: LocalMosquitto, consumer: RunningConsumer
) -> None:
    topic = topics.event("qp", "att-1", "attendance.punch")
    bad = [
        (topic, b"{not json", "malformed"),
        (topic, raw(envelope(1, seq="one")), "malformed"),
        (topics.event("qp", "att-1", "door.opened"), raw(envelope(2, type="door.opened")), "unknown_type"),
        (
            topic,
            raw(envelope(3, data={"staff_id": "S1", "method": "face", "face_template": "AAAA"})),
            "invalid_payload",
        ),
        (
            topic,
            raw(envelope(4, data={"staff_id": "S1", "method": "x" * (MAX_EVENT_BYTES + 1)})),
            "oversized",
        ),
        (topics.event("qp", "att-2", "attendance.punch"), raw(envelope(5)), "topic_mismatch"),
        ("hall/v1/qp/att-1/evt/NotAType", raw(envelope(6)), "bad_topic"),
        (topics.status("qp", "att-1"), b'{"state": "sleepy"}', "malformed"),
    ]
    good = envelope(7)
    publish(mosquitto.port, [(t, p, False) for t, p, _ in bad] + [(topic, raw(good), False)])

    store = consumer.store
    await wait_for(lambda: _has_event(store, str(good["id"])), 15, "the good event")
    await wait_for(lambda: _n_dead(store, len(bad)), 15, "every bad message in dead-letter")
    rows = await store.fetch(sa.select(dead_letters).order_by(dead_letters.c.id))
    assert [(r.topic, r.reason) for r in rows] == [(t, reason) for t, _, reason in bad]
    assert [r.raw for r in rows] == [p for _, p, _ in bad], "the raw bytes are kept as received"
    assert all(r.detail for r in rows), "every dead letter says why"
    assert "face_template" in rows[3].detail
    assert not consumer.task.done(), "the consumer must survive bad input"
    assert await _count(store, events) == 1


async def _has_event(store: Store, event_id: str) -> bool:
    return bool(await store.scalar(sa.select(sa.func.count()).select_from(events).where(events.c.id == event_id)))


async def _n_dead(store: Store, n: int) -> bool:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(dead_letters))) >= n


async def _count(store: Store, table: sa.Table) -> int:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(table)))
