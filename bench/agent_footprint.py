"""Agent footprint: what one agent costs a device, how fast its outbox takes and gives back events, how fast
the CLI starts.

    .venv/bin/python -m bench.agent_footprint [--idle 600] [--events 50000] [--repeat 3]

1. Outbox append (agent/outbox.py used directly, a file in the work dir, the agent's defaults: WAL,
   synchronous=FULL, one waiting event committed at once, several waiting share a commit): one producer
   awaiting each append (a terminal taking one punch at a time): latency p50/p99 and events/s; then 64
   concurrent producers (a busy device: one fsync covers those waiting): events/s. Median of ``--repeat``
   runs, each on a fresh file.
2. Replay end to end: an agent process (``hallfleet agent``, role none) starts on an outbox holding
   ``--events`` events kept through an "outage", against a private Mosquitto and the consumer in its own
   process (bench/ingest.py's): process start -> all of them in the store. Events/s, median of ``--repeat``
   (each a device of its own).
3. Start-up: ``hallfleet --help`` (process start -> exit) and ``hallfleet agent --config ...`` (process start ->
   READY=1 on the notify socket, as systemd sees it), median of ``--repeat``.
4. Idle, per role: sim (one event, then nothing; beside it a sim emitting 1 event/s, its load), kiosk (receipt
   printer twin), attendance without a camera (fingerprint and QR twins),
   attendance with a camera (a looping video file: the face engine runs on every frame, so never idle),
   rating pad (keypad twin): one agent process each, side by side on the same broker and consumer, 30 s
   heartbeat; once each is online and its outbox empty, CPU % of a core over ``--idle`` s (10 minutes by
   default), then RSS (VmRSS, and its peak VmHWM), threads, and which hardware stacks it loaded.

The load average is measured at the start and at the end and printed as measured. Writes
bench/results/agent-footprint-<date>.md; asserts nothing. Every process started here stops on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import os
import shlex
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import OutboxConfig
from agent.outbox import Outbox
from bench._run import in_workdir, write_results
from bench.fleet import rss_kb, threads
from bench.ingest import (
    EVENT_TYPE,
    Ctx,
    _pdeathsig,
    envelope_bytes,
    fresh_store,
    machine,
    percentile,
    pids_with_cmdline,
    proc_cpu_s,
    start_consumer,
    stop_child,
    stop_consumer,
)
from broker.mosquitto.local import LocalMosquitto
from protocol import topics
from protocol.events import Lane
from tests.support.procs import write_toml

SITE = "bench-hall"
PRODUCERS = 64
# A stack's compiled part as it appears in /proc/PID/maps (pure-Python packages leave no trace there).
STACKS = {"cv2": "/cv2/", "numpy": "/numpy", "dlib": "dlib", "evdev": "/evdev/"}
RATING_KEYS = {f"KEY_{n}": f"rate_{n}" for n in range(1, 6)} | {"KEY_0": "service_end"}


def hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def builder(device: str, boot_id: str) -> Any:
    topic = topics.event(SITE, device, EVENT_TYPE)

    def build(seq: int) -> tuple[str, bytes]:
        return topic, envelope_bytes(SITE, device, seq, boot_id, dt.datetime.now(dt.UTC))

    return build


def new_outbox(path: Path) -> Outbox:
    d = OutboxConfig(path=path)
    return Outbox(path, max_critical=d.max_critical, max_telemetry=d.max_telemetry,
                  commit_interval_ms=d.commit_interval_ms, commit_batch=d.commit_batch)  # fmt: skip


# -- 1. appends -----------------------------------------------------------------------------------------
async def appends(path: Path, device: str, sequential: int, concurrent: int) -> dict[str, Any]:
    """One producer, then 64; the outbox keeps the concurrent run's events (the replay's outage)."""
    build = builder(device, uuid.uuid4().hex[:16])
    async with new_outbox(path) as box:
        lat = []
        t0 = time.perf_counter()
        for _ in range(sequential):
            t = time.perf_counter()
            await box.append(Lane.CRITICAL, build)
            lat.append(time.perf_counter() - t)
        one_s = sequential / (time.perf_counter() - t0)
        await box.confirm([(0, box.next_seq)])
        per = concurrent // PRODUCERS

        async def producer() -> None:
            for _ in range(per):
                await box.append(Lane.CRITICAL, build)

        t0 = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
        many_s = per * PRODUCERS / (time.perf_counter() - t0)
        lat.sort()
        return {"p50_ms": 1000 * percentile(lat, 50), "p99_ms": 1000 * percentile(lat, 99), "one_s": one_s,
                "many_s": many_s, "kept": box.depth}  # fmt: skip


# -- processes ------------------------------------------------------------------------------------------
def hallfleet(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    parent = os.getpid()
    return subprocess.Popen(
        [sys.executable, "-m", "hallfleet.cli", *args], stdin=subprocess.DEVNULL, stdout=log.open("ab"),
        stderr=subprocess.STDOUT, env=env, preexec_fn=lambda: _pdeathsig(parent),
    )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def agent_toml(path: Path, broker: LocalMosquitto, device: str, role: str, sections: dict[str, Any]) -> Path:
    top = {"site": SITE, "device": device, "role": role, "heartbeat_s": 30, "clock_sync_file": "/"}
    base = {"mqtt": {"host": broker.host, "port": broker.port}, "outbox": {"path": str(path.parent / f"{device}.db")}}
    return write_toml(path, top, {**base, **sections})


@dataclass
class Notify:
    """systemd's notify socket, for READY=1 from the agents started here."""

    sock: socket.socket
    path: Path

    @classmethod
    def bind(cls, path: Path) -> Notify:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        sock.setblocking(False)
        return cls(sock, path)

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("HALLFLEET_")} | {
            "NOTIFY_SOCKET": str(self.path)
        }

    async def ready(self, proc: subprocess.Popen[bytes], limit_s: float = 60) -> float:
        """Seconds until this process's READY=1 (one agent at a time on this socket)."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"the agent exited with {proc.returncode} before READY=1")
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 4096), 0.5)
            except TimeoutError:
                continue
            if b"READY=1" in data:
                return time.monotonic()
        raise TimeoutError(f"no READY=1 within {limit_s:g} s")


# -- 2. replay, 3. start-up -----------------------------------------------------------------------------
def stored(db: sqlite3.Connection, device: str) -> int:
    sql = "SELECT count(*) FROM events WHERE device = ? AND type = ?"
    return int(db.execute(sql, (device, EVENT_TYPE)).fetchone()[0])


async def replay(workdir: Path, broker: LocalMosquitto, db: sqlite3.Connection, device: str, kept: int,
                 timeout_s: float) -> dict[str, float]:  # fmt: skip
    cfg = agent_toml(workdir / f"{device}.toml", broker, device, "none", {})
    t0 = time.monotonic()
    proc = hallfleet(["agent", "--config", str(cfg)], workdir / f"{device}.log")
    try:
        n, first = 0, None  # the first poll that saw events: the agent is up and sending
        while time.monotonic() - t0 < timeout_s and n < kept:
            await asyncio.sleep(0.05)
            if proc.poll() is not None:
                raise RuntimeError(f"the replaying agent exited with {proc.returncode}; see {device}.log")
            n = stored(db, device)
            if n and first is None:
                first = (time.monotonic(), n)
        took = time.monotonic() - t0
        sending = (n - first[1]) / (time.monotonic() - first[0]) if first and n > first[1] else float("nan")
        return {
            "events": n,
            "s": took,
            "events_s": n / took,
            "sending_s": sending,
            "cpu_s": proc_cpu_s(proc.pid) or 0.0,
        }
    finally:
        stop(proc)


async def startup(workdir: Path, broker: LocalMosquitto, notify: Notify) -> dict[str, float]:
    t0 = time.monotonic()
    help_ = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "hallfleet.cli", "--help"], capture_output=True, check=True
    )
    help_s = time.monotonic() - t0
    assert help_.stdout
    cfg = agent_toml(workdir / "startup.toml", broker, f"startup-{uuid.uuid4().hex[:6]}", "none", {})
    t0 = time.monotonic()
    proc = hallfleet(["agent", "--config", str(cfg)], workdir / "startup.log", notify.env())
    try:
        agent_s = await notify.ready(proc) - t0
    finally:
        stop(proc)
    return {"help_s": help_s, "agent_s": agent_s}


# -- 4. idle per role -----------------------------------------------------------------------------------
def roles(workdir: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """What each measured agent drives: the twins the demo uses, and for the camera a looping video file."""
    from drivers.qr.validators import staff_map_line

    salt = workdir / "qr-salt"
    salt.write_bytes(b"footprint-salt")
    staff = workdir / "qr-staff.map"
    staff.write_text(staff_map_line(b"footprint-salt", "310101199001011234", "s-001") + "\n")
    qr_validator = {"type": "pattern", "region": "shanghai", "pattern": r"^SH(?P<ts>\d{10})(?P<id>[0-9A-Z]{18})$",
                    "staff_map": str(staff), "salt_file": str(salt)}  # fmt: skip
    key = workdir / "gallery-key"
    key.write_text(base64.b64encode(os.urandom(32)).decode())
    return {
        # events 0 emits forever (1 a second): the sim's load, not an idle device; one event, then nothing, is.
        "sim": ("sim", {"sim": {"events": 1}}),
        "sim, emitting 1 event/s": ("sim", {"sim": {"events": 0}}),
        "kiosk": ("kiosk", {"kiosk.receipt": {"type": "usb-sim"}}),
        "attendance, no camera": ("attendance", {
            "attendance.fingerprint": {"type": "sim"}, "attendance.qr": {"type": "sim"},
            "attendance.qr_validator": qr_validator}),
        "attendance, camera": ("attendance", {
            "attendance.camera": {"source": str(camera_video(workdir)), "loop": True, "fps": 5},
            "attendance.gallery": {"path": str(workdir / "gallery.sealed"), "key_file": str(key)},
            "attendance.qr": {"type": "sim"}, "attendance.qr_validator": qr_validator}),
        "rating": ("rating", {"rating": {"window": "A1"}, "rating.keypad": {"type": "sim"},
                              "rating.keypad.keys": RATING_KEYS}),
    }  # fmt: skip


def camera_video(workdir: Path) -> Path:
    """Ten seconds of an empty entrance: what the camera shows between people."""
    import numpy as np

    from tests.support.faces import camera_noise, write_video

    rng = np.random.default_rng(1)
    frames = [camera_noise(np.full((480, 640, 3), 128, np.uint8), rng) for _ in range(50)]
    return write_video(workdir / "entrance.avi", frames, fps=5)


def stacks_of(pid: int) -> list[str]:
    """The hardware stacks a process loaded: their compiled modules in /proc/PID/maps."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return []
    return [name for name, mark in STACKS.items() if mark in maps]


