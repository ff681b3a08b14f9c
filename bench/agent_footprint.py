"""Agent footprint: what one agent costs a device, and how fast its outbox takes and gives back events.

    .venv/bin/python -m bench.agent_footprint [--events 50000] [--idle 60]

1. Outbox append (agent/outbox.py used directly, a file in the work dir, the agent's defaults: WAL,
   synchronous=FULL, group commit 20 ms / 256): one producer awaiting each append (a terminal taking one punch
   at a time), then 64 concurrent producers (a busy device; one fsync covers a batch). Events/s.
2. Outbox read and confirm, in process: the filled outbox fetched in pages of 100 as the link's pump does,
   then confirmed (deleted) in ranges of 100 as the store's confirmations do. Rows/s.
3. Replay end to end: an agent process (``python -m hallfleet.cli agent``, role none) starts on that
   outbox (N events kept through an "outage") against a private Mosquitto and the consumer in its own process
   (bench/ingest.py's): start -> all N in the store. Events/s; the agent's CPU over it.
4. Idle: once the outbox is empty, the same process for ``--idle`` s with a 30 s heartbeat: RSS (VmRSS, and
   its peak VmHWM), CPU % of a core, threads.

Prints figures and writes bench/results/agent-footprint-<date>.md; asserts nothing. Every process started
here stops on exit (children die with this process: PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
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
    pids_with_cmdline,
    proc_cpu_s,
    start_consumer,
    stop_child,
    stop_consumer,
)
from broker.mosquitto.local import LocalMosquitto
from protocol import topics
from protocol.events import Lane

SITE, DEVICE = "bench-hall", "footprint-1"
PRODUCERS = 256  # one group commit (commit_batch) fills from them
PAGE = 100


def hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def builder(boot_id: str) -> Any:
    topic = topics.event(SITE, DEVICE, EVENT_TYPE)

    def build(seq: int) -> tuple[str, bytes]:
        return topic, envelope_bytes(SITE, DEVICE, seq, boot_id, dt.datetime.now(dt.UTC))

    return build


def new_outbox(path: Path) -> Outbox:
    d = OutboxConfig(path=path)
    return Outbox(path, max_critical=d.max_critical, max_telemetry=d.max_telemetry,
                  commit_interval_ms=d.commit_interval_ms, commit_batch=d.commit_batch)  # fmt: skip


async def appends(path: Path, sequential: int, concurrent: int) -> dict[str, float]:
    build = builder(uuid.uuid4().hex[:16])
    out: dict[str, float] = {}
    async with new_outbox(path) as box:
        t0 = time.perf_counter()
        for _ in range(sequential):
            await box.append(Lane.CRITICAL, build)
        out["sequential_s"] = sequential / (time.perf_counter() - t0)
        await box.confirm([(0, box.next_seq)])  # start the concurrent run (and the replay) on an empty outbox
        per = concurrent // PRODUCERS

        async def producer() -> None:
            for _ in range(per):
                await box.append(Lane.CRITICAL, build)

        t0 = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(PRODUCERS)))
        out["concurrent_s"] = per * PRODUCERS / (time.perf_counter() - t0)
        out["kept"] = box.depth
    return out


async def read_confirm(src: Path, copy: Path) -> dict[str, float]:
    """On a copy, so the agent replays the original."""
    with sqlite3.connect(src) as a, sqlite3.connect(copy) as b:
        a.backup(b)
    out: dict[str, float] = {}
    async with new_outbox(copy) as box:
        n = box.depth
        t0 = time.perf_counter()
        last, seqs = -1, []
        while rows := await box.fetch(last, PAGE):
            last = rows[-1].seq
            seqs.append((rows[0].seq, last))
        out["fetch_s"] = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for r in seqs:
            await box.confirm([r])
        out["confirm_s"] = n / (time.perf_counter() - t0)
        out["left"] = box.depth
    return out


def heartbeats(db: sqlite3.Connection) -> int:
    sql = "SELECT count(*) FROM events WHERE device = ? AND type = 'device.health'"
    return int(db.execute(sql, (DEVICE,)).fetchone()[0])


def stored(db: sqlite3.Connection) -> int:
    return int(
        db.execute("SELECT count(*) FROM events WHERE device = ? AND type = ?", (DEVICE, EVENT_TYPE)).fetchone()[0]
    )


async def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    box_path = workdir / "agent" / "outbox.db"
    print(
        f"outbox appends: {args.sequential:,} one at a time, {args.events:,} from {PRODUCERS} producers ...", flush=True
    )
    out["append"] = await appends(box_path, args.sequential, args.events)
    print(f"  {out['append']['sequential_s']:,.0f} / {out['append']['concurrent_s']:,.0f} events/s", flush=True)
    out["read"] = await read_confirm(box_path, workdir / "copy.db")
    print(f"  fetch {out['read']['fetch_s']:,.0f} rows/s, confirm {out['read']['confirm_s']:,.0f} rows/s", flush=True)
    broker = LocalMosquitto(workdir / "mosquitto", extra_conf="autosave_interval 60\n")
    broker.start()
    mosq = [p for p in pids_with_cmdline(str(broker.conf_path)) if p != os.getpid()]
    ctx = Ctx(args, workdir, broker, mosq[0] if mosq else None, None, [])
    agent: subprocess.Popen[bytes] | None = None
    run = None
    try:
        url = await fresh_store(ctx, "sqlite", "footprint")
        run = await start_consumer(ctx, url, "footprint")
        db = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None, timeout=30)
        cfg = workdir / "agent.toml"
        cfg.write_text(
            f'site = "{SITE}"\ndevice = "{DEVICE}"\nrole = "none"\nheartbeat_s = 30\nclock_sync_file = "/"\n'
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n[outbox]\npath = "{box_path}"\n'
        )
        parent = os.getpid()
        kept = int(out["append"]["kept"])
        print(f"replay: an agent process with {kept:,} events in its outbox ...", flush=True)
        t0 = time.monotonic()
        agent = subprocess.Popen(  # noqa: ASYNC220 -- started once; its life is the measurement
            [sys.executable, "-m", "hallfleet.cli", "agent", "--config", str(cfg)],
            stdin=subprocess.DEVNULL, stdout=(workdir / "agent.log").open("wb"), stderr=subprocess.STDOUT,
            preexec_fn=lambda: _pdeathsig(parent),
        )  # fmt: skip
        n = 0
        while time.monotonic() - t0 < args.timeout:
            await asyncio.sleep(0.05)
            if agent.poll() is not None:
                raise RuntimeError(f"the agent exited with {agent.returncode}; see {workdir / 'agent.log'}")
            n = stored(db)
            if n >= kept:
                break
        took = time.monotonic() - t0
        replay_cpu = proc_cpu_s(agent.pid) or 0.0
        out["replay"] = {"events": n, "kept": kept, "s": took, "events_s": n / took, "cpu_s": replay_cpu}
        print(f"  {n:,} stored in {took:.1f} s: {n / took:,.0f} events/s (process start included)", flush=True)
        await asyncio.sleep(3)  # the last confirmations reach the outbox
        cpu0, t1 = proc_cpu_s(agent.pid) or 0.0, time.monotonic()
        print(f"idle for {args.idle:g} s ...", flush=True)
        await asyncio.sleep(args.idle)
        cpu1, t2 = proc_cpu_s(agent.pid) or 0.0, time.monotonic()
        out["idle"] = {
            "cpu_pct": 100 * (cpu1 - cpu0) / (t2 - t1),
            "rss_kb": rss_kb(agent.pid),
            "hwm_kb": hwm_kb(agent.pid),
            "threads": threads(agent.pid),
            "heartbeats": heartbeats(db),
        }
        i = out["idle"]
        print(f"  RSS {i['rss_kb'] / 1024:.1f} MB (peak {i['hwm_kb'] / 1024:.1f}), {i['cpu_pct']:.2f} % of a core",
              flush=True)  # fmt: skip
        db.close()
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        if run is not None:
            await stop_consumer(ctx, run)
        for proc in ctx.children:
            stop_child(proc, timeout_s=10)
        broker.stop()
    return out


def render(args: argparse.Namespace, r: dict[str, Any], command: str, started: dt.datetime, took: float) -> str:
    a, rd, rp, i = r["append"], r["read"], r["replay"], r["idle"]
    return "\n".join(
        [
            f"# Agent footprint, {started:%Y-%m-%d %H:%M %Z}",
            "",
            f"Command: `{command}` (finished in {took:.0f} s)",
            "",
            "| machine | |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in machine().items()),
            f"| load average 1/5/15 min at end | {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
            f"(measured; {os.cpu_count()} cores) |",
            "",
            "| figure | value |",
            "|---|---:|",
            f"| outbox append, one producer awaiting each (events/s) | {a['sequential_s']:,.0f} |",
            f"| outbox append, {PRODUCERS} concurrent producers (events/s) | {a['concurrent_s']:,.0f} |",
            f"| outbox fetch in pages of {PAGE}, as the pump reads (rows/s) | {rd['fetch_s']:,.0f} |",
            f"| outbox confirm in ranges of {PAGE} (rows/s) | {rd['confirm_s']:,.0f} |",
            f"| replay end to end: agent start -> {rp['events']:,} of {rp['kept']:,} kept events stored (events/s) "
            f"| {rp['events_s']:,.0f} ({rp['s']:.1f} s, agent CPU {rp['cpu_s']:.1f} s) |",
            f"| idle agent RSS (MB) | {i['rss_kb'] / 1024:.1f} (peak {i['hwm_kb'] / 1024:.1f} during the replay) |",
            f"| idle agent CPU over {args.idle:g} s, 30 s heartbeat (% of a core) | {i['cpu_pct']:.2f} |",
            f"| idle agent threads | {i['threads']} |",
            "",
            "- The outbox is a file in the work dir (tmpfs or disk as the machine has it; an SD card's fsync is "
            "slower), with the agent's defaults: WAL, `synchronous=FULL`, group commit 20 ms or 256 events. One "
            "producer awaiting each append pays a commit window per event; concurrent producers share the fsync.",
            "- Envelopes: ~300-byte `attendance.punch` as bench/ingest.py builds them. The replay figure includes "
            "the agent process's start-up (Python imports, MQTT connect) and the consumer's commits.",
            "",
        ]
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.agent_footprint", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=50_000, help="events appended concurrently and replayed")
    p.add_argument("--sequential", type=int, default=500, help="events appended one at a time")
    p.add_argument("--idle", type=float, default=60.0, help="idle window, s")
    p.add_argument("--timeout", type=float, default=240.0, help="cap on the replay, s")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    a = p.parse_args(argv)
    if not PRODUCERS <= a.events <= 1_000_000 or not 10 <= a.sequential <= 100_000:
        p.error(f"--events within {PRODUCERS} .. 1,000,000, --sequential within 10 .. 100,000")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = f".venv/bin/python -m bench.agent_footprint {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()
    started = dt.datetime.now().astimezone()
    t0 = time.monotonic()
    result = in_workdir("agent-footprint", "about 2 minutes", args.keep, lambda workdir: run_all(args, workdir))
    write_results("agent-footprint", started, render(args, result, command, started, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
