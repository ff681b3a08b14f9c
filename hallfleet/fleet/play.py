"""The running part of ``hallfleet fleet`` (kept apart so that building the CLI's parser imports none of it):
the simulator slices (hallfleet/fleet/shards.py, one process each), and without ``--mqtt`` the consumer beside
them on the fleet's clock; one combined progress line every 10 s and one summary at the end."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from broker.config import ConsumerConfig, IngestConfig, RulesConfig, StoreConfig
from broker.consumer import Consumer
from broker.store.db import Store
from broker.store.schema import devices, events, incidents
from hallfleet import demo_hall as hd
from hallfleet import demo_scenario as ds
from hallfleet.fleet import departments as fd
from hallfleet.fleet.scenario import Scenario
from hallfleet.fleet.shards import SliceSpec, slice_main
from hallfleet.fleet.sim import at_day, plan
from hallfleet.sink import Sink
from runtime.clock import HALL_ZONE, ScaledClock
from runtime.settings import MqttConfig

SUMMARY_EVERY_S = 10.0


@dataclass(slots=True)
class Slice:
    """One simulator process, as the coordinator sees it: its pipe and the last figures it sent."""

    proc: BaseProcess
    conn: Connection
    last: dict[str, Any] = field(default_factory=dict)
    connected: bool = False
    done: bool = False
    powered_off: list[str] | None = None  # the keys its last ("power_off", k) stopped


def processes_for(args: argparse.Namespace) -> int:
    """One slice per core unless told (--processes), never more than one per 50 devices."""
    wanted = args.processes or (os.cpu_count() or 1)
    return max(1, min(wanted, args.devices // 50 or 1))


def start_slices(
    args: argparse.Namespace, mqtt: MqttConfig, workdir: Path, clock: ScaledClock, connect_timeout_s: float = 600.0
) -> list[Slice]:
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited loop, broker or store
    count = processes_for(args)
    slices = []
    for i in range(count):
        spec = SliceSpec(
            index=i, count=count, devices=args.devices, scenario=args.scenario, speed=args.speed,
            memory_outbox=args.memory_outbox, mqtt_host=mqtt.host, mqtt_port=mqtt.port, workdir=str(workdir),
            clock_start=clock.start, clock_t0=clock._t0, connect_timeout_s=connect_timeout_s,
        )  # fmt: skip
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=slice_main, args=(child, spec, os.getpid()), name=f"fleet-slice-{i}", daemon=True)
        proc.start()
        child.close()
        slices.append(Slice(proc, parent))
    return slices


def read_slice(s: Slice) -> None:
    """Take what the slice sent (the loop's reader callback on its pipe)."""
    try:
        while s.conn.poll():
            kind, figures = s.conn.recv()
            if kind == "powered_off":
                s.powered_off = list(figures["keys"])
                continue
            s.last = figures
            s.connected |= kind in ("connected", "progress")
            s.done |= kind == "done"
    except (EOFError, OSError):
        s.done = True


async def play(args: argparse.Namespace, scenario: Scenario, mqtt: MqttConfig, workdir: Path, *,
                with_consumer: bool) -> None:  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    today = datetime.now(HALL_ZONE).date()
    clock = ScaledClock(at_day(today, scenario.start), args.speed)
    sink = Sink(workdir / "alerts.log", {})
    await sink.start()
    store: Store | None = None
    consumer_task: asyncio.Task[None] | None = None
    consumer: Consumer | None = None
    slices: list[Slice] = []
    t0 = time.monotonic()
    try:
        if with_consumer:
            cfg = ConsumerConfig(
                instance="fleet",
                mqtt=mqtt,
                store=StoreConfig(url=f"sqlite+aiosqlite:///{workdir / 'hallfleet.db'}"),
                ingest=IngestConfig(),
                sites=ds.load_sites(),
                # The duties are judged every 30 real s (half an hour at --speed 60): the default 300 s is five
                # simulated hours, and a departmental machine left on after 17:45 would not be told within the day.
                rules=RulesConfig(duties_every_s=30),
            )
            store = await Store.open(cfg.store.url, stale_factor=cfg.ingest.stale_factor)
            await register_24_hour(store, args.devices, scenario, clock.now())
            consumer = Consumer(cfg, store, clock)  # presence and SLA clocks in simulated time
            consumer_task = asyncio.create_task(consumer.run(), name="consumer")
            await asyncio.wait_for(consumer.ready.wait(), 30)
        slices = start_slices(args, mqtt, workdir, clock)
        print(f"starting {args.devices} agents in {len(slices)} simulator processes ...", flush=True)
        for s in slices:
            loop.add_reader(s.conn.fileno(), read_slice, s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_progress(slices, clock, store, stop, t0), args.seconds or None)
    finally:
        print("stopping ...", flush=True)
        await stop_slices(slices, loop)
        if consumer is not None and consumer_task is not None:
            await asyncio.sleep(1.0)  # the last statuses reach the store
            consumer.stop()
            await asyncio.gather(consumer_task, return_exceptions=True)
        if store is not None:
            print("\n".join(await summary(slices, clock, store)))
            await store.close()
        else:
            print("\n".join(played(slices, clock)))
        await sink.close()


async def register_24_hour(store: Store, n: int, scenario: Scenario, at: datetime) -> None:
    """The fleet's 24-hour area devices are registered as such, as IT's ``hallfleet provision sync`` would: the
    centre reads a device's 24-hour status from the registry, never from its name."""
    members, _ = plan(n, scenario)
    await hd.register_24_hour(store, [m.device for m in members if m.device is not None], at)


async def _progress(slices: list[Slice], clock: ScaledClock, store: Store | None, stop: asyncio.Event,
                    t0: float) -> None:  # fmt: skip
    announced = False
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SUMMARY_EVERY_S if announced else 1.0)
        if all(s.done for s in slices):
            print("every simulator process has ended", flush=True)
            return
        if not announced and all(s.connected for s in slices):
            announced = True
            connected = sum(s.last.get("connected", 0) for s in slices)
            print(f"{connected} connected in {time.monotonic() - t0:.1f} s; simulated time "
                  f"{clock.now().astimezone(HALL_ZONE):%H:%M}", flush=True)  # fmt: skip
        elif announced:
            lines = await summary(slices, clock, store) if store is not None else played(slices, clock)
            print("\n".join(lines), flush=True)