async def idle(workdir: Path, broker: LocalMosquitto, db: sqlite3.Connection, window_s: float) -> dict[str, Any]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for n, (name, (role, sections)) in enumerate(roles(workdir).items()):
            device = f"idle-{n}-{role}"
            cfg = agent_toml(workdir / f"{device}.toml", broker, device, role, sections)
            procs[name] = hallfleet(["agent", "--config", str(cfg)], workdir / f"{device}.log")
        devices = {name: f"idle-{n}-{role}" for n, (name, (role, _)) in enumerate(roles(workdir).items())}
        deadline = time.monotonic() + 120
        while not all_online(db, devices.values()):
            for name, p in procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"the {name} agent exited with {p.returncode}; see its log in {workdir}")
            if time.monotonic() > deadline:
                raise TimeoutError("the agents were not all online within 120 s")
            await asyncio.sleep(0.5)
        await asyncio.sleep(5)  # their births and first heartbeats confirmed: nothing left to send
        cpu0 = {k: proc_cpu_s(p.pid) or 0.0 for k, p in procs.items()}
        t0 = time.monotonic()
        print(f"idle: {len(procs)} agents, one per role, for {window_s:g} s ...", flush=True)
        await asyncio.sleep(window_s)
        span = time.monotonic() - t0
        return {
            k: {"cpu_pct": 100 * ((proc_cpu_s(p.pid) or 0.0) - cpu0[k]) / span, "rss_kb": rss_kb(p.pid),
                "hwm_kb": hwm_kb(p.pid), "threads": threads(p.pid), "stacks": stacks_of(p.pid)}
            for k, p in procs.items()
        }  # fmt: skip
    finally:
        for p in procs.values():
            stop(p)


