"""The running part of ``hallfleet fleet`` (kept apart so that building the CLI's parser imports none of it):
the fleet, and without ``--mqtt`` the consumer beside it on the fleet's clock, with a summary every 10 s."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from broker.config import ConsumerConfig, IngestConfig, StoreConfig
from broker.consumer import Consumer
from broker.store.db import Store
from broker.store.schema import devices, events, incidents
from hallfleet import demo_scenario as ds
from hallfleet.demo import Sink
from hallfleet.fleet.scenario import Scenario
from hallfleet.fleet.sim import Fleet
from protocol.settings import MqttConfig

SUMMARY_EVERY_S = 10.0


async def play(args: argparse.Namespace, scenario: Scenario, mqtt: MqttConfig, workdir: Path, *,
                with_consumer: bool) -> None:  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    health: dict[str, bool] = {}
    sink = Sink(workdir / "alerts.log", health)
    await sink.start()
    fleet = Fleet(
        scenario, args.devices, mqtt, workdir, speed=args.speed, memory_outbox=args.memory_outbox,
        health_base=sink.base, health=health,
    )  # fmt: skip
    store: Store | None = None
    consumer_task: asyncio.Task[None] | None = None
    consumer: Consumer | None = None
    try:
        if with_consumer:
            cfg = ConsumerConfig(
                instance="fleet",
                mqtt=mqtt,
                store=StoreConfig(url=f"sqlite+aiosqlite:///{workdir / 'hallfleet.db'}"),
                ingest=IngestConfig(),
                sites=ds.load_sites(),
            )
            store = await Store.open(cfg.store.url, stale_factor=cfg.ingest.stale_factor)
            consumer = Consumer(cfg, store, fleet.clock)  # presence and SLA clocks in simulated time
            consumer_task = asyncio.create_task(consumer.run(), name="consumer")
            await asyncio.wait_for(consumer.ready.wait(), 30)
        roles = sorted({m.role for m in fleet.members})
        print(f"starting {len(fleet.members)} agents ({', '.join(roles)}) ...")
        await fleet.start()
        print(f"all {len(fleet.members)} connected in {fleet.connect_s:.1f} s; simulated time {fleet.now():%H:%M}")
        fleet.play()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_summaries(fleet, store, stop), args.seconds or None)
    finally:
        print("stopping ...")
        await fleet.stop()
        if consumer is not None and consumer_task is not None:
            await asyncio.sleep(1.0)  # the last statuses reach the store
            consumer.stop()
            await asyncio.gather(consumer_task, return_exceptions=True)
        if store is not None:
            print("\n".join(await summary(fleet, store)))
            await store.close()
        else:
            print("\n".join(_played(fleet)))
        await sink.close()


async def _summaries(fleet: Fleet, store: Store | None, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SUMMARY_EVERY_S)
        lines = await summary(fleet, store) if store is not None else _played(fleet)
        print("\n".join(lines), flush=True)


def _played(fleet: Fleet) -> Iterator[str]:
    up = sum(1 for m in fleet.members if m.up)
    yield f"[模拟时间 simulated {fleet.now():%H:%M}] 运行中 agents up {up}/{len(fleet.members)}"
    yield "  played: " + ", ".join(f"{k} {v}" for k, v in sorted(fleet.counts.items()))


async def summary(fleet: Fleet, store: Store) -> list[str]:
    """What the fleet played, and what the centre made of it: presence, events by type, open incidents."""
    presence = await store.fetch(sa.select(devices.c.presence, sa.func.count()).group_by(devices.c.presence))
    by_type = await store.fetch(
        sa.select(events.c.type, sa.func.count()).group_by(events.c.type).order_by(events.c.type)
    )
    open_kinds = await store.fetch(
        sa.select(incidents.c.kind, sa.func.count()).where(incidents.c.state != "closed").group_by(incidents.c.kind)
    )
    lines = list(_played(fleet))
    lines.append("  presence: " + ", ".join(f"{p} {n}" for p, n in presence))
    lines.append("  stored events: " + ", ".join(f"{t} {n}" for t, n in by_type))
    lines.append("  open incidents: " + (", ".join(f"{k} {n}" for k, n in open_kinds) or "none"))
    return lines
