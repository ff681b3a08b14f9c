"""Ingest benchmark: simulated devices -> private Mosquitto -> hallfleet consumer -> store.

    .venv/bin/python -m bench.ingest [--events N] [--devices D] [--backend sqlite|postgres|both] [--rate R]

Prints figures and asserts nothing. For each backend, in this order, on one private Mosquitto:

1. Bare subscriber (the ceiling): a paho MQTT v5 client on ``$share/bench/hall/v1/+/+/evt/#`` that only
   counts (``loop_forever``, automatic acks). Figure: N / (first publish -> Nth message received).
2. Consumer throughput: ``broker.consumer.Consumer`` on a fresh store, in its own process on uvloop as
   ``hallfleet consumer`` runs it. Figure: N / (first publish -> all N rows visible in ``events``). The
   moment is found by a 10 ms poll from this process (per-device ``max(seq)`` over the
   ``(site, device, seq)`` index, cheap at any table size) and confirmed with ``SELECT count(*)``.
   CPU: the consumer's utime+stime from /proc/<pid>/stat over the same window, per 100,000 events.
3. Latency at a fixed offered rate R for S seconds. Each envelope's ``ts`` is its publish time (wall
   clock, microseconds). Two figures:
   - publish -> visible in the store: this process polls every 2 ms for rows not yet seen (per device
     ``seq >`` the contiguous seen prefix, over the same index) and stamps each row with the end time of
     the first query that returned it. An upper bound of publish -> commit; resolution one poll period.
   - publish -> ``stored`` confirmation received by the publishing device (the product's end-to-end ack:
     the consumer publishes it after the commit and the PUBACKs), measured inside the load generator
     with one clock.
4. Issue 19's figures: the bare receiver (the consumer's MQTT client, broker/ingest/receive.py on uvloop,
   counting only) draining N queued; the consumer in drain mode (N queued for its stopped persistent session,
   then N / (started -> all N rows visible)); rules on vs off through the commit stage at 0, 1 and 5 %
   state changes with the SLA clock's first tick after each (bench/alerts.py section 1, ``--rules-events``);
   and, once per run, Node-RED with batched SQLite inserts at synchronous=FULL (bench/nodered.py, when
   installed). Steps 1, 2 and the drains run ``--repeats`` times (default 3): medians, each run listed.
   A full run (100,000 events, 50,000 in the rules runs: the storm of about 1,400 open incidents at 5 %,
   both backends, Node-RED) should take about 14 minutes (estimated from the smoke, not run at full size
   on the shared machine); smoke it with
   ``--events 5000 --repeats 1 --latency-seconds 2 --rules-events 2000 --kiosks 200``.
5. Same-run comparisons, off by default (bench/ingest_costs.py): ``--poison-permille 1,10`` drains the backlog
   clean and with those shares of punches the database refuses (issue 16: the isolation's cost, dead letters
   checked against the poisoned count); ``--signed`` drains it unsigned and signed by devices whose keys the
   centre holds (issue 24: the verification's cost), beside Ed25519 sign and verify microseconds from a tight
   loop. Each interleaves its drains run by run, ``--repeats`` times.

The load generator is a separate process: D paho MQTT v5 clients (one per device, QoS 1, at most
``--window`` unacknowledged publishes each, like the agent's ``max_inflight``) driven from one selector
loop, publishing pre-built ~300-byte ``attendance.punch`` envelopes (distinct UUIDv7 ids, consecutive seq
per device). Everything listens on 127.0.0.1 only; every process started here is stopped on exit,
Ctrl-C or error (children also die with this process: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import ctypes
import ctypes.util
import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import multiprocessing
import os
import platform
import selectors
import shlex
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bench._machine import cpu_model, memory_total
from broker.config import IngestConfig
from broker.mosquitto.local import LocalMosquitto, find_mosquitto
from protocol import topics
from protocol.envelope import Envelope
from protocol.ids import uuid7
from protocol.signing import Signer
from tests.support.postgres import LocalPostgres, find_pg_bin_dir
from tests.support.refusal import POISON

SITE = "bench-hall"
PROBE_SITE = "bench-probe"
PROBE_DEVICE = "probe"
EVENT_TYPE = "attendance.punch"
BARE_FILTER = topics.shared("bench", topics.ALL_EVENTS)
# Same persistence cadence as the centre's broker (broker/mosquitto/hallfleet.conf), not the tests' 1 s:
# a 1 s snapshot of a 100k-message backlog would bill the broker's disk work to whatever runs beside it.
MOSQUITTO_EXTRA = "autosave_interval 60\n"
SENTINEL_TS = dt.datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=dt.UTC)
SENTINEL = b"2000-01-01T00:00:00.000001Z"
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
METHODS = ("face", "fingerprint", "qr", "card")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PRODUCT_PATHS = ("broker", "protocol")
THROUGHPUT_POLL_S = 0.010
LATENCY_POLL_S = 0.002
MP = multiprocessing.get_context("spawn")  # never fork a process that runs an event loop

log = logging.getLogger("bench.ingest")


# -- small helpers ---------------------------------------------------------------------------------------
def device_names(count: int) -> list[str]:
    return [f"att-{i:04d}" for i in range(count)]


def per_device_counts(events: int, devices: int) -> list[int]:
    """Event k goes to device k % D with seq k // D + 1: device d gets this many (its last seq)."""
    return [events // devices + (1 if d < events % devices else 0) for d in range(devices)]


@dataclass(frozen=True)
class Backlog:
    """What a drained backlog holds and what the store makes of it. Default: issue 19's plain punches. ``refusing``:
    the store refuses any event whose data mentions POISON (tests/support/refusal.py), and ``poison_permille`` of
    the punches do: valid on the wire, refused by the database (issue 16). ``signed``: each punch carries its
    device's Ed25519 signature and the devices' keys are registered at the centre, so each is verified (issue 24)."""

    refusing: bool = False
    poison_permille: int = 0
    signed: bool = False


def poisoned(k: int, permille: int) -> bool:
    """Whether event k is one the store refuses: exactly ``permille`` of every 1,000 consecutive events, spread
    over them (919 is prime to 1,000), so every batch meets its share."""
    return (k * 919) % 1000 < permille


@dataclass(frozen=True)
class Expected:
    """What a drain must leave: every event stored but the poisoned, each of those a store_rejected dead letter."""

    events: int
    rejected: int
    last: list[int]  # each device's last seq the store takes (0: none)

    @property
    def stored(self) -> int:
        return self.events - self.rejected

    @classmethod
    def of(cls, events: int, devices: int, permille: int) -> Expected:
        last = []
        for d, count in enumerate(per_device_counts(events, devices)):
            while count and poisoned((count - 1) * devices + d, permille):  # seq s of device d is event (s-1)*D+d
                count -= 1
            last.append(count)
        return cls(events, sum(poisoned(k, permille) for k in range(events)), last)


PLAIN = Backlog()


def ts_bytes(ns: int) -> bytes:
    """A wall-clock time in exactly the form pydantic writes an aware UTC datetime (microseconds)."""
    return (EPOCH + dt.timedelta(microseconds=ns // 1000)).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()


def envelope_bytes(site: str, device: str, seq: int, boot_id: str, ts: dt.datetime, staff: str = "") -> bytes:
    """A punch as the agent encodes it (``encode_event``'s bytes); ``staff`` replaces the made-up staff id."""
    env = Envelope(
        v=1,
        id=uuid7(),
        site=site,
        device=device,
        type=EVENT_TYPE,
        seq=seq,
        boot_id=boot_id,
        ts=ts,
        clock_synced=True,
        data={
            "staff_id": staff or f"stf-{(seq * 7919 + len(device) * 104729) % 1_000_000:06d}",
            "method": METHODS[seq % len(METHODS)],
            "direction": "in" if seq % 2 else "out",
            "offline": False,
        },
    )
    return env.model_dump_json().encode()


def device_signer(device: str) -> Signer:
    """A bench device's Ed25519 key, derived from its name: the generator signs with it, the orchestrator registers
    its public half at the centre (a bench key; real ones come from provisioning)."""
    seed = hashlib.sha256(f"hallfleet-bench/{device}".encode()).digest()
    return Signer.from_text(base64.b64encode(seed).decode())


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (nan when empty)."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), round(p / 100 * len(sorted_values) + 0.5)))
    return float(sorted_values[rank - 1])


def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads), from /proc/<pid>/stat; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pids_with_cmdline(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


def _pdeathsig(parent_pid: int) -> None:
    """Die with the orchestrator even if it is SIGKILLed (Linux)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is not None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc_name, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def _child_setup(parent_pid: int) -> None:
    # Ctrl-C reaches the whole process group: the orchestrator alone decides how children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _pdeathsig(parent_pid)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _report_crash(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        conn.send(("error", traceback.format_exc()))


def nodelay(sock: Any) -> None:
    """paho leaves Nagle on: a small publish could then wait for the peer's delayed ACK (~40 ms), which
    would be billed to the consumer's latency. The devices' own link (runtime/transport.py) sets it too."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect_props(receive_maximum: int | None = None) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 0  # nothing of a bench client may outlive its connection
    if receive_maximum is not None:
        props.ReceiveMaximum = receive_maximum
    return props


# -- load generator (child process) ---------------------------------------------------------------------
@dataclass(frozen=True)
class GenSpec:
    host: str
    port: int
    site: str
    devices: list[str]
    events: int
    rate: float  # events/s over all devices; 0 = as fast as the broker acknowledges
    window: int  # unacknowledged QoS 1 publishes per device
    subscribe_stored: bool
    deadline_s: float
    backlog: Backlog = PLAIN

    def __post_init__(self) -> None:
        if self.backlog.signed and self.rate:
            raise ValueError("signed punches are signed before timing: rate mode rewrites their ts at publish")


class Generator:
    """D paho clients in one thread, driven by a selector: no paho threads, no internal queueing."""

    def __init__(self, spec: GenSpec) -> None:
        self.spec = spec
        n_dev = len(spec.devices)
        self.counts = per_device_counts(spec.events, n_dev)
        self.topics = [topics.event(spec.site, d, EVENT_TYPE) for d in spec.devices]
        self.payloads: list[bytes] = []
        self.clients: list[mqtt.Client] = []
        self.outstanding = [0] * n_dev
        self.acked = 0
        self.subscribed = 0
        self.sel = selectors.DefaultSelector()
        self.writing: set[int] = set()
        self.pub_ns = [[0] * c for c in self.counts]
        self.stored_ns = [[0] * c for c in self.counts]
        self.deadline = 0.0
        self.last_misc = 0.0

    def build(self) -> None:
        """Pre-build every envelope (validated by the Envelope model). In rate mode ``ts`` is a sentinel
        replaced by the publish time at publish."""
        spec, permille = self.spec, self.spec.backlog.poison_permille
        boots = {d: uuid.uuid4().hex[:16] for d in spec.devices}
        ts = SENTINEL_TS if spec.rate else dt.datetime.now(dt.UTC)
        n_dev = len(spec.devices)
        sign = {d: device_signer(d) for d in spec.devices} if spec.backlog.signed else {}
        for k in range(spec.events):
            dev = spec.devices[k % n_dev]
            staff = f"{POISON}-{k}" if poisoned(k, permille) else ""
            raw = envelope_bytes(spec.site, dev, k // n_dev + 1, boots[dev], ts, staff)
            self.payloads.append(sign[dev].sign(raw) if sign else raw)

    def connect(self) -> None:
        spec = self.spec
        self.deadline = time.monotonic() + 30
        for i, dev in enumerate(spec.devices):
            c = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=f"bench-gen-{os.getpid()}-{dev}",
                protocol=mqtt.MQTTv5,
                userdata=i,
            )
            c.max_inflight_messages_set(spec.window)
            c.max_queued_messages_set(0)
            c.on_publish = self._on_publish
            c.on_message = self._on_stored
            c.on_subscribe = self._on_subscribe
            c.connect(spec.host, spec.port, keepalive=60, clean_start=True, properties=connect_props())
            sock = c.socket()
            assert sock is not None
            nodelay(sock)
            self.sel.register(sock, selectors.EVENT_READ, i)
            self.clients.append(c)
            self._want_write(i)
        while not all(c.is_connected() for c in self.clients):
            self.pump(0.05)
        if spec.subscribe_stored:
            for i, c in enumerate(self.clients):
                c.subscribe(topics.stored(spec.site, spec.devices[i]), qos=1)
                self._want_write(i)
            while self.subscribed < len(self.clients):
                self.pump(0.05)

    # paho callbacks (this thread)
    def _on_publish(self, _c: mqtt.Client, i: int, _mid: int, _rc: ReasonCode, _p: Properties) -> None:
        self.outstanding[i] -= 1
        self.acked += 1

    def _on_subscribe(self, _c: mqtt.Client, _i: int, _mid: int, _rc: list[ReasonCode], _p: Any) -> None:
        self.subscribed += 1

    def _on_stored(self, _c: mqtt.Client, i: int, msg: mqtt.MQTTMessage) -> None:
        now = time.time_ns()
        got = self.stored_ns[i]
        for first, last in json.loads(msg.payload)["ranges"]:
            for seq in range(max(first, 1), min(last, len(got)) + 1):
                if not got[seq - 1]:
                    got[seq - 1] = now

    # network
    def _want_write(self, i: int) -> None:
        c = self.clients[i]
        if c.want_write() and i not in self.writing:
            sock = c.socket()
            if sock is not None:
                self.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
                self.writing.add(i)

    def pump(self, timeout: float) -> None:
        if time.monotonic() > self.deadline:
            raise TimeoutError("load generator ran past its deadline")
        for key, mask in self.sel.select(timeout):
            c = self.clients[key.data]
            if mask & selectors.EVENT_READ:
                rc = c.loop_read()
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    raise ConnectionError(f"{self.spec.devices[key.data]}: {mqtt.error_string(rc)}")
            if mask & selectors.EVENT_WRITE:
                c.loop_write()
        for i in list(self.writing):
            c = self.clients[i]
            sock = c.socket()
            if not c.want_write() and sock is not None:
                self.sel.modify(sock, selectors.EVENT_READ, i)
                self.writing.discard(i)
        now = time.monotonic()
        if now - self.last_misc > 1.0:
            self.last_misc = now
            for c in self.clients:
                c.loop_misc()

    def _publish(self, k: int, payload: bytes) -> None:
        i = k % len(self.clients)
        info = self.clients[i].publish(self.topics[i], payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"publish failed: {mqtt.error_string(info.rc)}")
        self.outstanding[i] += 1
        self._want_write(i)

    def run(self) -> dict[str, Any]:
        spec = self.spec
        n_dev = len(self.clients)
        window = spec.window
        self.deadline = time.monotonic() + spec.deadline_s
        cpu0 = time.process_time()
        t_first = time.monotonic_ns()
        if spec.rate:
            start = time.monotonic()
            k = 0
            while k < spec.events:
                due = start + k / spec.rate
                now = time.monotonic()
                if now < due:
                    self.pump(min(due - now, 0.005))
                    continue
                if self.outstanding[k % n_dev] >= window:
                    self.pump(0.001)
                    continue
                ns = time.time_ns()
                self._publish(k, self.payloads[k].replace(SENTINEL, ts_bytes(ns), 1))
                self.pub_ns[k % n_dev][k // n_dev] = ns
                k += 1
                self.pump(0)
        else:
            payloads = self.payloads
            for k in range(spec.events):
                i = k % n_dev
                while self.outstanding[i] >= window:
                    self.pump(0.05)
                self._publish(k, payloads[k])
                if i == n_dev - 1:
                    self.pump(0)
        t_last_pub = time.monotonic_ns()
        while self.acked < spec.events:
            self.pump(0.05)
        t_acked = time.monotonic_ns()
        cpu = time.process_time() - cpu0
        stored_us: list[int] = []
        unconfirmed = 0
        if spec.subscribe_stored:
            settle = time.monotonic() + 10
            while time.monotonic() < settle and any(0 in s for s in self.stored_ns):
                self.pump(0.05)
            for pubs, stored in zip(self.pub_ns, self.stored_ns, strict=True):
                for p, s in zip(pubs, stored, strict=True):
                    if s:
                        stored_us.append((s - p) // 1000)
                    else:
                        unconfirmed += 1
        return {
            "t_first": t_first,
            "t_last_pub": t_last_pub,
            "t_acked": t_acked,
            "acked": self.acked,
            "cpu_s": cpu,
            "stored_us": stored_us,
            "unconfirmed": unconfirmed,
        }

    def close(self) -> None:
        for c in self.clients:
            with contextlib.suppress(Exception):
                c.disconnect()
                c.loop_write()
        self.sel.close()


def generator_main(conn: Connection, parent_pid: int, spec: GenSpec) -> None:
    _child_setup(parent_pid)
    gen = Generator(spec)
    try:
        gen.build()
        gen.connect()
        conn.send(("ready", os.getpid()))
        if conn.recv() == "go":
            conn.send(("result", gen.run()))
    except Exception:
        _report_crash(conn)
    finally:
        gen.close()


# -- bare subscriber (child process) --------------------------------------------------------------------
def _bare_client(client_id: str) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)


def bare_main(conn: Connection, parent_pid: int, host: str, port: int, n: int, receive_max: int, backlog: bool) -> None:
    """Count N messages of the shared subscription on paho's ``loop_forever``; nothing else.

    live: subscribe, say ready, count what arrives while the generator publishes.
    backlog: subscribe with a persistent session and leave, say ready, wait for "go" (sent once the
    generator's N messages are all queued for us), then resume the session and count the drain.
    """
    _child_setup(parent_pid)
    try:
        count = 0
        t_first = t_last = 0
        cpu_first = cpu_last = 0.0
        client_id = f"bench-bare-{os.getpid()}"

        def on_connect(c: mqtt.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
            if rc.is_failure:
                conn.send(("error", f"bare subscriber refused: {rc}"))
                c.disconnect()

        def on_subscribe(c: mqtt.Client, _u: Any, _mid: int, _rc: list[ReasonCode], _p: Any) -> None:
            if backlog:
                c.disconnect()  # the session (and its subscription) stays; messages queue for it
            else:
                conn.send(("ready", os.getpid()))

        def on_message(c: mqtt.Client, _u: Any, _msg: mqtt.MQTTMessage) -> None:
            nonlocal count, t_first, t_last, cpu_first, cpu_last
            count += 1
            if count == 1:
                t_first, cpu_first = time.monotonic_ns(), time.process_time()
            if count == n:
                t_last, cpu_last = time.monotonic_ns(), time.process_time()
                c.disconnect()

        client = _bare_client(client_id)
        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        props = connect_props(receive_max)
        if backlog:
            props.SessionExpiryInterval = 600
        client.connect(host, port, keepalive=60, clean_start=True, properties=props)
        nodelay(client.socket())
        client.subscribe(BARE_FILTER, qos=1)
        client.loop_forever()  # live: ends at the Nth message, or when the orchestrator stops us
        t_start = 0
        if backlog:
            conn.send(("ready", os.getpid()))
            if conn.recv() != "go":
                return
            client = _bare_client(client_id)
            client.on_connect = on_connect
            client.on_message = on_message
            t_start = time.monotonic_ns()
            # Resume the session; expiry 0 now, so the broker forgets it when we leave.
            client.connect(host, port, keepalive=60, clean_start=False, properties=connect_props(receive_max))
            nodelay(client.socket())
            client.loop_forever()
        conn.send(
            (
                "result",
                {
                    "count": count,
                    "t_start": t_start,
                    "t_first": t_first,
                    "t_last": t_last,
                    "cpu_s": cpu_last - cpu_first,
                },
            )
        )
    except Exception:
        _report_crash(conn)


# -- hallfleet consumer (child process) -----------------------------------------------------------------
def consumer_main(
    conn: Connection, parent_pid: int, url: str, host: str, port: int, instance: str, ingest: dict[str, Any]
) -> None:
    """The consumer as ``hallfleet consumer`` runs it (uvloop when present), stopped by SIGTERM; ``ingest``
    overrides its ingest defaults (the latency run's batch windows)."""
    _child_setup(parent_pid)
    try:
        from broker.config import ConsumerConfig, StoreConfig
        from broker.consumer import Consumer
        from broker.store.db import Store
        from runtime.settings import MqttConfig

        cfg = ConsumerConfig(
            instance=instance,
            mqtt=MqttConfig(host=host, port=port),
            store=StoreConfig(url=url),
            ingest=IngestConfig(**ingest),
        )

        async def amain() -> dict[str, int]:
            store = await Store.open(cfg.store.url, stale_factor=cfg.ingest.stale_factor)
            consumer = Consumer(cfg, store)
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, consumer.stop)
            # Drain mode times from here, the connection's few ms included. Not from "connected": the reader decodes
            # all one socket read brought (up to the receive maximum) before this task sees the event, so a stamp
            # there missed up to 2,000 messages' work, most of a small signed backlog's verification.
            started = (time.monotonic_ns(), time.process_time())
            task = asyncio.create_task(consumer.run())
            ready = asyncio.create_task(consumer.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            if ready.done():
                conn.send(("ready", os.getpid()))
                conn.send(("started", started))
            try:
                await task
            finally:
                ready.cancel()
                await store.close()
            c = consumer.counters
            return {
                "received": c.received,
                "stored": c.stored,
                "dead": c.dead,
                "batches": c.batches,
                "store_errors": c.store_errors,
                "store_rejected": c.store_rejected,
            }

        # HALLFLEET_PROFILE_DIR: each consumer run writes its cProfile stats there (pid in the name), to find
        # where a drain's CPU goes (docs/ingest.md); the figures of a profiled run are not figures.
        profile_dir = os.environ.get("HALLFLEET_PROFILE_DIR")
        profiler = cProfile.Profile() if profile_dir else None
        if profiler is not None:
            profiler.enable()
        try:
            import uvloop

            counters = uvloop.run(amain())
            loop_name = "uvloop"
        except ImportError:
            counters = asyncio.run(amain())
            loop_name = "asyncio"
        if profiler is not None and profile_dir:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"consumer-{instance}-{os.getpid()}.prof"))
        conn.send(("counters", {**counters, "loop": loop_name}))
    except Exception:
        _report_crash(conn)


# -- reading the store from the orchestrator ------------------------------------------------------------
class StoreProbe(Protocol):
    async def count(self) -> int: ...
    async def max_seq(self, site: str, devices: list[str]) -> list[int]: ...
    async def new_rows(self, site: str, marks: dict[str, int]) -> list[tuple[str, int]]: ...
    async def publish_ts_us(self, site: str) -> dict[tuple[str, int], int]: ...
    async def backend_pids(self) -> list[int]: ...
    async def dead_letters(self) -> dict[str, int]: ...
    async def signed(self, site: str) -> int: ...
    async def close(self) -> None: ...


DEAD_BY_REASON = "SELECT reason, count(*) FROM dead_letters GROUP BY reason"
SIGNED_COUNT = "SELECT count(*) FROM events WHERE sig IS NOT NULL AND site ="  # stored with a verified signature


def _us(value: dt.datetime) -> int:
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return (value - EPOCH) // dt.timedelta(microseconds=1)


class SqliteProbe:
    """Plain sqlite3 on the consumer's WAL database: each autocommit SELECT sees the last commit."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("PRAGMA busy_timeout=30000")

    async def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM events").fetchone()[0])

    async def max_seq(self, site: str, devices: list[str]) -> list[int]:
        values = ",".join(f"('{d}')" for d in devices)
        sql = (
            f"WITH d(device) AS (VALUES {values}) SELECT (SELECT max(seq) FROM events e "
            "WHERE e.site = ? AND e.device = d.device) FROM d"
        )
        return [r[0] or 0 for r in self.db.execute(sql, (site,))]

    async def new_rows(self, site: str, marks: dict[str, int]) -> list[tuple[str, int]]:
        values = ",".join(f"('{d}', {m})" for d, m in marks.items())
        sql = (
            f"WITH w(device, last) AS (VALUES {values}) SELECT e.device, e.seq FROM w CROSS JOIN events e "
            "WHERE e.site = ? AND e.device = w.device AND e.seq > w.last"
        )
        return [(r[0], r[1]) for r in self.db.execute(sql, (site,))]

    async def publish_ts_us(self, site: str) -> dict[tuple[str, int], int]:
        rows = self.db.execute("SELECT device, seq, ts FROM events WHERE site = ?", (site,))
        return {(d, s): _us(dt.datetime.fromisoformat(ts)) for d, s, ts in rows}

    async def backend_pids(self) -> list[int]:
        return []  # SQLite runs inside the consumer process: its CPU is the consumer's

    async def dead_letters(self) -> dict[str, int]:
        return dict(self.db.execute(DEAD_BY_REASON).fetchall())

    async def signed(self, site: str) -> int:
        return int(self.db.execute(f"{SIGNED_COUNT} ?", (site,)).fetchone()[0])

    async def close(self) -> None:
        self.db.close()


class PgProbe:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @classmethod
    async def open(cls, host: str, port: int, database: str) -> PgProbe:
        import asyncpg

        conn = await asyncpg.connect(host=host, port=port, user="postgres", database=database)
        # The poller must read through the (site, device, seq) index whatever a young table's stats say.
        await conn.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        return cls(conn)

    async def count(self) -> int:
        return int(await self.conn.fetchval("SELECT count(*) FROM events"))

    async def max_seq(self, site: str, devices: list[str]) -> list[int]:
        rows = await self.conn.fetch(
            "SELECT (SELECT max(seq) FROM events e WHERE e.site = $1 AND e.device = d.device) "
            "FROM unnest($2::text[]) WITH ORDINALITY AS d(device, n) ORDER BY d.n",
            site,
            devices,
        )
        return [r[0] or 0 for r in rows]

    async def new_rows(self, site: str, marks: dict[str, int]) -> list[tuple[str, int]]:
        rows = await self.conn.fetch(
            "SELECT e.device, e.seq FROM unnest($2::text[], $3::bigint[]) AS w(device, last) "
            "CROSS JOIN LATERAL (SELECT device, seq FROM events e WHERE e.site = $1 AND e.device = w.device "
            "AND e.seq > w.last OFFSET 0) e",  # OFFSET 0: no flattening into a join over the whole site
            site,
            list(marks),
            list(marks.values()),
        )
        return [(r[0], r[1]) for r in rows]

    async def publish_ts_us(self, site: str) -> dict[tuple[str, int], int]:
        rows = await self.conn.fetch("SELECT device, seq, ts FROM events WHERE site = $1", site)
        return {(r[0], r[1]): _us(r[2]) for r in rows}

    async def backend_pids(self) -> list[int]:
        rows = await self.conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return [r[0] for r in rows]

    async def dead_letters(self) -> dict[str, int]:
        return {r[0]: r[1] for r in await self.conn.fetch(DEAD_BY_REASON)}

    async def signed(self, site: str) -> int:
        return int(await self.conn.fetchval(f"{SIGNED_COUNT} $1", site))

    async def close(self) -> None:
        await self.conn.close()


# -- orchestration --------------------------------------------------------------------------------------
@dataclass
class Ctx:
    args: argparse.Namespace
    workdir: Path
    broker: LocalMosquitto
    mosquitto_pid: int | None
    pg: LocalPostgres | None
    devices: list[str]
    children: list[BaseProcess] = field(default_factory=list)
    db_serial: int = 0
    load_at_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    code_at_start: str = ""
    nodered: dict[str, Any] | None = None
    micro: dict[str, float] = field(default_factory=dict)  # in-process figures of bench/ingest_costs.py


class ChildFailed(RuntimeError):
    pass


@dataclass
class Child:
    """A child process and its pipe; messages are ("kind", payload) tuples, kept until asked for."""

    proc: BaseProcess
    conn: Connection
    inbox: dict[str, Any] = field(default_factory=dict)
    closed: bool = False

    @property
    def name(self) -> str:
        return self.proc.name

    def pump(self) -> None:
        """Read whatever the child sent; raise ChildFailed on a reported error."""
        while not self.closed:
            try:
                if not self.conn.poll():
                    return
                tag, payload = self.conn.recv()
            except (EOFError, OSError):
                self.closed = True  # the child is gone or going: its pipe is at EOF
                return
            if tag == "error":
                raise ChildFailed(f"{self.name} failed:\n{payload}")
            self.inbox[tag] = payload

    def check(self, *finished_with: str) -> None:
        """Raise at once (not at a timeout) if the child died without leaving one of these messages."""
        self.pump()
        if not self.proc.is_alive() and not any(k in self.inbox for k in finished_with):
            raise ChildFailed(f"{self.name} exited (code {self.proc.exitcode}) in the middle of a run")

    async def expect(self, kind: str, timeout_s: float) -> Any:
        """Wait for a ("kind", payload) message; raise if the child reports an error or dies first."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.pump()
            if kind in self.inbox:
                return self.inbox.pop(kind)
            if self.closed or not self.proc.is_alive():
                self.pump()
                if kind in self.inbox:
                    return self.inbox.pop(kind)
                raise ChildFailed(f"{self.name} exited (code {self.proc.exitcode}) before sending {kind!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {kind!r} within {timeout_s:.0f} s")
            await asyncio.sleep(0.005)

    def send(self, message: str) -> None:
        self.conn.send(message)


def spawn(ctx: Ctx, name: str, target: Callable[..., None], *args: Any) -> Child:
    parent_end, child_end = MP.Pipe()
    proc = MP.Process(target=target, name=name, args=(child_end, os.getpid(), *args), daemon=True)
    proc.start()
    child_end.close()
    ctx.children.append(proc)
    return Child(proc, parent_end)


def stop_child(proc: BaseProcess, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
    if proc.is_alive() and proc.pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
        proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


def purge_session(ctx: Ctx, client_id: str) -> None:
    """Drop a persistent session (and its shared-subscription membership) left by a stopped consumer:
    an offline member of a share group keeps its share of later messages queued."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect(ctx.broker.host, ctx.broker.port, clean_start=True, properties=connect_props())
    c.loop_start()
    try:
        deadline = time.monotonic() + 5
        while not c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        c.disconnect()
        c.loop_stop()


def publish_probe(ctx: Ctx, seq: int) -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{os.getpid()}", protocol=mqtt.MQTTv5)
    c.connect(ctx.broker.host, ctx.broker.port, clean_start=True, properties=connect_props())
    c.loop_start()
    try:
        payload = envelope_bytes(PROBE_SITE, PROBE_DEVICE, seq, "bench-probe", dt.datetime.now(dt.UTC))
        c.publish(topics.event(PROBE_SITE, PROBE_DEVICE, EVENT_TYPE), payload, qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def cpu_of(pids: list[int]) -> dict[int, float]:
    return {p: c for p in pids if (c := proc_cpu_s(p)) is not None}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(v - before.get(p, 0.0) for p, v in after.items())


async def fresh_store(ctx: Ctx, backend: str, tag: str) -> str:
    ctx.db_serial += 1
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{ctx.workdir / f'{tag}-{ctx.db_serial}.db'}"
    assert ctx.pg is not None
    return await asyncio.to_thread(ctx.pg.create_database, f"bench_{tag}_{ctx.db_serial}")


async def open_probe(ctx: Ctx, url: str) -> StoreProbe:
    if url.startswith("sqlite"):
        return SqliteProbe(Path(url.split(":///", 1)[1]))
    assert ctx.pg is not None
    return await PgProbe.open(ctx.pg.host, ctx.pg.port, url.rsplit("/", 1)[1])


@dataclass
class ConsumerRun:
    child: Child
    pid: int
    instance: str
    probe: StoreProbe
    base_count: int
    counters: dict[str, Any] = field(default_factory=dict)


async def _landed(probe: StoreProbe, within_s: float) -> bool:
    """Whether a probe event is in the store, polling every 10 ms for at most within_s."""
    until = time.monotonic() + within_s
    while True:
        if (await probe.max_seq(PROBE_SITE, [PROBE_DEVICE]))[0]:
            return True
        if time.monotonic() > until:
            return False
        await asyncio.sleep(0.01)


async def start_consumer(
    ctx: Ctx,
    url: str,
    tag: str,
    instance: str | None = None,
    landed: bool = True,
    ingest: dict[str, Any] | None = None,
) -> ConsumerRun:
    """Start the consumer process and return once an event published on a device topic is in its store
    (``landed``), or as soon as it is connected (a drain: its session's backlog flows at once). ``ingest``
    overrides the consumer's ingest defaults."""
    instance = instance or f"bench-{tag}-{os.getpid()}"
    host, port = ctx.broker.host, ctx.broker.port
    child = spawn(ctx, f"consumer-{tag}", consumer_main, url, host, port, instance, ingest or {})
    pid = await child.expect("ready", 120)
    probe = await open_probe(ctx, url)
    run = ConsumerRun(child, pid, instance, probe, 0)
    if not landed:
        return run
    deadline = time.monotonic() + 60
    seq = 0
    while True:
        seq += 1
        await asyncio.to_thread(publish_probe, ctx, seq)
        child.check()
        if await _landed(probe, 1.0):
            break
        if time.monotonic() > deadline:
            raise TimeoutError("the consumer stored no probe event within 60 s")
    await asyncio.sleep(0.2)  # let any other probe in flight land before taking the base count
    run.base_count = await probe.count()
    return run


async def stop_consumer(ctx: Ctx, run: ConsumerRun, purge: bool = True) -> None:
    with contextlib.suppress(Exception):
        await run.probe.close()
    proc = run.child.proc
    if proc.is_alive() and proc.pid is not None:
        os.kill(proc.pid, signal.SIGTERM)
    with contextlib.suppress(ChildFailed, TimeoutError):
        run.counters = await run.child.expect("counters", 15)
    stop_child(proc)
    if purge:
        await asyncio.to_thread(purge_session, ctx, f"consumer-{run.instance}")


def gen_spec(ctx: Ctx, events: int, rate: float, subscribe_stored: bool, backlog: Backlog = PLAIN) -> GenSpec:
    a = ctx.args
    return GenSpec(
        host=ctx.broker.host,
        port=ctx.broker.port,
        site=SITE,
        devices=ctx.devices,
        events=events,
        rate=rate,
        window=a.window,
        subscribe_stored=subscribe_stored,
        deadline_s=a.timeout,
        backlog=backlog,
    )


async def run_bare(ctx: Ctx) -> dict[str, Any]:
    """The bare subscriber, live (as the consumer run) and then draining the same N from a queue."""
    n = ctx.args.events
    rm = IngestConfig().receive_maximum
    host, port = ctx.broker.host, ctx.broker.port
    bare_sub = spawn(ctx, "bare-subscriber", bare_main, host, port, n, rm, False)
    gen_proc = spawn(ctx, "generator-bare", generator_main, gen_spec(ctx, n, 0, False))
    try:
        await bare_sub.expect("ready", 60)
        await gen_proc.expect("ready", 120)
        mosq = [ctx.mosquitto_pid] if ctx.mosquitto_pid else []
        cpu0 = cpu_of(mosq)
        gen_proc.send("go")
        bare = await bare_sub.expect("result", ctx.args.timeout)
        cpu1 = cpu_of(mosq)
        gen = await gen_proc.expect("result", 60)
    finally:
        stop_child(gen_proc.proc)
        stop_child(bare_sub.proc)
    complete = bare["count"] >= n
    span = (bare["t_last"] - gen["t_first"]) / 1e9 if complete else float("nan")
    out = {
        "msgs_s": n / span,
        "span_s": span,
        "cpu_per_100k": bare["cpu_s"] * 100_000 / n,
        "gen_pub_s": n / ((gen["t_acked"] - gen["t_first"]) / 1e9),
        "gen_cpu_per_100k": gen["cpu_s"] * 100_000 / n,
        "broker_cpu_per_100k": cpu_delta(cpu0, cpu1) * 100_000 / n if mosq else float("nan"),
        "lag_after_last_ack_ms": (bare["t_last"] - gen["t_acked"]) / 1e6 if complete else float("nan"),
    }
    bare_sub = spawn(ctx, "bare-subscriber-backlog", bare_main, host, port, n, rm, True)
    gen_proc = spawn(ctx, "generator-backlog", generator_main, gen_spec(ctx, n, 0, False))
    try:
        await bare_sub.expect("ready", 60)
        await gen_proc.expect("ready", 120)
        gen_proc.send("go")
        await gen_proc.expect("result", ctx.args.timeout)  # all N PUBACKed: queued for the session
        bare_sub.send("go")
        drained = await bare_sub.expect("result", ctx.args.timeout)
    finally:
        stop_child(gen_proc.proc)
        stop_child(bare_sub.proc)
        if bare_sub.proc.pid is not None:  # a persistent session left behind would queue later runs' copies
            await asyncio.to_thread(purge_session, ctx, f"bench-bare-{bare_sub.proc.pid}")
    ok = drained["count"] >= n
    out["backlog_msgs_s"] = n / ((drained["t_last"] - drained["t_start"]) / 1e9) if ok else float("nan")
    out["backlog_cpu_per_100k"] = drained["cpu_s"] * 100_000 / n if ok else float("nan")
    return out


async def run_throughput(ctx: Ctx, backend: str) -> dict[str, Any]:
    n = ctx.args.events
    url = await fresh_store(ctx, backend, "thr")
    gen_proc = spawn(ctx, "generator-throughput", generator_main, gen_spec(ctx, n, 0, False))
    run = await start_consumer(ctx, url, f"{backend}-thr")
    try:
        await gen_proc.expect("ready", 120)
        probe = run.probe
        last = per_device_counts(n, len(ctx.devices))
        mosq = [ctx.mosquitto_pid] if ctx.mosquitto_pid else []
        db0 = cpu_of(await probe.backend_pids())
        cpu0 = cpu_of([run.pid, *mosq])
        polls = 0
        gen_proc.send("go")
        deadline = time.monotonic() + ctx.args.timeout
        t_done = 0
        stored = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(THROUGHPUT_POLL_S)
            run.child.check()
            gen_proc.check("result")
            polls += 1
            if all(m >= want for m, want in zip(await probe.max_seq(SITE, ctx.devices), last, strict=True)):
                t_done = time.monotonic_ns()
                stored = await probe.count() - run.base_count
                if stored >= n:
                    break
                t_done = 0
        cpu1 = cpu_of([run.pid, *mosq])
        db1 = cpu_of(await probe.backend_pids())
        if not t_done:
            stored = await probe.count() - run.base_count
        gen = await gen_proc.expect("result", 60)
    finally:
        stop_child(gen_proc.proc)
        await stop_consumer(ctx, run)
    span = (t_done - gen["t_first"]) / 1e9 if t_done else float("nan")
    return {
        "events_s": n / span,
        "span_s": span,
        "stored": stored,
        "complete": bool(t_done),
        "cpu_per_100k": cpu_delta({run.pid: cpu0.get(run.pid, 0.0)}, {run.pid: cpu1.get(run.pid, 0.0)}) * 100_000 / n,
        "broker_cpu_per_100k": (
            (cpu1.get(mosq[0], 0.0) - cpu0.get(mosq[0], 0.0)) * 100_000 / n if mosq else float("nan")
        ),
        "db_cpu_per_100k": cpu_delta(db0, db1) * 100_000 / n if backend == "postgres" else float("nan"),
        "gen_pub_s": n / ((gen["t_acked"] - gen["t_first"]) / 1e9),
        "gen_cpu_per_100k": gen["cpu_s"] * 100_000 / n,
        "counters": run.counters,
        "polls": polls,
    }


async def run_latency(ctx: Ctx, backend: str, wait_ms: int) -> dict[str, Any]:
    """The offered rate for the run's length, the consumer's batch window set to ``wait_ms``."""
    a = ctx.args
    n = int(a.rate * a.latency_seconds)
    url = await fresh_store(ctx, backend, "lat")
    gen_proc = spawn(ctx, "generator-latency", generator_main, gen_spec(ctx, n, a.rate, True))
    run = await start_consumer(ctx, url, f"{backend}-lat", ingest={"batch_wait_ms": wait_ms})
    try:
        await gen_proc.expect("ready", 120)
        probe = run.probe
        marks = dict.fromkeys(ctx.devices, 0)
        visible: dict[tuple[str, int], int] = {}
        db0 = cpu_of(await probe.backend_pids())
        cpu0 = proc_cpu_s(run.pid) or 0.0
        me0 = time.process_time()
        t0 = time.monotonic()
        gen_proc.send("go")
        deadline = t0 + a.latency_seconds + 30
        polls = 0
        t_last_visible = t0
        while len(visible) < n and time.monotonic() < deadline:
            await asyncio.sleep(LATENCY_POLL_S)
            if polls % 100 == 0:
                run.child.check()
                gen_proc.check("result")
            rows = await probe.new_rows(SITE, marks)
            now = time.time_ns()
            polls += 1
            touched = set()
            for dev, seq in rows:
                if (dev, seq) not in visible:
                    visible[(dev, seq)] = now
                    touched.add(dev)
            for dev in touched:
                while (dev, marks[dev] + 1) in visible:
                    marks[dev] += 1
            if touched:
                t_last_visible = time.monotonic()
        wall = t_last_visible - t0
        poller_cpu = time.process_time() - me0
        consumer_cpu = (proc_cpu_s(run.pid) or 0.0) - cpu0
        db_cpu = cpu_delta(db0, cpu_of(await probe.backend_pids()))
        published = await probe.publish_ts_us(SITE)
        gen = await gen_proc.expect("result", 60)
    finally:
        stop_child(gen_proc.proc)
        await stop_consumer(ctx, run)
    vis_ms = sorted((visible[k] / 1000 - published[k]) / 1000 for k in visible if k in published)
    ack_ms = sorted(us / 1000 for us in gen["stored_us"])
    offered = n / ((gen["t_last_pub"] - gen["t_first"]) / 1e9) if n > 1 else float("nan")
    return {
        "events": n,
        "offered_s": offered,
        "visible": len(visible),
        "vis_p50": percentile(vis_ms, 50),
        "vis_p99": percentile(vis_ms, 99),
        "vis_max": vis_ms[-1] if vis_ms else float("nan"),
        "ack_p50": percentile(ack_ms, 50),
        "ack_p99": percentile(ack_ms, 99),
        "ack_max": ack_ms[-1] if ack_ms else float("nan"),
        "unconfirmed": gen["unconfirmed"],
        "poll_ms": wall * 1000 / polls if polls else float("nan"),
        "consumer_core_pct": 100 * consumer_cpu / wall if wall > 0 else float("nan"),
        "db_core_pct": 100 * db_cpu / wall if backend == "postgres" and wall > 0 else float("nan"),
        "poller_core_pct": 100 * poller_cpu / wall if wall > 0 else float("nan"),
        "counters": run.counters,
    }


async def queue_backlog(ctx: Ctx, name: str, spec: GenSpec) -> None:
    """Publish ``spec``'s events and return once the broker has acknowledged them all (queued for a stopped
    session), so the drain that follows has no generator beside it."""
    gen = spawn(ctx, name, generator_main, spec)
    try:
        await gen.expect("ready", 120 + spec.events / 2_000)  # signed: tens of µs an event go before "ready"
        gen.send("go")
        await gen.expect("result", ctx.args.timeout)
    finally:
        stop_child(gen.proc)


async def run_drain(ctx: Ctx, backend: str, backlog: Backlog = PLAIN) -> dict[str, Any]:
    """Drain mode: N queued for the consumer's persistent session while it is stopped (so the generator is not
    the ceiling), then drained. Figure: N / (started -> all N accounted for: stored or dead-lettered); CPU over
    the same window. ``backlog`` says what the events hold and what the store refuses (issues 16 and 24)."""
    from bench import ingest_costs

    n = ctx.args.events
    url = await fresh_store(ctx, backend, "drain")
    first = await start_consumer(ctx, url, f"{backend}-drain")  # its session subscribes the shared group
    base = first.base_count
    await stop_consumer(ctx, first, purge=False)
    await ingest_costs.prepare_store(url, backlog, ctx.devices)  # migrated by the first start
    await queue_backlog(ctx, "generator-drain", gen_spec(ctx, n, 0, False, backlog))
    want = Expected.of(n, len(ctx.devices), backlog.poison_permille)
    run = await start_consumer(ctx, url, f"{backend}-drain", instance=first.instance, landed=False)
    run.base_count = base
    try:
        t0, cpu_before = await run.child.expect("started", 30)
        t_done, cpu_after = await wait_accounted(ctx, run, want)
        stored, dead = await run.probe.count() - base, await run.probe.dead_letters()
        signed = await run.probe.signed(SITE) if backlog.signed else None
    finally:
        await stop_consumer(ctx, run)
    span = (t_done - t0) / 1e9 if t_done else float("nan")
    mismatch = accounting(want, stored, dead, signed, run.counters)
    if mismatch:
        print(f"!!! [{backend}] drain of {backlog}: MISMATCH: {mismatch}", file=sys.stderr, flush=True)
    return {
        "events_s": n / span,
        "stored_s": stored / span,
        "span_s": span,
        "stored": stored,
        "poisoned": want.rejected,
        "rejected": dead.get(REJECTED, 0),
        "mismatch": mismatch,
        "complete": bool(t_done),
        "cpu_per_100k": (cpu_after - cpu_before) * 100_000 / n if t_done else float("nan"),
        "counters": run.counters,
    }


async def wait_accounted(ctx: Ctx, run: ConsumerRun, want: Expected) -> tuple[int, float]:
    """Poll until every queued event is accounted for: each device's last storable seq visible (the cheap check),
    then all N stored or dead-lettered. Returns (monotonic ns, consumer CPU s) at that poll; (0, 0.0) at timeout."""
    deadline = time.monotonic() + ctx.args.timeout
    while time.monotonic() < deadline:
        await asyncio.sleep(THROUGHPUT_POLL_S)
        run.child.check()
        if all(m >= w for m, w in zip(await run.probe.max_seq(SITE, ctx.devices), want.last, strict=True)):
            t_done, cpu = time.monotonic_ns(), proc_cpu_s(run.pid) or 0.0
            stored = await run.probe.count() - run.base_count
            if stored >= want.events or stored + sum((await run.probe.dead_letters()).values()) >= want.events:
                return t_done, cpu
    return 0, 0.0


REJECTED = "store_rejected"


def accounting(want: Expected, stored: int, dead: dict[str, int], signed: int | None, counters: dict[str, Any]) -> str:
    """What does not add up after a drain ('' when all does): every event stored but the poisoned, each of those
    one store_rejected dead letter (in the store and in the consumer's counter), no other dead letter, and, when
    signed, every stored event with a verified signature (an unknown key would store it unverified)."""
    problems = []
    if stored != want.stored:
        problems.append(f"stored {stored:,}, expected {want.stored:,}")
    if dead.get(REJECTED, 0) != want.rejected:
        problems.append(f"{dead.get(REJECTED, 0):,} {REJECTED} dead letters for {want.rejected:,} poisoned events")
    if counters.get(REJECTED, want.rejected) != want.rejected:
        problems.append(f"the consumer counted {counters[REJECTED]:,} {REJECTED} for {want.rejected:,} poisoned")
    if other := {reason: count for reason, count in dead.items() if reason != REJECTED}:
        problems.append(f"other dead letters {other}")
    if signed is not None and signed != stored:
        problems.append(f"{signed:,} of {stored:,} stored events carry a verified signature")
    return "; ".join(problems)


async def run_receiver_bare(ctx: Ctx) -> dict[str, Any]:
    """The chosen client bare (broker/ingest/receive.py on uvloop, as the consumer runs), counting only: N queued
    for its session, then drained (bench/receive.py's child, acknowledging each batch)."""
    from bench import receive as rcv

    n, rm, kind = ctx.args.events, IngestConfig().receive_maximum, "receiver-uvloop"
    port = ctx.broker.port
    await asyncio.to_thread(rcv.make_sessions, port, rm, (kind,))
    await queue_backlog(ctx, "generator-receiver", gen_spec(ctx, n, 0, False))
    try:
        res = await asyncio.to_thread(rcv.drain, kind, port, n, rm)
    finally:
        await asyncio.to_thread(purge_session, ctx, f"bench-{kind}")
    ok = res["received"] >= n
    return {
        "msgs_s": n / res["wall_s"] if ok else float("nan"),
        "cpu_per_100k": res["cpu_s"] * 100_000 / n if ok else float("nan"),
    }


async def repeated(ctx: Ctx, what: str, run: Callable[[], Any]) -> dict[str, Any]:
    """``run`` ``--repeats`` times; the median of every figure, and the runs' main figure kept as ``runs``."""
    results = []
    for i in range(ctx.args.repeats):
        print(f"  {what}, run {i + 1} of {ctx.args.repeats} ...", flush=True)
        results.append(await run())
    return medians(results)


async def interleaved(ctx: Ctx, what: str, runs: dict[str, Callable[[], Awaitable[dict[str, Any]]]]) -> dict[str, Any]:
    """Each of ``runs`` once per repeat, in turn (A B A B ...), so a drift in the machine's load falls on all of
    them alike; the medians of each, keyed as ``runs``, and the load average once they are done."""
    got: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for i in range(ctx.args.repeats):
        for name, run in runs.items():
            print(f"  {what}: {name}, run {i + 1} of {ctx.args.repeats} ...", flush=True)
            got[name].append(await run())
    return {**{name: medians(results) for name, results in got.items()}, "load": os.getloadavg()}


def medians(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of every numeric figure; the runs' main figure as ``runs``, every run whole as ``each``."""
    out = dict(results[0])
    for key, value in results[0].items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            values = [r[key] for r in results if isinstance(r.get(key), int | float)]
            out[key] = statistics.median(values)
    main = next((k for k in ("events_s", "msgs_s") if k in out), None)
    out["runs"] = [r[main] for r in results] if main else []
    out["each"] = results
    return out


async def run_nodered_peer(ctx: Ctx) -> dict[str, Any] | None:
    """Node-RED with batched SQLite inserts at synchronous=FULL (bench/nodered.py), live, medians; None when
    it is not installed (``python -m bench.nodered --install``)."""
    from bench import nodered

    if not nodered.installed():
        return None
    out = await repeated(ctx, "Node-RED", lambda: nodered.run_nodered(ctx))
    out["versions"] = nodered.versions()
    return out


async def run_rules(ctx: Ctx, backend: str) -> list[dict[str, Any]]:
    """Rules on vs off through the consumer's commit stage at 0, 1 and 5 % state changes (bench/alerts.py), and
    the SLA clock's first tick after each (after 5 %: the storm)."""
    from bench import alerts

    a, rows = ctx.args, []
    for changes in (0.0, 0.01, 0.05):
        url_off, url_on = await fresh_store(ctx, backend, "rules"), await fresh_store(ctx, backend, "rules")
        off, _ = await alerts.rule_throughput(url_off, a.kiosks, a.rules_events, changes, with_rules=False)
        on, ticks = await alerts.rule_throughput(url_on, a.kiosks, a.rules_events, changes, with_rules=True)
        rows.append({"changes": changes, "off": off, "on": on, "open": alerts._open_incidents[0], "ticks": ticks})
        print(f"[{backend}]   rules at {changes:.0%}: {on:,.0f} vs {off:,.0f} events/s", flush=True)
    return rows


async def run_backend(ctx: Ctx, backend: str) -> dict[str, Any]:
    from bench import ingest_costs

    out: dict[str, Any] = {"backend": backend}
    print(f"[{backend}] bare subscriber, {ctx.args.events:,} events ...", flush=True)
    out["bare"] = await repeated(ctx, "bare paho", lambda: run_bare(ctx))
    b = out["bare"]
    print(
        f"[{backend}]   {b['msgs_s']:,.0f} msg/s live, {b['backlog_msgs_s']:,.0f} msg/s draining a queue",
        flush=True,
    )
    print(f"[{backend}] consumer throughput, {ctx.args.events:,} events ...", flush=True)
    out["thr"] = await repeated(ctx, "consumer live", lambda: run_throughput(ctx, backend))
    print(f"[{backend}]   {out['thr']['events_s']:,.0f} events/s", flush=True)
    print(f"[{backend}] bare receiver, {ctx.args.events:,} queued ...", flush=True)
    out["rx"] = await repeated(ctx, "bare receiver", lambda: run_receiver_bare(ctx))
    print(f"[{backend}] consumer drain, {ctx.args.events:,} queued ...", flush=True)
    out["drain"] = await repeated(ctx, "consumer drain", lambda: run_drain(ctx, backend))
    print(f"[{backend}]   {out['drain']['events_s']:,.0f} events/s draining", flush=True)
    if ctx.args.latency_seconds > 0:
        out["lat"] = []
        for wait_ms in ctx.args.batch_wait_ms:
            print(
                f"[{backend}] latency, {ctx.args.rate:,.0f} events/s for {ctx.args.latency_seconds:g} s, "
                f"batch window {wait_ms} ms ...",
                flush=True,
            )
            lat = await run_latency(ctx, backend, wait_ms)
            out["lat"].append(lat | {"wait_ms": wait_ms})
            print(f"[{backend}]   visible p50 {lat['vis_p50']:.1f} ms, p99 {lat['vis_p99']:.1f} ms", flush=True)
    if ctx.args.rules_events:
        print(f"[{backend}] rules on vs off, {ctx.args.rules_events:,} events ...", flush=True)
        out["rules"] = await run_rules(ctx, backend)
    return {**out, **await ingest_costs.run_comparisons(ctx, backend)}


# -- report ---------------------------------------------------------------------------------------------
def _cmd_out(argv: list[str]) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return (r.stdout or r.stderr).strip().splitlines()[0] if (r.stdout or r.stderr).strip() else "unknown"


def machine() -> dict[str, str]:
    cpu, mem = cpu_model(), memory_total()
    try:
        pg = _cmd_out([str(find_pg_bin_dir() / "postgres"), "--version"])
    except RuntimeError as exc:
        pg = f"not found ({exc})"
    libs = []
    for name in ("paho-mqtt", "pydantic", "SQLAlchemy", "aiosqlite", "asyncpg", "uvloop"):
        try:
            libs.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            libs.append(f"{name} absent")
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "Mosquitto": _cmd_out([str(find_mosquitto()), "-h"]),
        "PostgreSQL": pg,
        "SQLite": sqlite3.sqlite_version,
        "libraries": ", ".join(libs),
    }


def code_state() -> str:
    """The code the bench exercises (broker/, protocol/): the last commit that touched it, plus a digest of
    uncommitted changes. Others edit the product while a run is going."""
    last = _cmd_out(["git", "log", "-1", "--format=%h", "--", *PRODUCT_PATHS])
    diff = subprocess.run(["git", "diff", "HEAD", "--", *PRODUCT_PATHS], capture_output=True, check=False).stdout
    dirty = f" + uncommitted changes {hashlib.sha1(diff).hexdigest()[:8]}" if diff else ""
    return f"{'/, '.join(PRODUCT_PATHS)}/ as of {last}{dirty}"


def _f(value: float, spec: str = ",.0f") -> str:
    return "n/a" if value != value else format(value, spec)  # nan check


def render(ctx: Ctx, results: list[dict[str, Any]], command: str, started: str, elapsed: float) -> str:
    from bench import ingest_costs

    a = ctx.args
    ing = IngestConfig()
    lines = [
        f"# Ingest benchmark, {started}",
        "",
        f"Command: `{command}` (finished in {elapsed:.0f} s)",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine().items()),
        f"| product code (git) | {ctx.code_at_start}"
        + (
            f" (HEAD {_cmd_out(['git', 'rev-parse', '--short', 'HEAD'])}) |"
            if (end := code_state()) == ctx.code_at_start
            else f" at start, {end} at end: CHANGED DURING THE RUN, the figures mix versions |"
        ),
        f"| load average 1/5/15 min | {' '.join(f'{x:.2f}' for x in ctx.load_at_start)} at start, "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at end (measured; nproc {len(os.sched_getaffinity(0))}) |",
        "",
        f"Load: {a.events:,} `attendance.punch` envelopes (~{a.payload_bytes} bytes), {a.devices} devices, "
        f"QoS 1, MQTT v5, at most {a.window} unacknowledged publishes per device, one generator process. "
        f"Consumer defaults: batch {ing.batch_size} or {ing.batch_wait_ms} ms, receive maximum "
        f"{ing.receive_maximum}. Broker: LocalMosquitto (test limits) with `{MOSQUITTO_EXTRA.strip()}`.",
        "",
        "## Throughput",
        "",
        "| backend | bare subscriber msg/s (live) | consumer events/s | consumer / bare (live) "
        "| bare subscriber msg/s (draining a queue) | consumer / bare (queue) | consumer CPU s / 100k "
        "| broker CPU s / 100k | PostgreSQL backends CPU s / 100k | commits (avg size) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        b, t = r["bare"], r["thr"]
        c = t["counters"]
        batches = f"{c['batches']:,} ({c['stored'] / c['batches']:.0f})" if c.get("batches") else "n/a"
        done = "" if t["complete"] else f" (INCOMPLETE: {t['stored']:,} stored)"
        lines.append(
            f"| {r['backend']} | {_f(b['msgs_s'])} | {_f(t['events_s'])}{done} | "
            f"{_f(t['events_s'] / b['msgs_s'], '.2f')} | {_f(b['backlog_msgs_s'])} | "
            f"{_f(t['events_s'] / b['backlog_msgs_s'], '.2f')} | {_f(t['cpu_per_100k'], '.1f')} | "
            f"{_f(t['broker_cpu_per_100k'], '.1f')} | {_f(t['db_cpu_per_100k'], '.1f')} | {batches} |"
        )
    lines += [
        "",
        "- bare subscriber (live): N / (first publish -> Nth message counted); paho `loop_forever`, "
        f"automatic acks, shared subscription `{BARE_FILTER}`, receive maximum as the consumer's; "
        "run just before the consumer, same generator. When it ends within a few ms of the generator's "
        "last PUBACK (table below) it was paced by the generator: the live figure is then a lower bound.",
        "- bare subscriber (draining a queue): the same N queued for its persistent session first, then "
        "N / (reconnect -> Nth message): the subscriber's own ceiling, with no generator beside it.",
        "- consumer: N / (first publish -> all N rows visible in `events`), found by a "
        f"{THROUGHPUT_POLL_S * 1000:.0f} ms per-device `max(seq)` poll and confirmed by `SELECT count(*)`. "
        "The generator is faster, so the consumer drains most of the run from the broker's queue.",
        "- CPU: utime+stime from /proc/<pid>/stat over the same window (10 ms ticks); PostgreSQL backends "
        "are the server processes serving the consumer's database (SQLite's cost is inside the consumer).",
        "",
        "| backend | generator publish msg/s (bare run / consumer run) | bare live: last message after "
        "last PUBACK | bare CPU s / 100k (live / queue) | generator CPU s / 100k "
        "| broker CPU s / 100k (bare run) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        b, t = r["bare"], r["thr"]
        lines.append(
            f"| {r['backend']} | {_f(b['gen_pub_s'])} / {_f(t['gen_pub_s'])} | "
            f"{_f(b['lag_after_last_ack_ms'], '.0f')} ms | {_f(b['cpu_per_100k'], '.1f')} / "
            f"{_f(b['backlog_cpu_per_100k'], '.1f')} | {_f(b['gen_cpu_per_100k'], '.1f')} | "
            f"{_f(b['broker_cpu_per_100k'], '.1f')} |"
        )
    if any("lat" in r for r in results):
        lines += [
            "",
            "## Latency at a fixed offered rate",
            "",
            "| backend | batch window ms | offered events/s | events | visible | "
            "publish -> visible p50 / p99 / max ms | publish -> `stored` at device p50 / p99 / max ms | "
            "consumer % of a core | "
            "PostgreSQL backends % of a core | poll period ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r, x in ((one, x) for one in results for x in one.get("lat", [])):
            lines.append(
                f"| {r['backend']} | {x['wait_ms']} | {_f(x['offered_s'])} | {x['events']:,} | {x['visible']:,} | "
                f"{_f(x['vis_p50'], '.1f')} / {_f(x['vis_p99'], '.1f')} / {_f(x['vis_max'], '.1f')} | "
                f"{_f(x['ack_p50'], '.1f')} / {_f(x['ack_p99'], '.1f')} / {_f(x['ack_max'], '.1f')} | "
                f"{_f(x['consumer_core_pct'], '.1f')} | {_f(x['db_core_pct'], '.1f')} | "
                f"{_f(x['poll_ms'], '.2f')} |"
            )
        lines += [
            "",
            "- publish -> visible: the envelope's `ts` is the generator's wall clock at publish "
            f"(microseconds); another process polls every {LATENCY_POLL_S * 1000:.0f} ms for rows not yet "
            "seen and stamps "
            "each with the end of the first query that returned it: an upper bound of publish -> commit, "
            "resolution one poll period (last column).",
            "- publish -> `stored` at device: the generator's clock from publish to receiving the consumer's "
            "`stored` confirmation (sent after commit and PUBACKs, one broker hop later).",
            "- consumer % of a core: utime+stime over the run / wall time of the run. The 2 ms poller itself "
            "used "
            + ", ".join(
                f"{_f(x['poller_core_pct'], '.0f')} % ({r['backend']}, {x['wait_ms']} ms)"
                for r in results
                for x in r.get("lat", [])
            )
            + " of a core.",
        ]
    lines += _render_issue19(ctx, results)
    lines += ingest_costs.render(ctx, results)
    lines += ["", f"Load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}."]
    return "\n".join(lines) + "\n"


def _render_issue19(ctx: Ctx, results: list[dict[str, Any]]) -> list[str]:
    """Drain mode beside the bare subscribers and Node-RED, live mode's generator margin, rules on vs off and
    the SLA tick (issue 19's figures, medians of ``--repeats``)."""
    a, red = ctx.args, ctx.nodered
    lines = [
        "",
        f"## Issue 19 figures (medians of {a.repeats}; each run's figure in brackets)",
        "",
        "| backend | consumer drain events/s | CPU s / 100k | bare receiver (uvloop) msg/s | CPU s / 100k "
        "| bare paho drain msg/s | consumer live events/s | generator / consumer (live) | Node-RED events/s "
        "| consumer drain / Node-RED |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    red_s = red["events_s"] if red else float("nan")
    for r in results:
        d, x, b, t = r["drain"], r["rx"], r["bare"], r["thr"]
        runs = ", ".join(_f(v) for v in d["runs"])
        lines.append(
            f"| {r['backend']} | {_f(d['events_s'])} [{runs}] | {_f(d['cpu_per_100k'], '.2f')} | "
            f"{_f(x['msgs_s'])} | {_f(x['cpu_per_100k'], '.2f')} | {_f(b['backlog_msgs_s'])} | "
            f"{_f(t['events_s'])} | {_f(t['gen_pub_s'] / t['events_s'], '.1f')} | {_f(red_s)} | "
            f"{_f(d['events_s'] / red_s, '.2f')} |"
        )
    lines += [
        "",
        "- consumer drain: N queued for its stopped persistent session, then N / (consumer started, its connection "
        "included -> all N rows visible), acknowledgement after commit as always; CPU over the same window.",
        "- generator / consumer (live): the generator's publish rate over the consumer's; at 3 or more the live "
        "figure is the consumer's, below it the generator's.",
        "- Node-RED: "
        + (
            f"{red['versions']}, live (its run with the generator beside it), {_f(red['cpu_per_100k'], '.2f')} "
            f"CPU s / 100k, stored {red['stored']:,} ({red['distinct']:,} distinct); {red['flow']}."
            if red
            else "not run (`--no-nodered`, or not installed: `.venv/bin/python -m bench.nodered --install`)."
        ),
    ]
    if any("rules" in r for r in results):
        lines += [
            "",
            f"### Rules on vs off ({a.rules_events:,} events, {a.kiosks:,} kiosks, bench/alerts.py section 1)",
            "",
            "| backend | state changes | rules off events/s | rules on events/s | on / off | open incidents "
            "| first SLA tick ms | next tick ms | planning ms |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in results:
            for row in r.get("rules", []):
                lines.append(
                    f"| {r['backend']} | {row['changes']:.0%} | {_f(row['off'])} | {_f(row['on'])} | "
                    f"{_f(row['on'] / row['off'], '.2f')} | {row['open']:,} | {_f(row['ticks'][0], '.0f')} | "
                    f"{_f(row['ticks'][1], '.1f')} | {_f(row['ticks'][2], '.0f')} |"
                )
    return lines


# -- main -----------------------------------------------------------------------------------------------
def batch_windows(text: str) -> list[int]:
    """``20,5,0`` -> [20, 5, 0]: batch windows in ms, in the order given, each as ``ingest.batch_wait_ms`` allows."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of whole numbers: {text!r}") from None
    if not values or not all(0 <= v <= 5000 for v in values):
        raise argparse.ArgumentTypeError("each batch window must be within 0 .. 5000 ms")
    return values


def permilles(text: str) -> list[int]:
    """``1,10`` -> [1, 10]: shares of poisoned events, per mille, each within 1 .. 500."""
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of whole numbers: {text!r}") from None
    if not all(1 <= v <= 500 for v in values):
        raise argparse.ArgumentTypeError("each share of poisoned events must be within 1 .. 500 per mille")
    return values


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100_000, help="events per throughput run (default 100000)")
    p.add_argument("--devices", type=int, default=50, help="simulated devices (default 50)")
    p.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--rate", type=float, default=2000, help="offered events/s in the latency run")
    p.add_argument("--latency-seconds", type=float, default=10, help="latency run length (0: skip)")
    p.add_argument(
        "--batch-wait-ms",
        type=batch_windows,
        default=[IngestConfig().batch_wait_ms],
        help="the consumer's batch window in the latency run, one run each (e.g. 20,10,5,0; default: its default)",
    )
    p.add_argument("--window", type=int, default=100, help="unacknowledged publishes per device")
    p.add_argument("--timeout", type=float, default=300, help="cap on any one measured run, seconds")
    p.add_argument("--repeats", type=int, default=3, help="runs of each throughput figure, median reported")
    p.add_argument("--rules-events", type=int, default=50_000, help="events per rules on/off run (0: skip)")
    p.add_argument("--kiosks", type=int, default=1000, help="kiosks in the rules runs")
    p.add_argument("--no-nodered", action="store_true", help="leave Node-RED out")
    p.add_argument(
        "--poison-permille",
        type=permilles,
        default=[],
        help="issue 16: also drain with these shares (per mille, e.g. 1,10) of events the store refuses, beside a "
        "clean drain (default: off)",
    )
    p.add_argument("--signed", action="store_true", help="issue 24: also drain unsigned vs signed and verified")
    p.add_argument(
        "--results",
        type=Path,
        default=Path(__file__).parent / "results",
        help="directory for ingest-<date>.md",
    )
    a = p.parse_args(argv)
    if not 1_000 <= a.events <= 2_000_000:
        p.error("--events must be within 1,000 .. 2,000,000")
    if not 1 <= a.devices <= 1_000:
        p.error("--devices must be within 1 .. 1,000")
    if not 1 <= a.rate <= 50_000 or not 0 <= a.latency_seconds <= 120 or a.rate * a.latency_seconds > 1e6:
        p.error("--rate within 1 .. 50,000, --latency-seconds within 0 .. 120")
    if not 1 <= a.repeats <= 9 or not 0 <= a.rules_events <= 1_000_000 or not 1 <= a.kiosks <= 100_000:
        p.error("--repeats within 1 .. 9, --rules-events within 0 .. 1,000,000, --kiosks within 1 .. 100,000")
    if not 1 <= a.window <= 10_000 or not 10 <= a.timeout <= 3600:
        p.error("--window within 1 .. 10,000, --timeout within 10 .. 3600")
    a.payload_bytes = len(
        envelope_bytes(SITE, device_names(a.devices)[-1], a.events // a.devices, uuid.uuid4().hex[:16], SENTINEL_TS)
    )
    return a


async def amain(ctx: Ctx, backends: list[str]) -> list[dict[str, Any]]:
    results = []
    try:
        for backend in backends:
            results.append(await run_backend(ctx, backend))
        if not ctx.args.no_nodered:
            print(f"Node-RED, {ctx.args.events:,} events ...", flush=True)
            ctx.nodered = await run_nodered_peer(ctx)
    finally:
        for proc in ctx.children:
            stop_child(proc, timeout_s=5)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    command = f".venv/bin/python -m bench.ingest {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()
    started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t_start = time.monotonic()
    load_at_start = os.getloadavg()
    code_at_start = code_state()

    def on_signal(_sig: int, _frame: Any) -> None:
        # Ours, not asyncio.run's (which only cancels the main task, and a cancellation can be absorbed on
        # its way out): raise at once; the finally below stops every process. Later signals are ignored
        # so that the cleanup itself is not interrupted.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="hallfleet-bench-"))
    broker: LocalMosquitto | None = None
    pg: LocalPostgres | None = None
    ctx: Ctx | None = None
    try:
        broker = LocalMosquitto(workdir / "mosquitto", extra_conf=MOSQUITTO_EXTRA)
        broker.start()
        mosq_pids = [p for p in pids_with_cmdline(str(broker.conf_path)) if p != os.getpid()]
        if "postgres" in backends:
            pg = LocalPostgres(workdir / "postgres")
            pg.start()
        ctx = Ctx(args, workdir, broker, mosq_pids[0] if mosq_pids else None, pg, device_names(args.devices))
        ctx.load_at_start = load_at_start
        ctx.code_at_start = code_at_start
        print(
            f"Mosquitto {broker.host}:{broker.port}"
            + (f", PostgreSQL {pg.host}:{pg.port}" if pg else "")
            + f"; files in {workdir}; load average {' '.join(f'{x:.2f}' for x in load_at_start)}",
            flush=True,
        )
        results = asyncio.run(amain(ctx, backends))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything started here", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if ctx is not None:
            for proc in ctx.children:
                stop_child(proc, timeout_s=5)
        if pg is not None:
            try:
                pg.stop()
            except RuntimeError as exc:
                print(f"warning: stopping PostgreSQL: {exc}", file=sys.stderr)
        if broker is not None:
            broker.stop()
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    assert ctx is not None
    text = render(ctx, results, command, started, time.monotonic() - t_start)
    print()
    print(text)
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"ingest-{dt.date.today().isoformat()}.md"
    if out.exists():  # keep the day's earlier runs: figures on a shared 2-core machine vary run to run
        text = out.read_text().rstrip("\n") + "\n\n---\n\n" + text
    out.write_text(text)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
