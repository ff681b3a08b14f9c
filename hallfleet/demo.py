"""``hallfleet demo``: a private Mosquitto on a free loopback port, the consumer on SQLite, and a few
simulated devices sending heartbeats and sample events; shows what arrives. Ctrl-C stops everything
and leaves no process behind (the broker also dies with us: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import tempfile
from pathlib import Path

import sqlalchemy as sa

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig, SimConfig
from broker.config import ConsumerConfig, IngestConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import dead_letters, devices, events
from protocol.settings import MqttConfig

DEVICES = [
    ("qingpu", "att-entrance-1", "attendance.punch"),
    ("qingpu", "kiosk-24h-1", "kiosk.usage"),
    ("qingpu", "pad-w01", "rating.submitted"),
    ("wanzhou", "att-entrance-1", "attendance.punch"),
    ("wanzhou", "kiosk-24h-1", "kiosk.usage"),
    ("wanzhou", "pad-w01", "rating.submitted"),
]
PRESENCE_ZH = {
    "online": "在线",
    "offline": "离线",
    "stale": "无心跳",
    "shutdown": "已关机",
    "unknown": "未知",
}


def run_demo(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        workdir = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hallfleet-demo-")))
        workdir.mkdir(parents=True, exist_ok=True)
        logging.getLogger().setLevel(logging.WARNING)
        broker = stack.enter_context(LocalMosquitto(workdir / "mosquitto"))
        print(f"Mosquitto on {broker.host}:{broker.port}; files in {workdir}")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_demo(args, workdir, broker))
    print("demo stopped: broker, consumer and devices are down.")
    return 0


async def _demo(args: argparse.Namespace, workdir: Path, broker: LocalMosquitto) -> None:
    mqtt = MqttConfig(host=broker.host, port=broker.port, keepalive_s=10)
    store = await Store.open(f"sqlite+aiosqlite:///{workdir / 'hallfleet.db'}")
    consumer = Consumer(
        ConsumerConfig(instance="demo", mqtt=mqtt, store=StoreConfig(url="unused"), ingest=IngestConfig()),
        store,
    )
    agents = [
        Agent(
            AgentConfig(
                site=site,
                device=f"{device}" if i < len(DEVICES) else f"{device}-{i}",
                role="sim",
                heartbeat_s=5,
                mqtt=mqtt,
                outbox=OutboxConfig(path=workdir / "agents" / f"{site}-{device}-{i}.db"),
                sim=SimConfig(rate_per_s=args.rate, event_type=etype),
                clock_sync_file=Path("/"),  # the demo's clock is the host's, taken as synchronised
            )
        )
        for i, (site, device, etype) in ((i, DEVICES[i % len(DEVICES)]) for i in range(args.devices))
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    consumer_task = asyncio.create_task(consumer.run())
    agent_tasks = [asyncio.create_task(a.run()) for a in agents]
    try:
        if args.seconds:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_show(store, stop), args.seconds)
        else:
            await _show(store, stop)
    finally:
        print("stopping ...")
        for a in agents:
            a.stop()
        await asyncio.gather(*agent_tasks, return_exceptions=True)
        consumer.stop()
        await asyncio.gather(consumer_task, return_exceptions=True)
        await _print_summary(store)
        await store.close()


async def _show(store: Store, stop: asyncio.Event) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 2.0)
        await _print_summary(store)


async def _print_summary(store: Store) -> None:
    by_type = await store.fetch(sa.select(events.c.type, sa.func.count()).group_by(events.c.type))
    dead = await store.scalar(sa.select(sa.func.count()).select_from(dead_letters))
    pres = await store.fetch(sa.select(devices.c.key, devices.c.presence).order_by(devices.c.key))
    counts = ", ".join(f"{r[0]} {r[1]}" for r in by_type) or "nothing yet"
    print(f"\n已入库 stored: {counts}; 死信 dead letters: {dead}")
    for r in pres:
        print(f"  {r.key:32} {PRESENCE_ZH.get(r.presence, r.presence)} ({r.presence})")
