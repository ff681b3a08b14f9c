"""Several simulator processes, one fleet: each runs a slice of the devices on its own event loop.

One process saturates at about 3,400 connected agents (issue 20: its loop at 125 % of a core), so 10,000
need several, one per core by default. The coordinator (``hallfleet fleet``, hallfleet/fleet/play.py) keeps
the broker, the consumer and the alert sink, starts the slices and prints one progress line and one summary
for all of them. A slice plays the people and faults of its own devices (hallfleet/fleet/sim.py ``shard``)
on the coordinator's clock (the same ScaledClock origin: CLOCK_MONOTONIC is one clock for the machine), and
serves its kiosks' application health itself (the faults that fail it happen in the slice).

Pipe protocol, slice -> coordinator: ("connected", figures) once all its agents are up (or its budget ran
out), then ("progress", figures) every PROGRESS_S, and ("done", figures) after a clean stop. Coordinator ->
slice: "stop"; ("power_off", k): every k-th of its connected agents loses power (no goodbye, no DISCONNECT:
the broker publishes their Wills), answered by ("powered_off", {"keys": [...]}), what a bench checks presence
against. A slice whose coordinator is gone (the pipe closes) stops as well; one whose coordinator was killed
while the slice could not stop cleanly (a loop stuck in thousands of connects) is ended by the kernel
(``die_with_parent``), so no simulator outlives its run and loads the machine a bench measures next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

PROGRESS_S = 2.0


@dataclass(frozen=True, slots=True)
class SliceSpec:
    index: int
    count: int
    devices: int  # the whole fleet's; the slice runs every count-th from index
    scenario: str  # a builtin name or a path
    speed: float
    memory_outbox: bool
    mqtt_host: str
    mqtt_port: int
    workdir: str
    clock_start: datetime
    clock_t0: float  # time.monotonic() of the coordinator's clock origin
    connect_timeout_s: float = 600.0


def own_resources() -> dict[str, int]:
    """This process's open file descriptors and OS threads (one agent used to cost a thread: its outbox's)."""
    try:
        return {"fds": len(os.listdir("/proc/self/fd")), "threads": len(os.listdir("/proc/self/task"))}
    except OSError:  # no /proc: not Linux
        return {}


def figures(fleet: Any) -> dict[str, Any]:
    up = [m for m in fleet.members if m.up]
    connected = sum(1 for m in up if m.agent is not None and m.agent.link.is_up())
    return {
        "members": len(fleet.members),
        "up": len(up),
        "connected": connected,
        "connect_s": fleet.connect_s,
        "roles": dict(Counter(m.role for m in fleet.members)),
        "counts": dict(fleet.counts),
        "cpu_s": time.process_time(),
        "pid": os.getpid(),
        **own_resources(),
    }


def die_with_parent(parent: int) -> None:
    """Ask Linux to SIGTERM this process when the process that started it dies (PR_SET_PDEATHSIG), and leave
    at once if that already happened before the request (the parent is no longer ``parent``)."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return  # elsewhere the closed pipe is the only word (see the module docstring)
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def slice_main(conn: Connection, spec: SliceSpec, parent: int | None = None) -> None:
    """The child process: run the slice until told to stop (or the coordinator is gone)."""
    import logging

    from hallfleet.fleet.run import raise_nofile

    if parent is not None:
        die_with_parent(parent)
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s slice {spec.index} %(levelname)s %(message)s")
    raise_nofile()
    try:
        import uvloop

        uvloop.run(_slice(conn, spec))
    except ImportError:
        asyncio.run(_slice(conn, spec))


async def _slice(conn: Connection, spec: SliceSpec) -> None:
    from hallfleet.fleet.scenario import builtin, load_scenario
    from hallfleet.fleet.sim import Fleet
    from hallfleet.sink import Sink
    from runtime.clock import ScaledClock
    from runtime.settings import MqttConfig

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    orders: asyncio.Queue[Any] = asyncio.Queue()
    loop.add_reader(conn.fileno(), _on_pipe, conn, stop, orders)
    health: dict[str, bool] = {}
    sink = Sink(Path(spec.workdir) / f"slice-{spec.index}-alerts.log", health)
    await sink.start()
    fleet = Fleet(
        load_scenario(builtin(spec.scenario)),
        spec.devices,
        MqttConfig(host=spec.mqtt_host, port=spec.mqtt_port, keepalive_s=30),
        Path(spec.workdir),
        speed=spec.speed,
        memory_outbox=spec.memory_outbox,
        health_base=sink.base,
        health=health,
        shard=(spec.index, spec.count),
        clock=ScaledClock(spec.clock_start, spec.speed, spec.clock_t0),
    )
    try:
        starting = asyncio.ensure_future(fleet.start(connect_timeout_s=spec.connect_timeout_s))
        await asyncio.wait([starting, asyncio.ensure_future(stop.wait())], return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await starting  # a budget that ran out still reports what connected
        conn.send(("connected", figures(fleet)))
        if not stop.is_set():
            fleet.play()
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                order = await asyncio.wait_for(orders.get(), PROGRESS_S)
                await _obey(conn, fleet, order)
            conn.send(("progress", figures(fleet)))
    finally:
        loop.remove_reader(conn.fileno())
        await fleet.stop()
        await sink.close()
        with contextlib.suppress(OSError):
            conn.send(("done", figures(fleet)))


async def _obey(conn: Connection, fleet: Any, order: Any) -> None:
    kind, every = order
    if kind == "power_off":
        connected = [m for m in fleet.members if m.up and m.agent is not None and m.agent.link.is_up()]
        victims = connected[::every]
        await fleet.power_off(victims)
        conn.send(("powered_off", {"keys": [m.key for m in victims]}))


def _on_pipe(conn: Connection, stop: asyncio.Event, orders: asyncio.Queue[Any]) -> None:
    try:
        msg = conn.recv()
    except (EOFError, OSError):  # the coordinator is gone
        stop.set()
        return
    if msg == "stop":
        stop.set()
    elif isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "power_off" and isinstance(msg[1], int) and msg[1] > 0:
        orders.put_nowait(msg)
