"""One peer side by side: Node-RED (MQTT in -> JSON -> batched SQLite inserts) against hallfleet's consumer on SQLite,
on the same load in the same run.

    .venv/bin/python -m bench.nodered [--events 20000] [--devices 50]

Node-RED comes from the npm registry into a cache outside the repository (``~/.cache/hallfleet-bench/node-red``):
``npm install --prefix DIR --omit=optional node-red node-red-node-sqlite`` with ``npm_config_build_from_source``
set, so the ``sqlite3`` module the SQLite node needs is compiled here (node-gyp, the local Node headers in
/usr/include/node, SQLite's own bundled source) instead of fetching a prebuilt binary from GitHub releases.
``--install`` runs that when the cache lacks it.

The flow, generated here, batches as a Node-RED user who wants throughput would: ``mqtt in`` (MQTT v5, QoS 1,
the consumer's filter ``hall/v1/+/+/evt/#``, parsed as JSON) -> ``function`` (rows kept in its context,
flushed at the consumer's own bounds, 500 rows or 20 ms after the oldest, by a timer so the tail flushes too)
-> ``sqlite`` (msg.topic mode: one multi-row ``INSERT INTO events`` with the values bound positionally, one
transaction per batch). An ``inject`` fired once at start sets ``journal_mode=WAL`` and ``synchronous=FULL`` on
Node-RED's own connection and reads both back into a table; the bench starts the load only once that
read-back says WAL and FULL. The table has no unique key, so duplicates would show. The MQTT node
acknowledges each message on receipt, before its batch is written (hallfleet's consumer: after the commit).

The load is bench/ingest.py's generator (imported, not copied): N pre-built ``attendance.punch`` envelopes
from D paho clients, QoS 1, at most 100 unacknowledged each, as fast as the broker takes them. Node-RED:
N / (first publish -> N rows in its table), and whether it stored each exactly once (count, distinct ids).
hallfleet: bench/ingest.py's own throughput run (``run_throughput``) on a fresh SQLite store. Ratio printed.
Prints figures and writes bench/results/nodered-<date>.md; asserts nothing. Every process started here stops
on exit (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench._machine import load_average
from bench._run import in_workdir, write_results
from bench.agent_footprint import hwm_kb
from bench.ingest import (
    PROBE_SITE,
    Ctx,
    _pdeathsig,
    cpu_of,
    device_names,
    gen_spec,
    generator_main,
    machine,
    pids_with_cmdline,
    proc_cpu_s,
    publish_probe,
    run_throughput,
    spawn,
    stop_child,
)
from broker.config import IngestConfig
from broker.mosquitto.local import LocalMosquitto, free_port
from protocol import topics

FULL = 2  # PRAGMA synchronous's number for FULL
CACHE = Path.home() / ".cache" / "hallfleet-bench" / "node-red"
PACKAGES = ("node-red@4.1.8", "node-red-node-sqlite@1.1.1")  # Node-RED 5 needs Node.js >= 22.9; this machine has 20
COLUMNS = ("id", "site", "device", "type", "seq", "ts", "body")
BATCH = IngestConfig()  # the consumer's own bounds (batch_size rows or batch_wait_ms), so both sides batch alike
# The setup runs once on Node-RED's own connection (synchronous is per connection), then reads both pragmas back
# from that connection into a table the bench checks before it starts the load.
SETUP_SQL = (
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
    "INSERT INTO bench_pragmas (journal_mode, synchronous) "
    "SELECT (SELECT journal_mode FROM pragma_journal_mode), (SELECT synchronous FROM pragma_synchronous);"
)
# A function node keeps rows in its context and flushes at BATCH.batch_size rows or batch_wait_ms after the
# oldest (a timer, so the tail flushes too): one multi-row INSERT, which SQLite commits as one transaction. The
# values go in bound, positionally: the sqlite node's msg.topic mode binds msg.payload as an array only when it
# has as many items as the statement has '$', hence $-named placeholders ($p0, $p1, ...) instead of '?'.
BATCHER = f"""const COLUMNS = {json.dumps(list(COLUMNS))};
const MAX_ROWS = {BATCH.batch_size}, WAIT_MS = {BATCH.batch_wait_ms};
function flush() {{
    clearTimeout(context.get("timer"));
    context.set("timer", null);
    const rows = context.get("rows") || [];
    if (rows.length === 0) {{ return; }}
    context.set("rows", []);
    const values = rows.map((_, r) => "(" + COLUMNS.map((_, c) => "$p" + (r * COLUMNS.length + c)).join(", ") + ")");
    node.send({{topic: "INSERT INTO events (" + COLUMNS.join(", ") + ") VALUES " + values.join(", "),
               payload: rows.flat()}});
}}
const e = msg.payload;
const rows = context.get("rows") || [];
rows.push([e.id, e.site, e.device, e.type, e.seq, e.ts, JSON.stringify(e.data)]);
context.set("rows", rows);
if (rows.length >= MAX_ROWS) {{ flush(); }}
else if (!context.get("timer")) {{ context.set("timer", setTimeout(flush, WAIT_MS)); }}
return null;"""


def red_js() -> Path:
    return CACHE / "node_modules" / "node-red" / "red.js"


def installed() -> bool:
    return (
        red_js().is_file()
        and (CACHE / "node_modules" / "sqlite3" / "build" / "Release" / "node_sqlite3.node").is_file()
    )


def install() -> None:
    CACHE.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "npm_config_build_from_source": "true"}
    if Path("/usr/include/node/common.gypi").is_file():  # Debian's headers: node-gyp downloads none
        env.setdefault("npm_config_nodedir", "/usr")
    cmd = ["npm", "install", "--prefix", str(CACHE), "--omit=optional", "--no-audit", "--no-fund", *PACKAGES]
    print("installing:", shlex.join(cmd), flush=True)
    subprocess.run(cmd, env=env, check=True)


def versions() -> dict[str, str]:
    out = {}
    for name in ("node-red", "node-red-node-sqlite", "sqlite3"):
        try:
            out[name] = json.loads((CACHE / "node_modules" / name / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            out[name] = "absent"
    node = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False).stdout.strip()
    return {"Node.js": node, **out}


def flow(host: str, port: int, db: Path) -> list[dict[str, Any]]:
    return [
        {"id": "tab", "type": "tab", "label": "hallfleet bench"},
        {"id": "broker", "type": "mqtt-broker", "name": "bench", "broker": host, "port": str(port),
         "clientid": "nodered-bench", "autoConnect": True, "usetls": False, "protocolVersion": "5",
         "keepalive": "60", "cleansession": True, "sessionExpiry": "0"},
        {"id": "db", "type": "sqlitedb", "db": str(db), "mode": "RWC"},
        {"id": "once", "type": "inject", "z": "tab", "name": "pragmas", "props": [{"p": "topic", "vt": "str"}],
         "topic": SETUP_SQL, "once": True, "onceDelay": "0.1", "repeat": "", "x": 100, "y": 40,
         "wires": [["setup"]]},
        {"id": "setup", "type": "sqlite", "z": "tab", "mydb": "db", "sqlquery": "batch", "name": "pragmas",
         "x": 300, "y": 40, "wires": [[]]},
        {"id": "in", "type": "mqtt in", "z": "tab", "name": "", "topic": topics.ALL_EVENTS, "qos": "1",
         "datatype": "json", "broker": "broker", "nl": False, "rap": False, "inputs": 0, "x": 100, "y": 100,
         "wires": [["batch"]]},
        {"id": "batch", "type": "function", "z": "tab", "name": "batch rows", "func": BATCHER, "outputs": 1,
         "x": 300, "y": 100, "wires": [["insert"]]},
        {"id": "insert", "type": "sqlite", "z": "tab", "mydb": "db", "sqlquery": "msg.topic", "name": "insert",
         "x": 500, "y": 100, "wires": [[]]},
    ]  # fmt: skip


def settings(port: int) -> str:
    return (
        "module.exports = {\n"
        f"  uiPort: {port}, uiHost: '127.0.0.1', flowFile: 'flows.json', credentialSecret: false,\n"
        "  httpAdminRoot: false, httpNodeRoot: false,\n"
        "  logging: { console: { level: 'info', metrics: false, audit: false } },\n"
        "};\n"
    )


def create_db(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE events (id TEXT NOT NULL, site TEXT NOT NULL, device TEXT NOT NULL, type TEXT NOT NULL, "
            "seq INTEGER NOT NULL, ts TEXT NOT NULL, body TEXT NOT NULL)"
        )
        db.execute("CREATE TABLE bench_pragmas (journal_mode TEXT NOT NULL, synchronous INTEGER NOT NULL)")


class NodeRed:
    def __init__(self, workdir: Path, host: str, port: int) -> None:
        self.dir = workdir / "node-red"
        shutil.rmtree(self.dir, ignore_errors=True)  # each run starts from an empty table (runs repeat)
        self.dir.mkdir(parents=True)
        self.db = self.dir / "events.db"
        create_db(self.db)
        (self.dir / "flows.json").write_text(json.dumps(flow(host, port, self.db), indent=1))
        (self.dir / "settings.js").write_text(settings(free_port()))
        self.log = self.dir / "node-red.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        parent = os.getpid()
        self.proc = subprocess.Popen(
            ["node", str(red_js()), "--userDir", str(self.dir), "--settings", str(self.dir / "settings.js")],
            cwd=self.dir, stdin=subprocess.DEVNULL, stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            preexec_fn=lambda: _pdeathsig(parent),
        )  # fmt: skip
        return self.proc.pid

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"Node-RED exited with {self.proc.returncode}:\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def pragmas(db: sqlite3.Connection) -> tuple[str, int] | None:
    """What Node-RED's connection read back after its setup; None until the setup ran."""
    row = db.execute("SELECT journal_mode, synchronous FROM bench_pragmas").fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def counts(db: sqlite3.Connection, site: str) -> tuple[int, int]:
    row = db.execute("SELECT count(*), count(DISTINCT id) FROM events WHERE site = ?", (site,)).fetchone()
    return int(row[0]), int(row[1])


