"""``hallfleet fleet``: run N simulated devices against a broker, playing a scenario.

With ``--mqtt host:port`` the agents connect there and nothing else runs here (point a consumer at the same
broker). Without it, a private Mosquitto and an in-process consumer on SQLite (with the demo halls' site
configs, so incidents and rules run) start in ``--dir`` and a summary is printed every 10 s and at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import resource
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

from broker.config import ConsumerConfig, IngestConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from broker.store.schema import devices, events, incidents
from hallfleet import demo_scenario as ds
from hallfleet.demo import Sink
from hallfleet.fleet.scenario import Scenario, builtin, load_scenario
from hallfleet.fleet.sim import Fleet
from protocol.settings import ConfigError, MqttConfig

SUMMARY_EVERY_S = 10.0
# 10,000 clients: Mosquitto's own cap off (it is -1 already in 2.x, said here so an older default does not bite).
MOSQUITTO_EXTRA = "max_connections -1\nautosave_interval 60\n"


def raise_nofile() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit: every agent holds a socket (and its SQLite outbox three files);
    the broker started from here inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def parse_mqtt(value: str) -> MqttConfig:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--mqtt {value!r}: expected host:port")
    return MqttConfig(host=host, port=int(port), keepalive_s=30)


def run_fleet(args: argparse.Namespace) -> int:
    scenario = load_scenario(builtin(args.scenario))
    if args.devices < 1:
        raise ConfigError("--devices must be at least 1")
    if args.speed <= 0:
        raise ConfigError("--speed must be above 0")
    soft, _ = raise_nofile()
    need = args.devices * (1 if args.memory_outbox else 4) + 100
    if need > soft:
        hint = "" if args.memory_outbox else " (--memory-outbox needs one per device, not four)"
        print(f"warning: {args.devices} devices need about {need} file descriptors, the limit is {soft}{hint}")
    logging.getLogger().setLevel(logging.WARNING)
    with contextlib.ExitStack() as stack:
        workdir = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hallfleet-fleet-")))
        workdir.mkdir(parents=True, exist_ok=True)
        if args.mqtt:
            mqtt, broker = parse_mqtt(args.mqtt), None
        else:
            broker = stack.enter_context(LocalMosquitto(workdir / "mosquitto", extra_conf=MOSQUITTO_EXTRA))
            mqtt = MqttConfig(host=broker.host, port=broker.port, keepalive_s=30)
        print(f"MQTT {mqtt.host}:{mqtt.port}; files in {workdir}; scenario {scenario.name}, speed x{args.speed:g}")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_main(args, scenario, mqtt, workdir, with_consumer=broker is not None))
    return 0


async def _main(args: argparse.Namespace, scenario: Scenario, mqtt: MqttConfig, workdir: Path, *,
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--devices", type=int, default=200, help="simulated devices, all halls together")
    p.add_argument("--scenario", default="workday", help="scenario TOML (a path, or workday | heartbeats)")
    p.add_argument("--speed", type=float, default=60.0, help="simulated seconds per real second")
    p.add_argument("--mqtt", default="", help="host:port of a broker (default: a private one and a consumer)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: until Ctrl-C)")
    p.add_argument("--dir", type=Path, default=None, help="keep outboxes, logs and the store here")
    p.add_argument("--memory-outbox", action="store_true", help="in-memory SQLite outboxes (scale, not durability)")
