"""Fleet-scale benchmark: thousands of simulated devices of every role -> private Mosquitto -> hallfleet consumer.

    .venv/bin/python -m bench.fleet [--devices 2000,5000,10000] [--processes 2] [--heartbeat 30] [--steady 45]

For each N, in order, against a fresh private Mosquitto (``max_connections -1``, RLIMIT_NOFILE raised to the
hard limit here, inherited by the broker and the simulator processes, which raise their own too):

1. The consumer starts in its own process (bench/ingest.py's ``consumer_main``: uvloop, default ingest
   settings, a fresh SQLite store) and is ready once a probe event lands.
2. The fleet: ``hallfleet fleet``'s simulator processes (hallfleet/fleet/shards.py, ``--processes``, one per
   core by default), each running its slice of the N devices on one loop (real ``Agent``s, in-memory
   outboxes) and playing their people: the mix of every role (attendance terminals punched by QR code and by
   finger on the fingerprint twin, rating pads, kiosks with receipt printers and some with A4 printers, the
   queue devices, doors, lockers and patrol handhelds of issue 23), a
   ``--heartbeat`` s heartbeat, real time (speed 1). The coordinator is this process: it prints the fleet's
   combined progress line every 10 s and its summary at the end. Connect time: start -> every device
   ``online`` in the store's ``devices`` table (births stored), within ``--connect-budget`` s (the run goes
   on with those connected by then, and says how many); and each process's own "every link up".
3. Steady state for ``--steady`` s: CPU of the consumer, of every simulator process together, and of the
   broker; events stored by type; devices not ``online`` at the end; each simulator process's file
   descriptors and OS threads (one agent used to cost a thread) and RSS.
4. Every tenth connected agent of each process loses power (no goodbye, no DISCONNECT: the broker publishes
   its Will). Checked within the stale window (1.5 heartbeats + 5 s) from the kill: every one of them
   ``offline``, and none of the others that were online before anything but online (falsely stale or offline).

Prints figures and writes bench/results/fleet-<date>.md with the machine and the load average measured;
asserts nothing. A size of 10,000 takes about 6-9 minutes (connect budget, steady window, stale window, stop).
Every process started here stops on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import shlex
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from bench._run import in_workdir, write_results
from bench.ingest import (
    Ctx,
    cpu_of,
    fresh_store,
    machine,
    pids_with_cmdline,
    start_consumer,
    stop_child,
    stop_consumer,
)
from broker.mosquitto.local import LocalMosquitto
from hallfleet.fleet.play import Slice, played, read_slice, start_slices, stop_slices
from hallfleet.fleet.run import MOSQUITTO_EXTRA, raise_nofile
from hallfleet.fleet.scenario import load_scenario
from hallfleet.fleet.sim import at_day
from runtime.clock import HALL_ZONE, ScaledClock
from runtime.settings import MqttConfig

POLL_S = 0.5
PROGRESS_S = 10.0
KILL_EVERY = 10

# Every role, busy from the first minute at real speed: staff arriving (a third by finger), kiosks printing,
# windows serving and citizens rating. No scripted faults: the bench's power loss is its own (step 4).
SCENARIO = """
name = "fleet-bench"
description = "规模测试: 各类设备, 实时"
start = "08:20"
heartbeat_s = {heartbeat}
seed = 11

[mix]
attendance = 0.05
kiosk = 0.30
rating = 0.65
queue = 0.05
door = 0.01
locker = 0.02
patrol = 0.01

[arrivals]
mean = "08:23"
sd_min = 2
late_after = "08:30"
late_share = 0.1
late_by_min = 10
absent_share = 0.02
finger_share = 0.3

[kiosk]
tickets_per_hour = [0, 0, 0, 0, 0, 0, 0, 0, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30]
poll_s = 10
netcheck_at = "08:21"