async def until_ready(ctx: Ctx, red: NodeRed, db: sqlite3.Connection) -> tuple[str, int]:
    """Wait until Node-RED ran its setup and stored an event published on a device topic; the pragmas it read
    back. The probes may precede the setup, but the measured load starts only after both, so every measured
    insert runs at the pragmas checked here."""
    deadline, seq = time.monotonic() + 120, 0
    while True:
        seq += 1
        await asyncio.to_thread(publish_probe, ctx, seq)
        red.check()
        await asyncio.sleep(0.5)
        if (got := pragmas(db)) and counts(db, PROBE_SITE)[0]:
            if got != ("wal", FULL):
                raise RuntimeError(f"Node-RED's connection read back journal_mode, synchronous = {got}, not wal, 2")
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"Node-RED ran no setup or stored no probe event within 120 s; see {red.log}")


async def run_nodered(ctx: Ctx) -> dict[str, Any]:
    n = ctx.args.events
    red = NodeRed(ctx.workdir, ctx.broker.host, ctx.broker.port)
    gen = spawn(ctx, "generator-nodered", generator_main, gen_spec(ctx, n, 0, False))
    pid = red.start()
    db = sqlite3.connect(red.db, isolation_level=None, timeout=30)
    try:
        got = await until_ready(ctx, red, db)
        await gen.expect("ready", 120)
        mosq = [ctx.mosquitto_pid] if ctx.mosquitto_pid else []
        cpu0 = cpu_of([pid, *mosq])
        gen.send("go")
        site = gen_spec(ctx, n, 0, False).site
        t_done, stored, last_change, last = 0, (0, 0), time.monotonic(), -1
        end = time.monotonic() + ctx.args.timeout
        while time.monotonic() < end:
            await asyncio.sleep(0.05)
            red.check()
            gen.check("result")
            stored = counts(db, site)
            if stored[0] != last:
                last, last_change = stored[0], time.monotonic()
            if stored[0] >= n:
                t_done = time.monotonic_ns()
                break
            if time.monotonic() - last_change > 30:
                break  # no progress for 30 s: what it has is what it stored
        cpu1 = cpu_of([pid, *mosq])
        result = await gen.expect("result", 60)
        await asyncio.sleep(2)  # anything late (a duplicate after all N?) shows in the final count
        stored = counts(db, site)
        rss = hwm_kb(pid)
    finally:
        stop_child(gen.proc)
        cpu_end = proc_cpu_s(pid)
        red.stop()
        db.close()
    span = (t_done - result["t_first"]) / 1e9 if t_done else float("nan")
    return {
        "events_s": n / span,
        "span_s": span,
        "stored": stored[0],
        "distinct": stored[1],
        "complete": bool(t_done),
        "cpu_per_100k": (cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0)) * 100_000 / n,
        "broker_cpu_per_100k": (cpu1.get(mosq[0], 0.0) - cpu0.get(mosq[0], 0.0)) * 100_000 / n
        if mosq
        else float("nan"),
        "gen_pub_s": n / ((result["t_acked"] - result["t_first"]) / 1e9),
        "peak_rss_mb": rss / 1024,
        "cpu_total_s": cpu_end,
        "flow": (
            f"one multi-row INSERT (one transaction) per {BATCH.batch_size} rows or {BATCH.batch_wait_ms} ms, "
            f"journal_mode={got[0]}, synchronous={got[1]} (FULL) as read back from Node-RED's connection; its MQTT "
            "node acknowledges on receipt, before the batch is written"
        ),
    }