async def stop_slices(slices: list[Slice], loop: asyncio.AbstractEventLoop) -> None:
    for s in slices:
        with contextlib.suppress(OSError, ValueError):
            s.conn.send("stop")
    deadline = time.monotonic() + 90
    while any(not s.done for s in slices) and time.monotonic() < deadline:  # noqa: ASYNC110 - bounded wait
        await asyncio.sleep(0.2)
    for s in slices:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(s.conn.fileno())
        s.proc.join(5)
        if s.proc.is_alive():
            s.proc.kill()
            s.proc.join(5)


def combined(slices: list[Slice]) -> tuple[int, int, int, Counter[str], Counter[str]]:
    members = sum(s.last.get("members", 0) for s in slices)
    up = sum(s.last.get("up", 0) for s in slices)
    connected = sum(s.last.get("connected", 0) for s in slices)
    counts: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    for s in slices:
        counts.update(s.last.get("counts", {}))
        roles.update(s.last.get("roles", {}))
    return members, up, connected, counts, roles


def played(slices: list[Slice], clock: ScaledClock) -> Iterator[str]:
    members, up, connected, counts, roles = combined(slices)
    mix = ", ".join(f"{r} {n}" for r, n in sorted(roles.items()))
    at = clock.now().astimezone(HALL_ZONE)
    yield (
        f"[模拟时间 simulated {at:%H:%M}] 运行中 agents up {up}/{members}, connected {connected}, "
        f"in {len(slices)} processes ({mix})"
    )
    yield "  played: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    per = [f"{s.last['fds']}/{s.last['threads']}" for s in slices if "fds" in s.last]
    if per:  # what each simulator process holds: one socket per agent, one thread for all their SQLite files
        yield "  file descriptors/threads per process: " + ", ".join(per)


async def summary(slices: list[Slice], clock: ScaledClock, store: Store) -> list[str]:
    """What the fleet played, and what the centre made of it: presence, events by type, open incidents."""
    presence = await store.fetch(sa.select(devices.c.presence, sa.func.count()).group_by(devices.c.presence))
    by_type = await store.fetch(
        sa.select(events.c.type, sa.func.count()).group_by(events.c.type).order_by(events.c.type)
    )
    open_kinds = await store.fetch(
        sa.select(incidents.c.kind, sa.func.count()).where(incidents.c.state != "closed").group_by(incidents.c.kind)
    )
    lines = list(played(slices, clock))
    lines.append("  presence: " + ", ".join(f"{p} {n}" for p, n in presence))
    lines.append("  stored events: " + ", ".join(f"{t} {n}" for t, n in by_type))
    lines.append("  open incidents: " + (", ".join(f"{k} {n}" for k, n in open_kinds) or "none"))
    now = clock.now()
    if (power := await fd.verdicts_line(store, now.astimezone(HALL_ZONE).date(), now)) is not None:
        lines.append(power)
    return lines
