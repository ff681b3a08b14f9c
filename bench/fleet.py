"""Fleet-scale benchmark: thousands of connected agents -> private Mosquitto -> hallfleet consumer (SQLite).

    .venv/bin/python -m bench.fleet [--devices 2000[,5000,10000]] [--heartbeat 30] [--steady 45]

For each N, in order, against a fresh private Mosquitto (``max_connections -1``, RLIMIT_NOFILE raised to the
hard limit, inherited by the broker):

1. The consumer starts in its own process (bench/ingest.py's ``consumer_main``: uvloop, default ingest
   settings, a fresh SQLite store) and is ready once a probe event lands.
2. The fleet simulator (hallfleet/fleet, the ``heartbeats`` scenario: real ``Agent``s with role "none", in-memory
   outboxes) starts N agents in one process on uvloop, 200 at a time. Connect time: start -> every device
   ``online`` in the store's ``devices`` table (births stored), polled every 0.5 s, within ``--connect-budget``
   s; when the budget runs out the run goes on with the agents connected by then (and says how many).
3. Steady heartbeats for ``--steady`` s: consumer, simulator and broker CPU; health events stored; devices
   not ``online`` (falsely stale or offline) at the end.
4. Every tenth connected agent is stopped abruptly (task cancelled: no shutdown status, no DISCONNECT).
   Agents that never connected within the budget are stopped first (they only retry). Checked within the
   stale window (1.5 heartbeats + 5 s) from the kill: exactly those devices leave ``online`` (their
   Will); of the others online before, how many are not online after. Time until the last is marked.
5. RSS of the simulator process per agent started (VmRSS, minus the interpreter's own before any agent).

Prints figures and writes bench/results/fleet-<date>.md with the machine's description; asserts nothing.
Every process started here stops on exit (children die with this process: PR_SET_PDEATHSIG).
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
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench._run import in_workdir, write_results
from bench.ingest import (
    Ctx,
    _child_setup,
    _report_crash,
    cpu_of,
    fresh_store,
    machine,
    pids_with_cmdline,
    spawn,
    start_consumer,
    stop_child,
    stop_consumer,
)
from broker.mosquitto.local import LocalMosquitto
from hallfleet.fleet.run import MOSQUITTO_EXTRA, raise_nofile

POLL_S = 0.5


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


# -- the simulator (child process) ----------------------------------------------------------------------
def fleet_main(conn: Connection, parent_pid: int, host: str, port: int, n: int, heartbeat_s: float,
               workdir: str, connect_timeout_s: float) -> None:  # fmt: skip
    """N heartbeat-only agents. Pipe: "start" (they connect, 200 at a time); "kill" -> ("killed", connect figures
    and the keys of every tenth connected agent, stopped abruptly; agents not started yet never start);
    "stop" -> ("stopped", seconds)."""
    _child_setup(parent_pid)
    raise_nofile()
    try:
        from hallfleet.fleet.scenario import builtin, load_scenario
        from hallfleet.fleet.sim import Fleet
        from protocol.settings import MqttConfig

        async def amain() -> None:
            scenario = load_scenario(builtin("heartbeats")).model_copy(update={"heartbeat_s": heartbeat_s})
            mqtt = MqttConfig(host=host, port=port, keepalive_s=60)
            fleet = Fleet(scenario, n, mqtt, Path(workdir), memory_outbox=True)
            fleet.prepare()
            conn.send(("ready", {"pid": os.getpid(), "rss_kb": rss_kb(os.getpid())}))
            assert await asyncio.to_thread(conn.recv) == "start"
            cpu0 = time.process_time()
            starting = asyncio.create_task(fleet.start(batch=200, connect_timeout_s=connect_timeout_s))
            assert await asyncio.to_thread(conn.recv) == "kill"  # sent when all are in, or at the budget
            connected = [m for m in fleet.members if m.agent is not None and m.agent.link.connected.is_set()]
            started = sum(1 for m in fleet.members if m.up)
            figures = {"connect_s": fleet.connect_s, "connected": len(connected), "started": started,
                       "cpu_s": time.process_time() - cpu0}  # fmt: skip
            if not starting.done():
                starting.cancel()  # the rest never start
            await asyncio.gather(starting, return_exceptions=True)
            # Agents started but never connected by the budget keep retrying and eat the loop: they go too,
            # silently (never online, so never in the check).
            linked = set(map(id, connected))
            await fleet.power_off([m for m in fleet.members if m.up and id(m) not in linked])
            victims = connected[::10]
            t0 = time.monotonic()
            await fleet.power_off(victims)
            figures["kill_s"] = time.monotonic() - t0
            conn.send(("killed", {**figures, "keys": [m.key for m in victims]}))
            assert await asyncio.to_thread(conn.recv) == "stop"
            t0 = time.monotonic()
            await fleet.stop()
            conn.send(("stopped", time.monotonic() - t0))

        try:
            import uvloop

            uvloop.run(amain())
        except ImportError:
            asyncio.run(amain())
    except Exception:
        _report_crash(conn)


# -- orchestration --------------------------------------------------------------------------------------
def presence(db: sqlite3.Connection) -> dict[str, str]:
    return dict(db.execute("SELECT key, presence FROM devices WHERE site IN ('qingpu', 'wanzhou')").fetchall())


def health_count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM events WHERE type = 'device.health'").fetchone()[0])


async def run_one(ctx: Ctx, n: int) -> dict[str, Any]:
    a = ctx.args
    out: dict[str, Any] = {"n": n}
    url = await fresh_store(ctx, "sqlite", f"fleet{n}")
    run = await start_consumer(ctx, url, f"fleet{n}")
    db = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None, timeout=30)
    fleet = spawn(ctx, f"fleet-{n}", fleet_main, ctx.broker.host, ctx.broker.port, n, a.heartbeat,
                  str(ctx.workdir / f"fleet-{n}"), a.connect_budget)  # fmt: skip
    try:
        ready = await fleet.expect("ready", 120)
        fpid, base_rss = ready["pid"], ready["rss_kb"]
        mosq = [ctx.mosquitto_pid] if ctx.mosquitto_pid else []
        pids = {"consumer": run.pid, "simulator": fpid, **({"broker": mosq[0]} if mosq else {})}
        cpu0, t0 = cpu_of(list(pids.values())), time.monotonic()
        fleet.send("start")
        print(f"[{n}] connecting (budget {a.connect_budget:g} s) ...", flush=True)
        online = 0
        while time.monotonic() - t0 < a.connect_budget:
            await asyncio.sleep(POLL_S)
            fleet.check()
            run.child.check()
            online = sum(1 for p in presence(db).values() if p == "online")
            if online >= n:
                break
        t_births = time.monotonic() - t0
        cpu1 = cpu_of(list(pids.values()))
        out["online_after_connect"] = online
        out["births_s"] = t_births if online >= n else float("nan")
        out["connect_window_s"] = t_births
        out["connect_cpu"] = {k: cpu1.get(p, 0) - cpu0.get(p, 0) for k, p in pids.items()}
        print(f"[{n}]   {online:,} online in the store after {t_births:.1f} s", flush=True)
        h0 = health_count(db)
        await asyncio.sleep(a.steady)
        fleet.check()
        cpu2 = cpu_of(list(pids.values()))
        out["steady_cpu_pct"] = {k: 100 * (cpu2.get(p, 0) - cpu1.get(p, 0)) / a.steady for k, p in pids.items()}
        out["health_per_s"] = (health_count(db) - h0) / a.steady
        states = presence(db)
        out["states_steady"] = {s: sum(1 for p in states.values() if p == s) for s in set(states.values())}
        out["rss_mb"] = rss_kb(fpid) / 1024
        out["threads"] = threads(fpid)
        pct = out["steady_cpu_pct"]
        print(f"[{n}]   steady: consumer {pct['consumer']:.0f} % of a core, simulator {pct['simulator']:.0f} %, "
              f"presence {out['states_steady']}", flush=True)  # fmt: skip
        online_before = {k for k, p in presence(db).items() if p == "online"}
        fleet.send("kill")
        killed = await fleet.expect("killed", 600)
        t_kill = time.monotonic() - killed["kill_s"]  # from the first victim's power-off
        victims = set(killed["keys"])
        out.update({k: killed[k] for k in ("connected", "started")})
        out["links_s"] = killed["connect_s"] if killed["connect_s"] is not None else float("nan")
        out["rss_kb_per_device"] = (out["rss_mb"] * 1024 - base_rss) / max(1, killed["started"])
        window = 1.5 * a.heartbeat + 5
        t_all = float("nan")
        while time.monotonic() - t_kill < window:
            await asyncio.sleep(POLL_S)
            gone = {k for k, p in presence(db).items() if p != "online"}
            if victims <= gone and t_all != t_all:
                t_all = time.monotonic() - t_kill
        states = presence(db)
        gone = {k for k, p in states.items() if p != "online"}
        out["victims"] = len(victims)
        out["victims_marked"] = len(victims & gone)
        out["victims_offline"] = sum(1 for k in victims if states.get(k) == "offline")
        out["false_offline"] = len((online_before - victims) & gone)
        out["false_states"] = sorted({states[k] for k in (online_before - victims) & gone})
        out["marked_s"] = t_all
        out["window_s"] = window
        print(f"[{n}]   killed {len(victims)}: {out['victims_marked']} marked (offline {out['victims_offline']}) "
              f"within {window:.0f} s, last after {t_all:.1f} s; of the others online before, "
              f"{out['false_offline']} not online after ({', '.join(out['false_states']) or '-'})",
              flush=True)  # fmt: skip
        fleet.send("stop")
        out["stop_s"] = await fleet.expect("stopped", 300)
    finally:
        stop_child(fleet.proc, timeout_s=30)
        db.close()
        await stop_consumer(ctx, run)
    return out


def _f(v: float, spec: str = ",.1f") -> str:
    return "n/a" if v != v else format(v, spec)


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
        f"| load average 1/5/15 min at end | {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"(measured; {os.cpu_count()} cores) |",
        "",
        f"Load: N real agents (`agent.agent.Agent`, role none, heartbeat {args.heartbeat:g} s, in-memory SQLite "
        "outboxes) in one simulator process on uvloop, started 200 at a time; consumer (SQLite, default ingest "
        "settings, uvloop) and Mosquitto each in their own process, all on 127.0.0.1.",
        "",
        f"| devices | all links up s | all births stored s (budget {args.connect_budget:g}) | online at the end "
        "of the connect window | CPU s in the connect window (consumer / simulator / broker) "
        f"| steady % of a core over {args.steady:g} s (consumer / simulator / broker) | health events/s stored "
        "| presence in steady state | simulator RSS MB (kB / agent started) | simulator threads |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for r in results:
        c, s = r["connect_cpu"], r["steady_cpu_pct"]
        states = ", ".join(f"{k} {v:,}" for k, v in sorted(r["states_steady"].items()))
        lines.append(
            f"| {r['n']:,} | {_f(r['links_s'])} | {_f(r['births_s'])} | {r['online_after_connect']:,} "
            f"({_f(r['connect_window_s'], '.0f')} s) | {c['consumer']:.1f} / {c['simulator']:.1f}"
            f" / {c.get('broker', float('nan')):.1f} | {s['consumer']:.0f} / {s['simulator']:.0f} / "
            f"{s.get('broker', float('nan')):.0f} | {_f(r['health_per_s'])} | {states} | "
            f"{r['rss_mb']:.0f} ({r['rss_kb_per_device']:.0f}) | {r['threads']:,} |"
        )
    lines += [
        "",
        "## Presence after stopping every tenth agent abruptly",
        "",
        "| devices (connected) | stopped: every tenth connected | marked not online within the window "
        "| of them `offline` (Will) | last marked after s | window s (1.5 heartbeats + 5) "
        "| others online before, not online after |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        false = f"{r['false_offline']:,}" + (f" ({', '.join(r['false_states'])})" if r["false_states"] else "")
        lines.append(
            f"| {r['n']:,} ({r['connected']:,}) | {r['victims']:,} | {r['victims_marked']:,} | "
            f"{r['victims_offline']:,} | {_f(r['marked_s'])} | {r['window_s']:.0f} | {false} |"
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
    p.add_argument("--devices", default="2000", help="comma-separated fleet sizes (default 2000; 2000,5000,10000)")
    p.add_argument("--heartbeat", type=float, default=30.0, help="agents' heartbeat, s (default 30)")
    p.add_argument("--steady", type=float, default=45.0, help="steady-state window, s (default 45)")
    p.add_argument("--connect-budget", type=float, default=180.0, help="time given to connecting all, s")
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