[rating]
services_per_hour = 30
open = "08:20"
close = "23:59"
"""


def rss_kb(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


# -- reading the store ----------------------------------------------------------------------------------
def presence(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, presence FROM devices WHERE site IN ('qingpu', 'wanzhou')").fetchall())


def stored_by_type(db: sqlite3.Connection) -> dict[str, int]:
    rows = db.execute("SELECT type, count(*) FROM events WHERE site IN ('qingpu', 'wanzhou') GROUP BY type")
    return {t: int(c) for t, c in rows.fetchall()}


def punch_methods(db: sqlite3.Connection) -> dict[str, int]:
    sql = "SELECT data ->> '$.method', count(*) FROM events WHERE type = 'attendance.punch' GROUP BY 1"
    return {str(m): int(c) for m, c in db.execute(sql).fetchall()}


# -- the fleet, coordinated from here -------------------------------------------------------------------
class Progress:
    """The fleet's combined progress line (hallfleet/fleet/play.py's), every PROGRESS_S."""

    def __init__(self, slices: list[Slice], clock: ScaledClock) -> None:
        self.slices, self.clock, self.at = slices, clock, time.monotonic()

    def tick(self) -> None:
        for s in self.slices:
            if s.done or not s.proc.is_alive():
                raise RuntimeError(f"simulator process {s.proc.name} ended (exit code {s.proc.exitcode})")
        if time.monotonic() - self.at >= PROGRESS_S:
            self.at = time.monotonic()
            print("\n".join(played(self.slices, self.clock)), flush=True)

    async def sleep(self, seconds: float) -> None:
        until = time.monotonic() + seconds
        while (left := until - time.monotonic()) > 0:
            await asyncio.sleep(min(POLL_S, left))
            self.tick()


def cpu_s(pids: list[int]) -> float:
    return sum(cpu_of(pids).values())


async def connect(n: int, a: argparse.Namespace, db: sqlite3.Connection, progress: Progress) -> dict[str, Any]:
    t0 = time.monotonic()
    online = 0
    while time.monotonic() - t0 < a.connect_budget:
        await progress.sleep(POLL_S)
        online = sum(1 for p in presence(db).values() if p == "online")
        if online >= n:
            break
    took = time.monotonic() - t0
    # Each process says "connected" once its last batch is up or its budget ran out.
    while not all(s.connected for s in progress.slices) and time.monotonic() - t0 < a.connect_budget + 30:
        await progress.sleep(POLL_S)
    links = [s.last.get("connect_s") for s in progress.slices]
    return {
        "online_after_connect": online,
        "births_s": took if online >= n else float("nan"),
        "connect_window_s": took,
        "links_s": max(links) if links and None not in links else float("nan"),
    }


async def power_off_a_tenth(slices: list[Slice], progress: Progress) -> set[str]:
    for s in slices:
        s.powered_off = None
        s.conn.send(("power_off", KILL_EVERY))
    deadline = time.monotonic() + 120
    while any(s.powered_off is None for s in slices):
        if time.monotonic() > deadline:
            raise TimeoutError("a simulator process did not report its powered-off agents within 120 s")
        await progress.sleep(0.05)
    return {k for s in slices for k in s.powered_off or []}


async def presence_after_kill(db: sqlite3.Connection, before: set[str], victims: set[str], window: float,
                              progress: Progress) -> dict[str, Any]:  # fmt: skip
    t_kill, t_all = time.monotonic(), float("nan")
    while time.monotonic() - t_kill < window:
        await progress.sleep(POLL_S)
        offline = {k for k, p in presence(db).items() if p == "offline"}
        if victims <= offline and t_all != t_all:
            t_all = time.monotonic() - t_kill
    states = presence(db)
    falsely = (before - victims) & {k for k, p in states.items() if p != "online"}
    return {
        "victims": len(victims),
        "victims_offline": sum(1 for k in victims if states.get(k) == "offline"),
        "victims_other": sorted({states.get(k, "unknown") for k in victims if states.get(k) != "offline"}),
        "false_offline": len(falsely),
        "false_states": sorted({states[k] for k in falsely}),
        "marked_s": t_all,
        "window_s": window,
    }


def per_process(slices: list[Slice]) -> list[dict[str, Any]]:
    out = []
    for s in slices:
        pid = s.proc.pid or 0
        agents = s.last.get("up", 0)
        out.append(
            {"pid": pid, "agents": agents, "fds": fds(pid), "threads": threads(pid), "rss_mb": rss_kb(pid) / 1024}
        )
    return out


async def run_one(ctx: Ctx, n: int) -> dict[str, Any]:
    a = ctx.args
    out: dict[str, Any] = {"n": n, "load_before": os.getloadavg()}
    url = await fresh_store(ctx, "sqlite", f"fleet{n}")
    run = await start_consumer(ctx, url, f"fleet{n}")
    db = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None, timeout=30)
    workdir = ctx.workdir / f"fleet-{n}"
    workdir.mkdir()
    path = workdir / "fleet-bench.toml"
    path.write_text(SCENARIO.format(heartbeat=a.heartbeat))
    clock = ScaledClock(at_day(dt.datetime.now(HALL_ZONE).date(), load_scenario(path).start), 1.0)
    spec = argparse.Namespace(devices=n, processes=a.processes, scenario=str(path), speed=1.0, memory_outbox=True)
    loop = asyncio.get_running_loop()
    slices: list[Slice] = []
    soft, _ = raise_nofile()
    if soft < n + 1000:  # the broker holds one socket per device; each simulator process one per agent
        print(f"[{n}] warning: RLIMIT_NOFILE is {soft} (the hard limit): raise it (ulimit -Hn) for {n:,} devices")
    try:
        mqtt = MqttConfig(host=ctx.broker.host, port=ctx.broker.port)
        slices = start_slices(spec, mqtt, workdir, clock, connect_timeout_s=a.connect_budget)
        for s in slices:
            loop.add_reader(s.conn.fileno(), read_slice, s)
        progress = Progress(slices, clock)
        sims = [s.proc.pid for s in slices if s.proc.pid is not None]
        others = {"consumer": run.pid, **({"broker": ctx.mosquitto_pid} if ctx.mosquitto_pid else {})}
        out["processes"] = len(slices)
        print(f"[{n}] {len(slices)} simulator processes connecting (budget {a.connect_budget:g} s) ...", flush=True)
        cpu0 = {k: cpu_s([p]) for k, p in others.items()} | {"simulators": cpu_s(sims)}
        out.update(await connect(n, a, db, progress))
        cpu1 = {k: cpu_s([p]) for k, p in others.items()} | {"simulators": cpu_s(sims)}
        out["connect_cpu"] = {k: cpu1[k] - cpu0[k] for k in cpu0}
        print(f"[{n}]   {out['online_after_connect']:,} online in the store after {out['connect_window_s']:.1f} s "
              f"(every link up after {_f(out['links_s'])} s)", flush=True)  # fmt: skip
        ev0, t1 = stored_by_type(db), time.monotonic()
        await progress.sleep(a.steady)
        cpu2, span = {k: cpu_s([p]) for k, p in others.items()} | {"simulators": cpu_s(sims)}, time.monotonic() - t1
        out["steady_cpu_pct"] = {k: 100 * (cpu2[k] - cpu1[k]) / span for k in cpu1}
        ev1 = stored_by_type(db)
        out["stored_steady_per_s"] = {t: (c - ev0.get(t, 0)) / span for t, c in ev1.items() if c > ev0.get(t, 0)}
        states = presence(db)
        out["states_steady"] = {p: sum(1 for x in states.values() if x == p) for p in set(states.values())}
        out["per_process"] = per_process(slices)
        pct = out["steady_cpu_pct"]
        print(f"[{n}]   steady: consumer {pct['consumer']:.0f} % of a core, simulators {pct['simulators']:.0f} % "
              f"together, presence {out['states_steady']}", flush=True)  # fmt: skip
        before = {k for k, p in states.items() if p == "online"}
        victims = await power_off_a_tenth(slices, progress)
        out.update(await presence_after_kill(db, before, victims, 1.5 * a.heartbeat + 5, progress))
        print(f"[{n}]   powered off {out['victims']:,}: {out['victims_offline']:,} offline within "
              f"{out['window_s']:.0f} s (last after {_f(out['marked_s'])} s); of the others online before, "
              f"{out['false_offline']:,} not online after", flush=True)  # fmt: skip
        out["stored"] = stored_by_type(db)
        out["punch_methods"] = punch_methods(db)
        out["load_after"] = os.getloadavg()
    finally:
        await stop_slices(slices, loop)
        if slices:
            out["summary"] = [*played(slices, clock), "  stored events: " + ", ".join(
                f"{t} {c:,}" for t, c in sorted(stored_by_type(db).items()))]  # fmt: skip
            print("\n".join(out["summary"]), flush=True)
        db.close()
        await stop_consumer(ctx, run)
    return out


def _f(v: float | None, spec: str = ",.1f") -> str:
    return "n/a" if v is None or v != v else format(v, spec)


def _load(x: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in x)


def render(args: argparse.Namespace, results: list[dict[str, Any]], command: str, started: dt.datetime,
           took: float, failures: list[str]) -> str:  # fmt: skip
    lines = [
        f"# Fleet-scale benchmark, {started:%Y-%m-%d %H:%M %Z}",
        "",
        f"Command: `{command}` (finished in {took:.0f} s)",
        "",
        "| machine | |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in machine().items()),
        f"| RLIMIT_NOFILE (soft/hard after raising) | {'/'.join(str(x) for x in raise_nofile())} |",
        f"| load average 1/5/15 min at end | {_load(os.getloadavg())} (measured; {os.cpu_count()} cores) |",
        "",
        "Load: `hallfleet fleet`'s simulator processes (hallfleet/fleet/shards.py), each with its slice of N real "
        "agents (`agent.agent.Agent`, in-memory outboxes) on uvloop, every role (mix 5 % attendance, 30 % kiosk "
        "with its daily network check, 65 % rating pad, 5 % queue devices on a queue-system twin per hall and "
        "process, 1 % door controllers, 2 % locker banks, 1 % patrol handhelds; shares of the whole), "
        f"heartbeat {args.heartbeat:g} s, people played in real time; consumer (SQLite, default "
        "ingest settings, uvloop) and Mosquitto each in their own process, all on 127.0.0.1.",
        "",
        f"| devices | simulator processes | every link up s | all births stored s (budget {args.connect_budget:g}) "
        "| online at the end of the connect window | CPU s connecting (consumer / simulators / broker) "
        f"| steady % of a core over {args.steady:g} s (consumer / simulators together / broker) "
        "| presence in steady state | load average before -> after |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        c, s = r["connect_cpu"], r["steady_cpu_pct"]
        states = ", ".join(f"{k} {v:,}" for k, v in sorted(r["states_steady"].items()))
        lines.append(
            f"| {r['n']:,} | {r['processes']} | {_f(r['links_s'])} | {_f(r['births_s'])} "
            f"| {r['online_after_connect']:,} ({r['connect_window_s']:.0f} s) "
            f"| {c['consumer']:.1f} / {c['simulators']:.1f} / {c.get('broker', float('nan')):.1f} "
            f"| {s['consumer']:.0f} / {s['simulators']:.0f} / {s.get('broker', float('nan')):.0f} | {states} "
            f"| {_load(r['load_before'])} -> {_load(r['load_after'])} |"
        )
    lines += [
        "",
        "## Each simulator process in steady state",
        "",
        "| devices | pid | agents up | file descriptors | OS threads | RSS MB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for p in r["per_process"]:
            lines.append(f"| {r['n']:,} | {p['pid']} | {p['agents']:,} | {p['fds']:,} | {p['threads']} "
                         f"| {p['rss_mb']:.0f} |")  # fmt: skip
    lines += [
        "",
        "## Events stored",
        "",
        "| devices | per second in steady state, by type | stored in all | punches by method |",
        "|---:|---|---|---|",
    ]
    for r in results:
        rate = ", ".join(f"{t} {v:.1f}" for t, v in sorted(r["stored_steady_per_s"].items()))
        total = ", ".join(f"{t} {c:,}" for t, c in sorted(r["stored"].items()))
        methods = ", ".join(f"{m} {c:,}" for m, c in sorted(r["punch_methods"].items())) or "none"
        lines.append(f"| {r['n']:,} | {rate} | {total} | {methods} |")
    lines += [
        "",
        "## Presence after every tenth connected agent lost power",
        "",
        "| devices | powered off | of them `offline` (Will) within the window | last marked after s "
        "| window s (1.5 heartbeats + 5) | others online before, not online after (falsely stale or offline) |",
        "|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        false = f"{r['false_offline']:,}" + (f" ({', '.join(r['false_states'])})" if r["false_states"] else "")
        lines.append(
            f"| {r['n']:,} | {r['victims']:,} | {r['victims_offline']:,} | {_f(r['marked_s'])} | {r['window_s']:.0f} "
            f"| {false} |"
        )
    if failures:
        lines += ["", "## Did not complete", "", *(f"- {f}" for f in failures)]
    return "\n".join(lines) + "\n"


async def run_all(args: argparse.Namespace, workdir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """A fresh broker for each size: the last size's retained statuses (its Wills) must not meet the next."""
    raise_nofile()
    results: list[dict[str, Any]] = []
    failures: list[str] = []
    for n in args.devices:
        broker = LocalMosquitto(workdir / f"mosquitto-{n}", extra_conf=MOSQUITTO_EXTRA)
        broker.start()
        mosq = [p for p in pids_with_cmdline(str(broker.conf_path)) if p != os.getpid()]
        ctx = Ctx(args, workdir, broker, mosq[0] if mosq else None, None, [])
        try:
            results.append(await run_one(ctx, n))
        except Exception as exc:  # report the limit that was hit, then go on to the next size
            failures.append(f"{n:,} devices: {type(exc).__name__}: {exc}".replace("\n", " "))
            print(f"[{n}] FAILED: {failures[-1]}", flush=True)
        finally:
            for proc in ctx.children:
                stop_child(proc, timeout_s=10)
            broker.stop()
    return results, failures


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", default="2000,5000,10000", help="comma-separated fleet sizes (default 2000,5000,10000)")
    p.add_argument("--processes", type=int, default=0, help="simulator processes (default 0: one per core)")
    p.add_argument("--heartbeat", type=float, default=30.0, help="agents' heartbeat, s (default 30)")
    p.add_argument("--steady", type=float, default=45.0, help="steady-state window, s (default 45)")
    p.add_argument("--connect-budget", type=float, default=240.0, help="time given to connecting all, s")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    a = p.parse_args(argv)
    try:
        a.devices = [int(x) for x in a.devices.split(",")]
    except ValueError:
        p.error("--devices: comma-separated integers")
    if not all(10 <= n <= 20_000 for n in a.devices):
        p.error("--devices: each within 10 .. 20,000")
    if not 5 <= a.heartbeat <= 600 or not 5 <= a.steady <= 600:
        p.error("--heartbeat and --steady within 5 .. 600")
    if not 0 <= a.processes <= 64 or not 10 <= a.connect_budget <= 3600:
        p.error("--processes within 0 .. 64, --connect-budget within 10 .. 3600")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = f".venv/bin/python -m bench.fleet {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()
    started = dt.datetime.now().astimezone()
    t0 = time.monotonic()
    results, failures = in_workdir("fleet", f"sizes {args.devices}", args.keep, lambda workdir: run_all(args, workdir))
    write_results("fleet", started, render(args, results, command, started, time.monotonic() - t0, failures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