def _f(v: float, spec: str = ",.0f") -> str:
    return "n/a" if v != v else format(v, spec)


def render(args: argparse.Namespace, red: dict[str, Any], hf: dict[str, Any], command: str, started: dt.datetime,
           took: float) -> str:  # fmt: skip
    n = args.events
    exactly_once = red["stored"] == n and red["distinct"] == n
    ratio = hf["events_s"] / red["events_s"] if red["events_s"] == red["events_s"] else float("nan")
    once = "yes" if exactly_once else f"no: {red['stored']:,} rows, {red['distinct']:,} distinct ids of {n:,}"
    return "\n".join(
        [
            f"# Node-RED beside hallfleet's consumer, {started:%Y-%m-%d %H:%M %Z}",
            "",
            f"Command: `{command}` (finished in {took:.0f} s)",
            "",
            "| machine | |",
            "|---|---|",
            *(f"| {k} | {v} |" for k, v in machine().items()),
            *(f"| {k} | {v} |" for k, v in versions().items()),
            f"| load average 1/5/15 min at end | {load_average()} (measured; nproc {len(os.sched_getaffinity(0))}) |",
            "",
            f"Load (both): {n:,} `attendance.punch` envelopes from {args.devices} devices, QoS 1, MQTT v5, at most "
            f"{args.window} unacknowledged per device, bench/ingest.py's generator in its own process; private "
            "Mosquitto; each subscriber in its own process; figure = N / (first publish -> N rows in its table).",
            "",
            "| | events/s | stored all N exactly once | CPU s / 100k | broker CPU s / 100k | generator publish msg/s |",
            "|---|---:|---|---:|---:|---:|",
            f"| Node-RED {versions()['node-red']} (mqtt in -> batching function -> sqlite multi-row insert) "
            f"| {_f(red['events_s'])} "
            f"| {once} | {_f(red['cpu_per_100k'], '.1f')} | {_f(red['broker_cpu_per_100k'], '.1f')} "
            f"| {_f(red['gen_pub_s'])} |",
            f"| hallfleet consumer (SQLite, batches of 500 / 20 ms, ON CONFLICT DO NOTHING) | {_f(hf['events_s'])} "
            f"| {'yes' if hf['complete'] and hf['stored'] >= n else 'no: ' + format(hf['stored'], ',')} "
            f"| {_f(hf['cpu_per_100k'], '.1f')} | {_f(hf['broker_cpu_per_100k'], '.1f')} | {_f(hf['gen_pub_s'])} |",
            "",
            f"**hallfleet / Node-RED: {_f(ratio, '.2f')}x** events/s. Node-RED peak RSS {red['peak_rss_mb']:.0f} MB.",
            "",
            "- Node-RED's SQLite node (node-red-node-sqlite, `sqlite3` compiled from source here), fed by a function "
            f"node that collects the rows: {red['flow']}. So what it has not inserted when it stops is lost, and a "
            "redelivery would be a second row (no unique key; none here, by the count).",
            "- hallfleet's figure is bench/ingest.py's `run_throughput` (consumer on uvloop, commit before PUBACK).",
            "",
        ]
    )


