"""Command and self-healing latency benchmark.

    .venv/bin/python -m bench.commands [--commands N] [--crashes M] [--hangs H]

Prints figures and asserts nothing; the same figures go to ``bench/results/commands-<date>.md``.

1. Command latency. A private Mosquitto (``LocalMosquitto``), ``hallfleet consumer`` in its own process on a
   SQLite store in a temp dir, one ``hallfleet agent`` process (role none, agent defaults: a lone event
   is committed to the outbox at once). ``diagnose`` commands are issued one after another through
   ``broker.commands.issue_command`` with a centre ``AsyncMqtt`` client (``centre_link``). Figure: from
   ``issue_command()`` returning (row committed, PUBLISH PUBACKed) to the end of the first store read that
   shows the command ``succeeded`` (the ``commands`` row that ``command_row`` reads, polled with plain
   sqlite3 every ~1 ms from this process), so each figure includes up to one poll period (printed). Where
   the time goes is taken from the stored acks: envelope ``ts`` (agent) and ``received_at`` (consumer),
   one host, so one clock. The consumer and the agent run with their shipped defaults (consumer batch wait
   20 ms from a batch's first message; the agent's outbox commits a lone event at once).
   Baseline in the same run: a bare MQTT v5 request/response between two plain paho clients on the same
   broker (QoS 1 both ways, a payload the size of the command): publish to a topic the other echoes back;
   once as paho comes (no TCP_NODELAY) and once with TCP_NODELAY on both sockets, as the product's
   ``AsyncMqtt`` sets it.
2. Crash or hang -> restarted and healthy. ``agent.selfheal.AppWatch`` runs in this process (emit = a list
   collector) supervising a real HTTP ``/health`` child (``tests/support/apps.py http``). The child is
   SIGKILLed M times, then SIGSTOPped H times; each time the figure is from the signal to the first
   HTTP GET /health that this process (not the watch) gets a 200 from, answered by the new pid. Before
   every kill the previous outage must have ended (``failures_before_restart`` passing probes, so every
   restart is the first of its outage, without backoff) and the kill falls at a random phase of the
   probe cycle. During a hang the bench starts its GETs once the watch has spawned the replacement, so
   it never fills the stopped process's accept queue (which would change what the watch's probes see).

With the defaults the run takes about 2 minutes (--time-limit bounds it). Everything listens on
127.0.0.1. Every process started here is stopped on exit, error, Ctrl-C or SIGTERM
(and the broker, consumer and agent also die with this process: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import datetime as dt
import importlib.metadata
import json
import math
import os
import platform
import random
import resource
import shlex
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from agent.selfheal import AppWatch, AppWatchConfig
from bench._machine import cpu_model, load_average, memory_total
from bench._run import in_workdir, write_results
from broker.commands import centre_link, command_row, issue_command
from broker.mosquitto.local import LocalMosquitto, find_mosquitto
from broker.store.db import Store
from broker.store.schema import devices, events
from protocol.commands import Command
from protocol.envelope import Frozen
from protocol.ids import uuid7
from runtime.settings import MqttConfig
from runtime.transport import AsyncMqtt
from tests.support.apps import app_command, free_port
from tests.support.procs import write_toml

SITE = "bench"
DEVICE = "kiosk-1"
TARGET = f"{SITE}/{DEVICE}"
COMMAND = "diagnose"
WARMUP_COMMANDS = 3
POLL_SLEEP_S = 0.001  # between store reads; a read itself takes a fraction of a millisecond
HEAL_POLL_S = 0.002  # between the bench's own GET /health attempts
COMMAND_LIMIT_S = 15.0  # one command that takes longer counts as timed out
HEAL_LIMIT_S = 20.0  # one outage that takes longer counts as timed out
COLD_STARTS = 10
FINAL_STATES = ("succeeded", "failed", "rejected", "expired")
RESULTS = Path(__file__).resolve().parent / "results"
_PR_SET_PDEATHSIG = 1


# -- figures ----------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (with fewer than 100 values, p99 is the maximum)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value * 1000:.1f}"


def summary(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> list[str]:
    """Percentiles then the maximum, in milliseconds."""
    return [ms(percentile(values, q)) for q in qs] + [ms(max(values) if values else math.nan)]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


# -- processes --------------------------------------------------------------------------------------
def _death_signal_hook() -> Callable[[], None] | None:
    """preexec_fn: the child gets SIGKILL when this process dies, even by SIGKILL (Linux)."""
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return hook


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (a clean stop), SIGKILL if it does not leave in time."""
        p = self.popen
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGCONT)
                p.terminate()
            try:
                p.wait(timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


def spawn_hallfleet(name: str, args: list[str], workdir: Path) -> Child:
    """``hallfleet ARGS`` as systemd would start it, output in ``workdir/NAME.log``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLFLEET_") and k != "CREDENTIALS_DIRECTORY"}
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "hallfleet.cli", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the bench only; it stops them in order
            preexec_fn=_death_signal_hook(),
        )
    return Child(name, popen, log_path)


def cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process from /proc (nan when unknown)."""
    if pid is None:
        return math.nan
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def find_pid(needle: str) -> int | None:
    """The process whose command line contains ``needle`` (the broker's private config path)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "cmdline").read_bytes().decode(errors="replace"):
                return int(entry.name)
    return None


def kill_group_if_app(pid: int, port: int) -> None:
    """Last resort: SIGKILL a leftover app child's group, if that pid is still our app (on our port)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return
    if "apps.py" in cmdline and str(port) in cmdline.split("\0"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


# -- 1a. baseline: bare MQTT request/response -------------------------------------------------------
def mqtt_baseline(port: int, n: int, payload: bytes, nodelay: bool) -> list[float]:
    """Round trips of a QoS 1 request that a second plain paho client echoes back at QoS 1. paho does not
    set TCP_NODELAY; ``nodelay`` sets it on both clients' sockets (Mosquitto sets it on its side)."""
    tag = f"{os.getpid()}-{'nd' if nodelay else 'plain'}"
    ping, pong = f"bench-rr/{tag}/ping", f"bench-rr/{tag}/pong"

    def no_delay(_c: mqtt.Client, _u: Any, sock: Any) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def client(client_id: str, subscribed: threading.Event) -> mqtt.Client:
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.on_subscribe = lambda *_: subscribed.set()
        if nodelay:
            c.on_socket_open = no_delay
        c.connect("127.0.0.1", port)
        c.loop_start()
        return c

    echo_ready, req_ready, got = threading.Event(), threading.Event(), threading.Event()
    echo = client(f"bench-echo-{tag}", echo_ready)
    req = client(f"bench-req-{tag}", req_ready)
    stamp: list[float] = [0.0]

    def on_echo(c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        c.publish(pong, msg.payload, qos=1)

    def on_reply(_c: mqtt.Client, _u: Any, _msg: mqtt.MQTTMessage) -> None:
        stamp[0] = time.perf_counter()
        got.set()

    echo.on_message = on_echo
    req.on_message = on_reply
    try:
        for c, topic, ready in ((echo, ping, echo_ready), (req, pong, req_ready)):
            c.subscribe(topic, qos=1)
            if not ready.wait(10):
                raise RuntimeError("baseline: no SUBACK within 10 s")
        rtts: list[float] = []
        for i in range(n + WARMUP_COMMANDS):
            got.clear()
            t0 = time.perf_counter()
            req.publish(ping, payload, qos=1)
            if not got.wait(5):
                raise RuntimeError("baseline: no echo within 5 s")
            if i >= WARMUP_COMMANDS:
                rtts.append(stamp[0] - t0)
        return rtts
    finally:
        for c in (req, echo):
            c.disconnect()
            c.loop_stop()


# -- 1b. command latency ----------------------------------------------------------------------------
@dataclass
class CommandRun:
    wanted: int
    deadline: float  # time.monotonic() after which no further command is started
    issued: int = 0
    latencies: list[float] = field(default_factory=list)  # issue_command() returned -> store shows succeeded
    issue_calls: list[float] = field(default_factory=list)  # issue_command() itself (insert + PUBACK)
    poll_periods: list[float] = field(default_factory=list)  # mean time between store reads, per command
    other_states: dict[str, int] = field(default_factory=dict)
    timed_out: int = 0
    stopped_early: str = ""
    stages: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds per command, per process
    wall_s: float = 0.0
    baseline: list[float] = field(default_factory=list)
    baseline_nodelay: list[float] = field(default_factory=list)
    startup_s: float = 0.0


async def wait_until(check: Callable[[], Any], limit_s: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + limit_s
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {limit_s:g} s waiting for {what}")
        await asyncio.sleep(every)


async def start_consumer(workdir: Path, port: int, url: str) -> Child:
    """``hallfleet consumer`` with the shipped defaults; returns once it has subscribed."""
    cfg = write_toml(
        workdir / "consumer.toml", {"instance": "bench"}, {"mqtt": mqtt_section(port), "store": {"url": url}}
    )
    child = spawn_hallfleet("consumer", ["consumer", "--config", str(cfg)], workdir)

    def subscribed() -> bool:
        if child.popen.poll() is not None:
            raise RuntimeError(f"consumer exited with {child.popen.returncode}; see {child.log_path}")
        # broker/ingest/receive.py logs "receiver ... connected to" once its SUBACK came back.
        return "connected to" in child.log_path.read_text(errors="replace")

    await wait_until(subscribed, 30, "the consumer to subscribe")
    return child


def mqtt_section(port: int) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "backoff_initial_s": 0.1, "backoff_max_s": 1.0}


async def bench_commands(run: CommandRun, workdir: Path) -> CommandRun:
    t_start = time.monotonic()
    broker = LocalMosquitto(workdir / "mosquitto")
    agent: Child | None = None
    consumer: Child | None = None
    store: Store | None = None
    centre: AsyncMqtt | None = None
    reader: sqlite3.Connection | None = None
    try:
        broker.start()
        now = dt.datetime.now(dt.UTC)
        sample = Command(
            id=uuid7(),
            name=COMMAND,
            issuer="bench",
            issued_at=now,
            expires_at=now + dt.timedelta(seconds=600),
        )
        payload = sample.model_dump_json().encode()
        run.baseline = await asyncio.to_thread(mqtt_baseline, broker.port, run.wanted, payload, False)
        run.baseline_nodelay = await asyncio.to_thread(mqtt_baseline, broker.port, run.wanted, payload, True)

        db_path = workdir / "store.db"
        url = f"sqlite+aiosqlite:///{db_path}"
        store = await Store.open(url)  # migrates before the consumer starts, so they never both do
        agent_cfg = write_toml(
            workdir / "agent.toml",
            {"site": SITE, "device": DEVICE, "role": "none"},
            {"mqtt": mqtt_section(broker.port), "outbox": {"path": str(workdir / "outbox.db")}},
        )
        # The agent starts once the consumer has subscribed: a birth the consumer only ever gets retained
        # does not register a device the store has never seen (see the report).
        consumer = await start_consumer(workdir, broker.port, url)
        agent = spawn_hallfleet("agent", ["agent", "--config", str(agent_cfg)], workdir)
        centre = AsyncMqtt(centre_link(MqttConfig(host=broker.host, port=broker.port), "bench"))
        await centre.connect()

        async def online() -> bool:
            assert store is not None and agent is not None
            if agent.popen.poll() is not None:
                raise RuntimeError(f"agent exited with {agent.popen.returncode}; see {agent.log_path}")
            value = await store.scalar(sa.select(devices.c.presence).where(devices.c.key == TARGET))
            return value == "online"

        await wait_until(online, 30, "the agent's birth in the store")
        run.startup_s = time.monotonic() - t_start
        # The poll reads the commands row with plain sqlite3 (WAL: never blocks the consumer's writes): about
        # 0.05 ms a read against ~1.5 ms through SQLAlchemy + aiosqlite, which would both stretch the poll
        # period past 2 ms and take CPU from the processes measured (this machine may have 2 cores).
        reader = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        pids = {
            "consumer": consumer.popen.pid,
            "agent": agent.popen.pid,
            "mosquitto": find_pid(str(broker.conf_path)),
        }
        await measure_commands(run, store, centre, reader, pids)
        return run
    finally:
        if reader is not None:
            reader.close()
        if centre is not None:
            with contextlib.suppress(Exception):
                await centre.disconnect()
        if store is not None:
            with contextlib.suppress(Exception):
                await store.close()
        for child in (agent, consumer):  # the agent first: its goodbye reaches the consumer
            if child is not None:
                child.stop()
        broker.stop()


async def measure_commands(
    s: CommandRun,
    store: Store,
    centre: AsyncMqtt,
    reader: sqlite3.Connection,
    pids: dict[str, int | None],
) -> None:
    issued_wall: dict[str, tuple[float, float]] = {}  # id -> (issue returned, seen succeeded), wall clock
    cpu0: dict[str, float] = {}
    t_measured = time.perf_counter()
    for i in range(WARMUP_COMMANDS + s.wanted):
        if i == WARMUP_COMMANDS:
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()} | {"bench": time.process_time()}
            t_measured = time.perf_counter()
        if time.monotonic() > s.deadline:
            s.stopped_early = f"time limit: {len(s.latencies)} of {s.wanted} measured"
            break
        t_call = time.perf_counter()
        cmd = await issue_command(store, centre, TARGET, COMMAND, issuer="bench", reason="latency bench")
        t0 = time.perf_counter()
        wall0 = time.time()
        reads = 0
        while True:
            got = reader.execute("SELECT state FROM commands WHERE id = ?", (cmd.id,)).fetchone()
            t1 = time.perf_counter()
            reads += 1
            state = str(got[0]) if got else ""
            if state in FINAL_STATES or t1 - t0 > COMMAND_LIMIT_S:
                break
            await asyncio.sleep(POLL_SLEEP_S)
        if i < WARMUP_COMMANDS:
            continue
        s.issued += 1
        row = await command_row(store, cmd.id)  # the product's own read agrees
        if state == "succeeded" and row is not None and row.state == "succeeded":
            s.latencies.append(t1 - t0)
            s.issue_calls.append(t0 - t_call)
            s.poll_periods.append((t1 - t0) / reads)
            issued_wall[cmd.id] = (wall0, wall0 + (t1 - t0))
        elif state in FINAL_STATES:
            s.other_states[state] = s.other_states.get(state, 0) + 1
        else:
            s.timed_out += 1
    if s.issued and cpu0:
        cpu1 = {k: cpu_seconds(p) for k, p in pids.items()} | {"bench": time.process_time()}
        s.cpu = {k: (cpu1[k] - cpu0[k]) / s.issued for k in cpu1}
        s.wall_s = time.perf_counter() - t_measured
    s.stages = await ack_stages(store, issued_wall)


async def ack_stages(store: Store, issued: dict[str, tuple[float, float]]) -> dict[str, list[float]]:
    """Split each command's time using its stored acks (agent ``ts``, consumer ``received_at``)."""
    rows = await store.fetch(
        sa.select(events.c.data, events.c.ts, events.c.received_at).where(events.c.type == "command.ack")
    )
    acks: dict[str, dict[str, tuple[float, float]]] = {}
    for r in rows:
        data = json.loads(r.data)
        acks.setdefault(data["command_id"], {})[data["state"]] = (r.ts.timestamp(), r.received_at.timestamp())
    stages: dict[str, list[float]] = {k: [] for k in STAGES}
    for command_id, (returned, seen) in issued.items():
        a = acks.get(command_id, {})
        if "delivered" not in a or "succeeded" not in a:
            continue
        delivered_ts = a["delivered"][0]
        succeeded_ts, succeeded_rx = a["succeeded"]
        stages["agent takes it"].append(delivered_ts - returned)
        stages["agent runs it"].append(succeeded_ts - delivered_ts)
        stages["ack to consumer"].append(succeeded_rx - succeeded_ts)
        stages["consumer stores it"].append(seen - succeeded_rx)
    return stages


STAGES = {
    "agent takes it": "issue_command() returned -> `delivered` ack built by the agent (its `ts`)",
    "agent runs it": "`delivered` ts -> `succeeded` ts: delivered and running each committed to the "
    "outbox (a commit and fsync each), then diagnose runs",
    "ack to consumer": "`succeeded` ts -> consumer received it: outbox commit, publish, broker",
    "consumer stores it": "received -> this bench reads `succeeded`: consumer flush wait, commit, poll",
}


# -- 2. crash / hang -> restarted and healthy -------------------------------------------------------
@dataclass
class HealRun:
    kind: str
    signal_name: str
    wanted: int
    figures: list[float] = field(default_factory=list)  # signal -> bench's GET /health answered by new pid
    to_event: list[float] = field(default_factory=list)  # signal -> the watch emitted app.restart
    to_spawn: list[float] = field(default_factory=list)  # signal -> the replacement's pid seen in diagnose()
    spawn_to_healthy: list[float] = field(default_factory=list)  # that -> the bench's GET answered 200
    triggers: dict[str, int] = field(default_factory=dict)
    not_ok: int = 0
    timed_out: int = 0
    stopped_early: str = ""


async def get_health(port: int, timeout_s: float = 0.5) -> str | None:
    """The body of a 200 answer to GET /health, else None (refused, timed out, not 200)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            data = await reader.read()
    except (OSError, TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(None, 2)
    if len(status) < 2 or not status[0].startswith(b"HTTP/") or status[1] != b"200":
        return None
    return body.decode(errors="replace")


async def cold_starts(port: int, n: int) -> list[float]:
    """Spawn -> first 200 from /health, for the app alone (the 'start' term of the formulas)."""
    out: list[float] = []
    for _ in range(n):
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *app_command("http", port), stdin=asyncio.subprocess.DEVNULL, process_group=0
        )
        try:
            while await get_health(port) != f"pid={proc.pid}\n":
                if time.perf_counter() - t0 > HEAL_LIMIT_S:
                    raise TimeoutError("the health app did not come up")
                await asyncio.sleep(HEAL_POLL_S)
            out.append(time.perf_counter() - t0)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    return out


def longer_than(items: Sequence[object], n: int) -> Callable[[], bool]:
    return lambda: len(items) > n


def child_pid(watch: AppWatch) -> int | None:
    child = watch.diagnose()["child"] or {}
    return child.get("pid") if child.get("returncode") is None else None


async def settled(watch: AppWatch) -> bool:
    """The app is up and the last outage is over (its passing probes counted): a fresh outage next."""
    d = watch.diagnose()
    return watch.state == "up" and d["attempt"] == 0 and d["consecutive_failures"] == 0 and child_pid(watch) is not None


async def outages(
    watch: AppWatch,
    cfg: AppWatchConfig,
    port: int,
    run: HealRun,
    sig: signal.Signals,
    log_events: list[tuple[float, str, Frozen]],
    deadline: float,
    seen_pids: set[int],
) -> None:
    for _ in range(run.wanted):
        if time.monotonic() > deadline:
            run.stopped_early = f"time limit: {len(run.figures)} of {run.wanted} measured"
            return
        await wait_until(lambda: settled(watch), HEAL_LIMIT_S, "the app to be up with no outage going on")
        await asyncio.sleep(random.uniform(0, cfg.probe_interval_s))  # a random phase of the probe cycle
        old = child_pid(watch)
        assert old is not None
        n_events = len(log_events)
        t0 = time.perf_counter()
        os.kill(old, sig)
        new: int | None = None
        t_spawn = 0.0
        while True:
            now = time.perf_counter()
            if now - t0 > HEAL_LIMIT_S:
                run.timed_out += 1
                break
            if new is None:
                pid = child_pid(watch)
                if pid is not None and pid != old:
                    new = pid
                    t_spawn = time.perf_counter()
                    seen_pids.add(pid)
            polling = new is not None or sig is signal.SIGKILL
            if polling and (body := await get_health(port)) is not None and body != f"pid={old}\n":
                t1 = time.perf_counter()
                run.figures.append(t1 - t0)
                if new is not None and body == f"pid={new}\n":
                    run.to_spawn.append(t_spawn - t0)
                    run.spawn_to_healthy.append(t1 - t_spawn)
                break
            await asyncio.sleep(HEAL_POLL_S)
        # The watch emits app.restart once its own recovery probe passed (it polls every min(interval, 1 s)).
        with contextlib.suppress(TimeoutError):
            await wait_until(longer_than(log_events, n_events), HEAL_LIMIT_S, "app.restart", every=HEAL_POLL_S)
        for at, event_type, payload in log_events[n_events:]:
            if event_type == "app.restart":
                run.to_event.append(at - t0)
                trigger = str(getattr(payload, "trigger", "?"))
                run.triggers[trigger] = run.triggers.get(trigger, 0) + 1
                run.not_ok += 0 if getattr(payload, "ok", False) else 1
                break


@dataclass
class HealBench:
    cfg: AppWatchConfig
    cold: list[float]
    crash: HealRun
    hang: HealRun
    faults: int


async def bench_selfheal(
    crashes: int,
    hangs: int,
    interval: float,
    failures: int,
    probe_timeout: float,
    deadlines: tuple[float, float],
) -> HealBench:
    port = free_port()
    cold = await cold_starts(port, COLD_STARTS)
    cfg = AppWatchConfig(
        name="bench-kiosk",
        command=app_command("http", port),
        health_url=f"http://127.0.0.1:{port}/health",
        probe_interval_s=interval,
        probe_timeout_s=probe_timeout,
        failures_before_restart=failures,
        restart_backoff_initial_s=5.0,
        restart_backoff_max_s=300.0,
        max_restarts=crashes + hangs + 10,  # never give up during the bench: each outage is measured alone
        restart_window_s=1800.0,
        recovery_timeout_s=10.0,
        stop_timeout_s=2.0,
    )
    collected: list[tuple[float, str, Frozen]] = []

    async def emit(event_type: str, payload: Frozen) -> None:
        collected.append((time.perf_counter(), event_type, payload))

    watch = AppWatch(cfg, emit)
    task = asyncio.create_task(watch.run(), name="app-watch")
    seen: set[int] = set()
    crash = HealRun("crash", "SIGKILL", crashes)
    hang = HealRun("hang", "SIGSTOP", hangs)
    try:
        await wait_until(lambda: settled(watch), 30, "the supervised app to come up")
        if (pid := child_pid(watch)) is not None:
            seen.add(pid)
        await outages(watch, cfg, port, crash, signal.SIGKILL, collected, deadlines[0], seen)
        await outages(watch, cfg, port, hang, signal.SIGSTOP, collected, deadlines[1], seen)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # run() stops its child before it returns
        for pid in seen:
            kill_group_if_app(pid, port)
    faults = sum(1 for _, t, _ in collected if t == "device.fault")
    return HealBench(cfg, cold, crash, hang, faults)


# -- report -----------------------------------------------------------------------------------------
def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (all cores; /proc/stat, not idle/iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return math.nan
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    guest = sum(fields[8:10]) if len(fields) > 9 else 0  # already counted in user and nice
    return (sum(fields) - idle - guest) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (consumer, agent, broker, apps)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def machine(load_at_start: str, busy: tuple[float, float, float]) -> list[tuple[str, str]]:
    cpu, mem = cpu_model(), memory_total()
    try:
        out = subprocess.run([str(find_mosquitto()), "-h"], capture_output=True, text=True, timeout=5).stdout
        mosq = out.splitlines()[0].strip() if out else "unknown"
    except (OSError, RuntimeError, subprocess.SubprocessError):
        mosq = "unknown"

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return [
        ("nproc", f"{len(os.sched_getaffinity(0))} (os.cpu_count {os.cpu_count()})"),
        ("CPU", cpu),
        ("memory", mem),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Mosquitto", mosq),
        (
            "paho-mqtt / SQLAlchemy / uvloop",
            f"{version('paho-mqtt')} / {version('sqlalchemy')} / {version('uvloop')}",
        ),
        ("SQLite", sqlite3.sqlite_version),
        ("load average (1/5/15 min) at start / end", f"{load_at_start} / {load_average()}"),
        (
            "CPU busy during the run (all processes / this bench and its children)",
            f"{busy[0]:.0f} / {busy[1]:.0f} core-seconds of {busy[2]:.0f} available",
        ),
    ]


def ratio(a: Sequence[float], b: Sequence[float], q: float) -> str:
    if not a or not b:
        return "-"
    return f"{percentile(a, q) / percentile(b, q):.0f}x"


def report_commands(s: CommandRun) -> list[str]:
    md = [
        "## 1. Command latency",
        "",
        "A private Mosquitto, `hallfleet consumer` (own process, uvloop, SQLite store in a temp dir, shipped "
        "`[ingest]` defaults: batch wait 20 ms from a batch's first message), one `hallfleet agent` process "
        "(role none, shipped defaults: a lone event is committed to the outbox at once). `diagnose` commands are "
        "issued one after another with `broker.commands.issue_command` from a centre `AsyncMqtt` client "
        "(`centre_link`), after "
        f"{WARMUP_COMMANDS} warm-up commands. Figure: `issue_command()` returned (row and audit committed, "
        "PUBLISH PUBACKed) -> the end of the first read of the store's `commands` row that shows `succeeded` "
        f"(plain sqlite3, a read every {ms(statistics.mean(s.poll_periods)) if s.poll_periods else '-'} ms "
        "on average; `command_row` confirms each). **The figure includes this poll granularity.**",
        "",
        f"Start-up (broker, baselines, consumer, agent birth) took {s.startup_s:.1f} s. The agent starts once "
        "the consumer has subscribed: the other way round the device never appears in `devices` "
        "(`Store._apply_status()` caches the heartbeat of a retained birth that updated no row, so "
        "`_register()` skips the device from then on).",
        "",
    ]
    rows = [
        [
            "**command: issue_command() returned -> store shows succeeded**",
            str(len(s.latencies)),
            *summary(s.latencies),
        ],
        [
            "issue_command() call itself (insert + audit commit, PUBLISH/PUBACK)",
            str(len(s.issue_calls)),
            *summary(s.issue_calls),
        ],
        [
            "baseline: bare MQTT request/response, plain paho (no TCP_NODELAY)",
            str(len(s.baseline)),
            *summary(s.baseline),
        ],
        [
            "baseline: the same with TCP_NODELAY on both clients",
            str(len(s.baseline_nodelay)),
            *summary(s.baseline_nodelay),
        ],
    ]
    md += table(["figure (ms)", "n", "p50", "p90", "p99", "max"], rows)
    md += [
        "",
        "Baseline: two plain paho MQTT v5 clients on the same broker in the same run, QoS 1 both ways, a "
        "payload the size of the command; one publishes, the other echoes it back; request -> echo received.",
        "",
        f"Ratio command / bare round trip (p50, p99): {ratio(s.latencies, s.baseline_nodelay, 50)}, "
        f"{ratio(s.latencies, s.baseline_nodelay, 99)} against paho with TCP_NODELAY (the product's "
        f"`AsyncMqtt` sets it); {ratio(s.latencies, s.baseline, 50)}, {ratio(s.latencies, s.baseline, 99)} "
        "against plain paho.",
        "",
    ]
    problems = []
    if s.other_states:
        problems.append("other final states: " + ", ".join(f"{k} {v}" for k, v in s.other_states.items()))
    if s.timed_out:
        problems.append(f"{s.timed_out} did not finish within {COMMAND_LIMIT_S:g} s")
    if s.stopped_early:
        problems.append(s.stopped_early)
    md += [f"Outcome: {s.issued} issued, {len(s.latencies)} succeeded" + "".join(f"; {p}" for p in problems) + "."]
    if any(s.stages.values()):
        md += [
            "",
            "Where the time goes (stored acks: agent `ts`, consumer `received_at`; one host, one clock):",
            "",
        ]
        md += table(
            ["stage (ms)", "what", "p50", "p90", "p99", "max"],
            [[name, what, *summary(s.stages[name])] for name, what in STAGES.items()],
        )
    if s.cpu:
        md += [
            "",
            "CPU per command (utime+stime over the measured commands; the bench's includes its store poll): "
            + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in s.cpu.items())
            + f"; {s.issued} commands in {s.wall_s:.1f} s wall.",
        ]
    return [*md, ""]


def findings(cmd: CommandRun, heal: HealBench) -> list[str]:
    md = ["## Findings", ""]
    if cmd.latencies:
        runs = cmd.stages.get("agent runs it", [])
        to_consumer = cmd.stages.get("ack to consumer", [])
        md.append(
            f"- **Command latency** p50 {ms(percentile(cmd.latencies, 50))} ms, p99 "
            f"{ms(percentile(cmd.latencies, 99))} ms, {ratio(cmd.latencies, cmd.baseline_nodelay, 50)} a bare "
            "MQTT round trip. Most of it is the agent's durable acks: `delivered` -> `succeeded` p50 "
            f"{ms(percentile(runs, 50))} ms (the runner awaits the outbox commit of `delivered` and of "
            "`running` before it runs the command, each a commit with its fsync, at once on an idle "
            f"outbox), and the `succeeded` ack's own commit before it leaves, p50 "
            f"{ms(percentile(to_consumer, 50))} ms."
        )
    if cmd.baseline and cmd.baseline_nodelay:
        md.append(
            f"- **Nagle.** The plain-paho round trip is p50 {ms(percentile(cmd.baseline, 50))} ms, with "
            f"TCP_NODELAY p50 {ms(percentile(cmd.baseline_nodelay, 50))} ms: paho leaves Nagle on, so a "
            "small write right after another (a PUBLISH after the PUBACK of the message it answers) waits "
            "for the broker's delayed ACK. The product's `AsyncMqtt` sets TCP_NODELAY, so the second "
            "baseline is the one to compare with."
        )
    crash, hang = heal.crash, heal.hang
    if crash.figures and hang.figures:
        md.append(
            f"- **Self-healing.** A crash is back in p50 {ms(percentile(crash.figures, 50))} ms, of which "
            f"the new process's own start is p50 {ms(percentile(crash.spawn_to_healthy, 50))} ms and the "
            f"detection plus respawn p50 {ms(percentile(crash.to_spawn, 50))} ms: `AppWatch._pause()` waits "
            "on the child's reaper, so an exit costs no probe interval. A hang takes p50 "
            f"{ms(percentile(hang.figures, 50))} ms, max {ms(max(hang.figures))} ms, as the probe loop "
            "predicts (section 2). The watch's own `app.restart` event lags health: after a restart "
            "`_await_recovery()` probes at once (too early for a new process), then every "
            "min(probe_interval, 1 s)."
        )
    return [*md, ""]


def report(
    load_at_start: str,
    busy: tuple[float, float, float],
    command_line: str,
    started: dt.datetime,
    cmd: CommandRun,
    heal: HealBench,
    took: float,
) -> str:
    md: list[str] = [
        f"# Command and self-healing latency, {started:%Y-%m-%d %H:%M} {started.tzname() or ''}".rstrip(),
        "",
        f"Command: `{command_line}` (took {took:.0f} s; one machine, loopback only).",
        "",
        "## Machine",
        "",
        *table(["", ""], machine(load_at_start, busy)),
        "",
        *findings(cmd, heal),
        *report_commands(cmd),
    ]
    c = heal.cfg
    starts = heal.crash.spawn_to_healthy + heal.hang.spawn_to_healthy
    start = percentile(starts, 50) if starts else percentile(heal.cold, 50)
    f, iv, to = c.failures_before_restart, c.probe_interval_s, c.probe_timeout_s
    hang_lo = f * to + (f - 1) * iv + start
    md += [
        "## 2. Crash / hang -> restarted and healthy",
        "",
        "`agent.selfheal.AppWatch` in the bench process (emit = list collector), supervising a real HTTP "
        "`/health` child (`tests/support/apps.py http`, a Python `http.server`). Settings: "
        f"probe_interval_s={iv:g}, probe_timeout_s={to:g}, failures_before_restart={f}, "
        f"recovery_timeout_s={c.recovery_timeout_s:g}, stop_timeout_s={c.stop_timeout_s:g}, "
        f"restart_backoff_initial_s={c.restart_backoff_initial_s:g}, max_restarts={c.max_restarts} (never "
        "reached). Figure: signal -> the first GET /health from the bench that the new pid answers 200 "
        f"(polled every {HEAL_POLL_S * 1000:g} ms; during a hang only once the replacement exists). Each "
        "kill waits until the previous outage ended, then a random 0..probe_interval, so each restart is "
        "the first of its outage (no backoff) and the kill falls at a random phase of the probe cycle.",
        "",
    ]
    hrows = [
        [
            "app cold start alone (spawn -> 200), for reference",
            str(len(heal.cold)),
            *summary(heal.cold, (50, 99)),
        ]
    ]
    for r in (heal.crash, heal.hang):
        hrows += [
            [
                f"**{r.kind} ({r.signal_name}) -> healthy**",
                str(len(r.figures)),
                *summary(r.figures, (50, 99)),
            ],
            [
                f"{r.kind}: signal -> replacement spawned",
                str(len(r.to_spawn)),
                *summary(r.to_spawn, (50, 99)),
            ],
            [
                f"{r.kind}: spawned -> healthy (start)",
                str(len(r.spawn_to_healthy)),
                *summary(r.spawn_to_healthy, (50, 99)),
            ],
            [
                f"{r.kind}: signal -> watch emits app.restart",
                str(len(r.to_event)),
                *summary(r.to_event, (50, 99)),
            ],
        ]
    md += table(["figure (ms)", "n", "p50", "p99", "max"], hrows)
    md += [
        "",
        f"Expected (scales with probe_interval_s; start = spawned -> healthy, p50 {ms(start)} ms here):",
        "",
        f"- crash ≈ probe_interval + start = {ms(iv + start)} ms as the rule of thumb, an upper bound: "
        "`AppWatch._pause()` waits on the child's reaper, so an exit is noticed at once and the restart is "
        f"immediate: crash ≈ start ≈ {ms(start)} ms.",
        f"- hang ≈ failures × interval + timeout + start = {ms(f * iv + to + start)} ms, the rule of thumb. "
        "From the loop as written (each failed probe lasts probe_timeout, then a full interval pause): "
        "hang ≈ U(0, interval) + failures × timeout + (failures − 1) × interval + stop + start = "
        f"{ms(hang_lo)} .. {ms(hang_lo + iv)} ms (stopping a SIGSTOPped child, SIGTERM + SIGCONT, takes "
        "a few ms).",
        "- The watch's own `app.restart` event comes after health: `_await_recovery()` probes right after "
        "the spawn (too early for a new process) and then every min(probe_interval, 1 s).",
        "",
    ]
    for r in (heal.crash, heal.hang):
        notes = [
            f"{r.kind}: {len(r.figures)} of {r.wanted} measured",
            "app.restart triggers " + (", ".join(f"{k} {v}" for k, v in r.triggers.items()) or "none"),
        ]
        if r.not_ok:
            notes.append(f"{r.not_ok} restart(s) reported ok=false")
        if r.timed_out:
            notes.append(f"{r.timed_out} not healthy within {HEAL_LIMIT_S:g} s")
        if r.stopped_early:
            notes.append(r.stopped_early)
        md.append("- " + "; ".join(notes) + ".")
    md += [f"- device.fault events: {heal.faults}.", ""]
    md += [
        "Notes: p99 with fewer than 100 samples is the maximum (nearest rank). "
        f"{len(os.sched_getaffinity(0))} CPUs for broker, consumer, agent and bench together, and for "
        "whatever else ran on the machine (see the CPU-busy line under Machine): the figures include their "
        "competition for the CPU.",
        "",
    ]
    return "\n".join(md)


# -- main -------------------------------------------------------------------------------------------
async def run_all(args: argparse.Namespace, workdir: Path) -> tuple[CommandRun, HealBench]:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    with contextlib.suppress(NotImplementedError):
        loop.add_signal_handler(signal.SIGTERM, main_task.cancel)
    t0 = time.monotonic()
    limit = args.time_limit
    # Each phase stops starting new measurements at its own deadline, so the later ones still get a turn.
    run = CommandRun(args.commands, t0 + 0.40 * limit)
    async with asyncio.timeout(limit + 60):  # the last resort; the deadlines should stop it long before
        cmd = await bench_commands(run, workdir)
        heal = await bench_selfheal(
            args.crashes,
            args.hangs,
            args.probe_interval,
            args.failures,
            args.probe_timeout,
            (t0 + 0.70 * limit, t0 + limit - 5),
        )
    return cmd, heal


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.commands", description=__doc__.split("\n\n")[0])
    p.add_argument("--commands", type=int, default=200, help="diagnose commands to time (default 200)")
    p.add_argument("--crashes", type=int, default=20, help="SIGKILLs of the supervised app (default 20)")
    p.add_argument("--hangs", type=int, default=10, help="SIGSTOPs of the supervised app (default 10)")
    p.add_argument("--probe-interval", type=float, default=0.5, help="AppWatch probe_interval_s (default 0.5)")
    p.add_argument("--probe-timeout", type=float, default=0.3, help="AppWatch probe_timeout_s (default 0.3)")
    p.add_argument("--failures", type=int, default=3, help="AppWatch failures_before_restart (default 3)")
    p.add_argument("--time-limit", type=float, default=175.0, help="seconds for the measurements (default 175)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, store) afterwards")
    args = p.parse_args(argv)
    if min(args.commands, args.crashes, args.hangs) < 1 or args.failures < 1:
        p.error("counts must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    command_line = shlex.join([".venv/bin/python", "-m", "bench.commands", *(sys.argv[1:] if argv is None else argv)])
    started = dt.datetime.now().astimezone()
    load_at_start = load_average()
    busy0 = machine_busy_s()
    t0 = time.monotonic()
    cmd, heal = in_workdir("commands", "this takes about 2 minutes", args.keep, lambda workdir: run_all(args, workdir))
    took = time.monotonic() - t0
    busy = (machine_busy_s() - busy0, own_cpu_s(), took * len(os.sched_getaffinity(0)))
    write_results("commands", started, report(load_at_start, busy, command_line, started, cmd, heal, took))
    return 0


if __name__ == "__main__":
    sys.exit(main())
