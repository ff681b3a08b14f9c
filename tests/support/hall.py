"""A hall for SLA tests: an in-process consumer on a manual clock, devices played over the real broker,
and a webhook receiver standing for each role's phone."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from broker.config import ConsumerConfig, IngestConfig, RulesConfig, StoreConfig
from broker.consumer import Consumer
from broker.sites import SiteConfig
from broker.store.db import Store
from broker.store.schema import incidents, notifications
from protocol import topics
from protocol.envelope import Envelope, Presence, StatusMessage
from protocol.ids import uuid7
from runtime.settings import MqttConfig
from tests.support.mqtt import publish


@dataclass
class ManualClock:
    """Hall time moves only when the test says so (monotonic time stays real: loops and timeouts)."""

    t: datetime

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return time.monotonic()

    def advance(self, **delta: float) -> None:
        self.t += timedelta(**delta)


@dataclass
class Device:
    """Plays one agent: birth, events and heartbeats, as the real agent publishes them."""

    port: int
    site: str
    device: str
    clock: ManualClock
    role: str = "kiosk"
    session: int = 1
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    boot_id: str = "b1"  # the kernel's: a new one is a power-on (broker/duties/power.py)

    def birth(self, heartbeat_s: float = 3600) -> None:
        status = StatusMessage(
            state=Presence.ONLINE,
            session=self.session,
            boot_id=self.boot_id,
            ts=self.clock.now(),
            heartbeat_s=heartbeat_s,
            role=self.role,
        )
        self._send(topics.status(self.site, self.device), status.model_dump_json().encode(), retain=True)

    def reconnect(self, heartbeat_s: float = 3600) -> None:
        """A new connection is a new session (the agent counts them): its birth outranks the old Will."""
        self.session += 1
        self.birth(heartbeat_s)

    def will(self) -> None:
        """What the broker publishes when the device's link dies."""
        status = StatusMessage(
            state=Presence.OFFLINE, session=self.session, boot_id=self.boot_id, ts=self.clock.now(), heartbeat_s=60
        )
        self._send(topics.status(self.site, self.device), status.model_dump_json().encode(), retain=True)

    def goodbye(self) -> None:
        """The agent's clean stop: ``shutdown`` on its status, so no Will follows."""
        status = StatusMessage(
            state=Presence.SHUTDOWN, session=self.session, boot_id=self.boot_id, ts=self.clock.now(), heartbeat_s=60
        )
        self._send(topics.status(self.site, self.device), status.model_dump_json().encode(), retain=True)

    def event(self, event_type: str, data: dict[str, Any]) -> None:
        env = Envelope(
            v=1,
            id=uuid7(),
            site=self.site,
            device=self.device,
            type=event_type,
            seq=next(self.seq),
            boot_id=self.boot_id,
            ts=self.clock.now(),
            clock_synced=True,
            data=data,
        )
        topic = (
            topics.health(self.site, self.device)
            if event_type == "device.health"
            else topics.event(self.site, self.device, event_type)
        )
        self._send(topic, env.model_dump_json().encode())

    def state(self, state: str, *functions: str) -> None:
        self.event("kiosk.state", {"state": state, "functions_affected": list(functions)})

    def heartbeat(self) -> None:
        self.event(
            "device.health",
            {"uptime_s": 100, "outbox_depth": 0, "outbox_dropped": 0, "clock_synced": True, "interval_s": 60},
        )

    def _send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        publish(self.port, [(topic, payload, retain)], client_id=f"dev-{self.site}-{self.device}")


def consumer_config(
    port: int, store_url: str, sites: dict[str, SiteConfig], alerts: dict[str, Any], instance: str = "sla"
) -> ConsumerConfig:
    return ConsumerConfig.model_validate(
        {
            "instance": instance,
            "mqtt": MqttConfig(host="127.0.0.1", port=port, backoff_initial_s=0.1, backoff_max_s=1.0),
            "store": StoreConfig(url=store_url),
            "ingest": IngestConfig(sweep_s=0.1, republish_s=1.0),
            "sites": sites,
            "alerts": alerts,
            "rules": RulesConfig(tick_s=0.05, plan_every_s=0.2, duties_every_s=0.2),
        }
    )


@dataclass
class Hall:
    consumer: Consumer
    store: Store
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.consumer.stop()
        await asyncio.wait_for(self.task, 15)
        await self.store.close()

    async def incidents(self, **where: Any) -> list[Any]:
        q = sa.select(incidents).order_by(incidents.c.detected_at)
        for k, v in where.items():
            q = q.where(incidents.c[k] == v)
        return await self.store.fetch(q)

    async def notifications(self, **where: Any) -> list[Any]:
        q = sa.select(notifications).order_by(notifications.c.id)
        for k, v in where.items():
            q = q.where(notifications.c[k] == v)
        return await self.store.fetch(q)

    async def settle(self, ticks: int = 6) -> None:
        """Let the consumer commit what it received and the SLA clock tick a few times."""
        await asyncio.sleep(ticks * 0.05 + 0.3)


async def start_hall(cfg: ConsumerConfig, clock: ManualClock) -> Hall:
    store = await Store.open(cfg.store.url)
    consumer = Consumer(cfg, store, clock)
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(consumer.ready.wait(), 10)
    return Hall(consumer, store, task)


async def wait_until(check: Any, within_s: float = 10.0, what: str = "condition") -> Any:
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + within_s
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last value {value!r}")
        await asyncio.sleep(0.05)


def posted(requests: list[Any]) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in requests]