async def run_all(args: argparse.Namespace, workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    broker = LocalMosquitto(workdir / "mosquitto", extra_conf="autosave_interval 60\n")
    broker.start()
    mosq = [p for p in pids_with_cmdline(str(broker.conf_path)) if p != os.getpid()]
    ctx = Ctx(args, workdir, broker, mosq[0] if mosq else None, None, device_names(args.devices))
    try:
        print(f"Node-RED, {args.events:,} events ...", flush=True)
        red = await run_nodered(ctx)
        print(f"  {red['events_s']:,.0f} events/s; stored {red['stored']:,} rows, {red['distinct']:,} distinct ids",
              flush=True)  # fmt: skip
        print(f"hallfleet consumer, {args.events:,} events ...", flush=True)
        hf = await run_throughput(ctx, "sqlite")
        print(f"  {hf['events_s']:,.0f} events/s", flush=True)
        ratio = hf["events_s"] / red["events_s"]
        print(f"hallfleet / Node-RED: {ratio:.2f}x", flush=True)
    finally:
        for proc in ctx.children:
            stop_child(proc, timeout_s=10)
        broker.stop()
    return red, hf


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.nodered", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000, help="events per run (default 20000)")
    p.add_argument("--devices", type=int, default=50, help="simulated devices (default 50)")
    p.add_argument("--window", type=int, default=100, help="unacknowledged publishes per device")
    p.add_argument("--timeout", type=float, default=240, help="cap on one measured run, s")
    p.add_argument("--install", action="store_true", help=f"npm install Node-RED into {CACHE} if missing")
    p.add_argument("--keep", action="store_true", help="keep the work dir")
    a = p.parse_args(argv)
    if not 1_000 <= a.events <= 1_000_000 or not 1 <= a.devices <= 1_000:
        p.error("--events within 1,000 .. 1,000,000, --devices within 1 .. 1,000")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not installed():
        if not args.install:
            print(f"Node-RED is not in {CACHE}: run with --install (npm, from the registry)", file=sys.stderr)
            return 2
        if shutil.which("npm") is None:
            print("npm not found: install Debian's nodejs and npm", file=sys.stderr)
            return 2
        install()
    command = f".venv/bin/python -m bench.nodered {shlex.join(sys.argv[1:] if argv is None else argv)}".strip()
    started = dt.datetime.now().astimezone()
    t0 = time.monotonic()
    red, hf = in_workdir("nodered", "about 2 minutes", args.keep, lambda workdir: run_all(args, workdir))
    write_results("nodered", started, render(args, red, hf, command, started, time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