def all_online(db: sqlite3.Connection, devices: Any) -> bool:
    wanted = set(devices)
    rows = db.execute("SELECT device FROM devices WHERE site = ? AND presence = 'online'", (SITE,)).fetchall()
    return wanted <= {r[0] for r in rows}


# -- the run --------------------------------------------------------------------------------------------
def median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"runs": runs}


async def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"load_start": os.getloadavg()}
    r = args.repeat
    print(f"outbox appends: {args.sequential:,} one at a time, {args.events:,} from {PRODUCERS} producers, "
          f"{r} runs ...", flush=True)  # fmt: skip
    runs = [await appends(workdir / f"replay-{i}.db", f"replay-{i}", args.sequential, args.events) for i in range(r)]
    out["append"] = median_of(runs)
    a = out["append"]
    print(f"  one producer p50 {a['p50_ms']:.2f} ms p99 {a['p99_ms']:.2f} ms ({a['one_s']:,.0f}/s); "
          f"{PRODUCERS} producers {a['many_s']:,.0f}/s", flush=True)  # fmt: skip
    broker = LocalMosquitto(workdir / "mosquitto", extra_conf="autosave_interval 60\n")
    broker.start()
    mosq = [p for p in pids_with_cmdline(str(broker.conf_path)) if p != os.getpid()]
    ctx = Ctx(args, workdir, broker, mosq[0] if mosq else None, None, [])
    notify = Notify.bind(workdir / "notify")
    run = None
    try:
        url = await fresh_store(ctx, "sqlite", "footprint")
        run = await start_consumer(ctx, url, "footprint")
        db = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None, timeout=30)
        replays = []
        for i in range(r):
            print(f"replay {i + 1}/{r}: an agent process with {int(runs[i]['kept']):,} events kept ...", flush=True)
            replays.append(await replay(workdir, broker, db, f"replay-{i}", int(runs[i]["kept"]), args.timeout))
        out["replay"] = median_of(replays)
        rp = out["replay"]
        print(f"  {rp['events_s']:,.0f} events/s with the process start, {rp['sending_s']:,.0f} once sending "
              "(medians)", flush=True)  # fmt: skip
        out["startup"] = median_of([await startup(workdir, broker, notify) for _ in range(r)])
        s = out["startup"]
        print(f"start-up: --help {s['help_s']:.2f} s, agent to READY=1 {s['agent_s']:.2f} s (medians)", flush=True)
        out["idle"] = await idle(workdir, broker, db, args.idle)
        for name, i in out["idle"].items():
            print(f"  {name}: RSS {i['rss_kb'] / 1024:.1f} MB, {i['cpu_pct']:.3f} % of a core, {i['threads']} "
                  f"threads, stacks {', '.join(i['stacks']) or '-'}", flush=True)  # fmt: skip
        db.close()
    finally:
        notify.sock.close()
        if run is not None:
            await stop_consumer(ctx, run)
        for proc in ctx.children:
            stop_child(proc, timeout_s=10)
        broker.stop()
    out["load_end"] = os.getloadavg()
    return out


def _load(x: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in x)


def render(args: argparse.Namespace, r: dict[str, Any], command: str, started: dt.datetime, took: float) -> str:
    a, rp, s = r["append"], r["replay"], r["startup"]
    runs = ", ".join(f"{x['events_s']:,.0f}" for x in rp["runs"])
    lines = [
        f"# Agent footprint, {started:%Y-%m-%d %H:%M %Z}",
        "",
        f"Command: `{command}` (finished in {took:.0f} s)",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine().items()),
        f"| load average 1/5/15 min, start -> end | {_load(r['load_start'])} -> {_load(r['load_end'])} "
        f"(measured; {os.cpu_count()} cores) |",
        "",
        f"| figure (median of {args.repeat} runs) | value |",
        "|---|---:|",
        f"| outbox append, one producer awaiting each: p50 / p99 (ms) | {a['p50_ms']:.2f} / {a['p99_ms']:.2f} |",
        f"| outbox append, one producer (events/s) | {a['one_s']:,.0f} |",
        f"| outbox append, {PRODUCERS} concurrent producers (events/s) | {a['many_s']:,.0f} |",
        f"| replay end to end: agent process start -> {int(rp['events']):,} kept events stored (events/s) "
        f"| {rp['events_s']:,.0f} (runs: {runs}) |",
        f"| replay once sending: from the first event stored to the last (events/s) | {rp['sending_s']:,.0f} |",
        f"| `hallfleet --help`, process start -> exit (s) | {s['help_s']:.3f} |",
        f"| `hallfleet agent --config ...`, process start -> READY=1 (s) | {s['agent_s']:.3f} |",
        "",
        f"## Idle agents, one per role, side by side ({args.idle:g} s window, 30 s heartbeat)",
        "",
        "| role | RSS MB (peak) | CPU % of a core | threads | hardware stacks loaded |",
        "|---|---:|---:|---:|---|",
        *(
            f"| {k} | {i['rss_kb'] / 1024:.1f} ({i['hwm_kb'] / 1024:.1f}) | {i['cpu_pct']:.3f} | {i['threads']} "
            f"| {', '.join(i['stacks']) or '-'} |"
            for k, i in r["idle"].items()
        ),
        "",
        "- The outbox is a file in the work dir (tmpfs or disk as the machine has it; an SD card's fsync is "
        "slower), with the agent's defaults: WAL, `synchronous=FULL`; a lone event is committed at once, events "
        "waiting meanwhile share the next commit.",
        "- The camera terminal analyses every frame of its video (5 fps): its CPU is the face engine's, not idle.",
        "- Envelopes: ~300-byte `attendance.punch` as bench/ingest.py builds them; the replay includes the agent "
        "process's start-up and the consumer's commits.",
        "",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.agent_footprint", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=50_000, help="events appended concurrently and replayed")
    p.add_argument("--sequential", type=int, default=2_000, help="events appended one at a time")
    p.add_argument("--idle", type=float, default=600.0, help="idle window, s (default 600: 10 minutes)")
    p.add_argument("--repeat", type=int, default=3, help="runs whose median is reported (default 3)")
    p.add_argument("--timeout", type=float, default=240.0, help="cap on each replay, s")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    a = p.parse_args(argv)
    if not PRODUCERS <= a.events <= 1_000_000 or not 10 <= a.sequential <= 100_000:
        p.error(f"--events within {PRODUCERS} .. 1,000,000, --sequential within 10 .. 100,000")
    if not 1 <= a.repeat <= 9 or not 1 <= a.idle <= 7200:
        p.error("--repeat within 1 .. 9, --idle within 1 .. 7200 s")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = f".venv/bin/python -m bench.agent_footprint {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()
    started = dt.datetime.now().astimezone()
    t0 = time.monotonic()
    about = f"about {args.idle / 60 + 2 * args.repeat:.0f} minutes"
    result = in_workdir("agent-footprint", about, args.keep, lambda workdir: run_all(args, workdir))
    write_results("agent-footprint", started, render(args, result, command, started, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
