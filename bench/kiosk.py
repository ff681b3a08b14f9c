"""Kiosk role benchmark: the cost of status polling, and paper-end -> the event in the store.

    .venv/bin/python -m bench.kiosk [--escpos-polls 2000] [--ipp-polls 300] [--fast-k 10] [--slow-k 3] [--held 1]

Prints figures, asserts nothing, and writes them to ``bench/results/kiosk-<date>.md`` (the report says how each
is measured). 1: ESC/POS status through pyusb onto ``SimulatedUsbPrinter`` (no USB bus) and IPP to the real
``ippeveprinter``, against asyncio and plain-HTTP baselines. 2: a private Mosquitto, ``hallfleet consumer``
(SQLite) and an in-process kiosk agent; the receipt that ends the roll -> thermal_paper "empty" in the store.
Bounded (``--time-limit``), loopback only; every process started here is stopped on exit, error, Ctrl-C or
SIGTERM (consumer and http.server also by PR_SET_PDEATHSIG; ippeveprinter, started by
tests/support/ippeveprinter.py, not: a SIGKILLed bench can leave it running).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import datetime as dt
import json
import math
import os
import platform
import random
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.roles.kiosk import KioskConfig, SimulatedReceiptConfig
from bench._machine import cpu_model, load_average, memory_total
from bench._run import in_workdir, write_results
from broker.mosquitto.local import LocalMosquitto, find_mosquitto
from drivers.escpos import ReceiptPrinter, UsbPrinterConfig, UsbTransport
from drivers.escpos.sim import SimulatedUsbPrinter
from drivers.ipp.client import A4PrinterConfig, get_status, post_ipp
from drivers.ipp.codec import encode_get_printer_attributes
from drivers.ipp.status import REQUESTED
from runtime.settings import MqttConfig
from tests.support.ippeveprinter import IppEvePrinter, find_binary, free_port

SITE = "bench"
LINES = ["青浦区政务服务中心  取号 A001", "请留意叫号屏"]  # one ticket: 2 lines, feed, cut
STORE_POLL_S = 0.005
SHORT_ROLL = 20.5  # receipts' worth of paper loaded between samples (below near-end, so "low")
DEBOUNCE_S = KioskConfig().debounce_s
RESULTS = Path(__file__).resolve().parent / "results"


def pct(values: Sequence[float], q: float) -> float:
    """Nearest rank: with fewer than 100 values p99 is the maximum."""
    s = sorted(values)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)] if s else math.nan


def ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v * 1000:,.0f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def proc_cpu(pid: int | None) -> float:
    """utime + stime of a process in seconds (10 ms ticks; nan when unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn(args: list[str], log_path: Path, stack: contextlib.ExitStack) -> subprocess.Popen[bytes]:
    """A child in its own session (Ctrl-C reaches the bench, which stops it) that dies with this process."""
    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()

    def die_with_parent() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLFLEET_")}
    with log_path.open("ab") as out:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True, preexec_fn=die_with_parent)  # fmt: skip

    def stop() -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)

    stack.callback(stop)
    return p


async def until(check: Callable[[], Any], limit_s: float, what: str, every: float = 0.02) -> Any:
    deadline = time.monotonic() + limit_s
    while not (result := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {limit_s:g} s")
        await asyncio.sleep(every)
    return result


# -- 1. polling cost ----------------------------------------------------------------------------------
@dataclass
class Cost:
    label: str
    n: int
    wall_s: float
    cpu_s: float  # this process, all threads
    peer_cpu_s: float = math.nan  # the server process
    baseline: Cost | None = None

    def us(self, seconds: float) -> str:
        return "-" if math.isnan(seconds) else f"{seconds / self.n * 1e6:,.1f}"

    def row(self) -> list[str]:
        b, ratio = self.baseline, ""
        if b and b.wall_s > 0 and b.cpu_s > 0:
            ratio = f"{self.wall_s / b.wall_s * b.n / self.n:,.1f}x / {self.cpu_s / b.cpu_s * b.n / self.n:,.1f}x"
        return [self.label, str(self.n), f"{self.n / self.wall_s:,.0f}", self.us(self.wall_s),
                self.us(self.cpu_s), self.us(self.peer_cpu_s), ratio]  # fmt: skip


async def measure(label: str, n: int, step: Callable[[], Awaitable[object]], peer: int | None = None) -> Cost:
    for _ in range(max(5, n // 20)):  # warm-up
        await step()
    p0, c0, t0 = proc_cpu(peer), time.process_time(), time.perf_counter()
    for _ in range(n):
        await step()
    t1, c1 = time.perf_counter(), time.process_time()
    return Cost(label, n, t1 - t0, c1 - c0, proc_cpu(peer) - p0)


async def http_get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET /status.bin HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def polling_cost(args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack) -> list[Cost]:
    sim = SimulatedUsbPrinter()
    printer = ReceiptPrinter(UsbTransport(UsbPrinterConfig(vendor_id=sim.vendor_id, product_id=sim.product_id), sim))
    stack.callback(printer.close)
    assert printer.status().paper_state == "ok"
    n = args.escpos_polls

    async def direct() -> None:
        printer.status()

    loop0 = await measure("baseline: `await asyncio.sleep(0)`", n, lambda: asyncio.sleep(0))
    thread0 = await measure("baseline: `await asyncio.to_thread(no-op)`", n, lambda: asyncio.to_thread(int))
    esc = await measure("ESC/POS status(), direct (driver + pyusb + sim)", n, direct)
    esc_t = await measure("ESC/POS status() via asyncio.to_thread (as the role)", n,
                          lambda: asyncio.to_thread(printer.status))  # fmt: skip
    esc.baseline, esc_t.baseline = loop0, thread0
    assert len(sim.status_queries) == 4 * (2 * n + 2 * max(5, n // 20) + 1)  # DLE EOT 1..4 every poll

    ipp = IppEvePrinter(workdir / "a4")
    stack.callback(ipp.stop)
    ipp.start()
    cfg = A4PrinterConfig(url=ipp.url)
    answer = await post_ipp(cfg, encode_get_printer_attributes(cfg.printer_uri, REQUESTED, 1))
    assert (await get_status(cfg)).reachable
    (workdir / "www").mkdir()
    (workdir / "www" / "status.bin").write_bytes(os.urandom(len(answer)))
    port = free_port()
    server = spawn([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(workdir / "www"),
                    str(port)], workdir / "http.server.log", stack)  # fmt: skip
    for _ in range(200):
        with contextlib.suppress(OSError):
            if (await http_get(port)).startswith(b"HTTP/1.0 200"):
                break
        await asyncio.sleep(0.05)
    n = args.ipp_polls
    label = f"baseline: HTTP GET of {len(answer):,} bytes to http.server"
    get = await measure(label, n, lambda: http_get(port), server.pid)
    ipp_pid = ipp.popen.pid if ipp.popen else None
    ipp_cost = await measure("IPP get_status() to ippeveprinter", n, lambda: get_status(cfg), ipp_pid)
    ipp_cost.baseline = get
    return [loop0, thread0, esc, esc_t, get, ipp_cost]


# -- 2. paper-end -> stored ---------------------------------------------------------------------------
@dataclass
class SteppedClock:
    """SystemClock whose monotonic() can be stepped forward (stands for hours the bench does not wait)."""

    offset: float = 0.0

    def now(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC)

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


@dataclass
class Event:
    seq: int
    data: dict[str, Any]
    ts: float  # the agent's wall clock when it built the envelope (epoch s)
    received_at: float  # the consumer's


def events(db: sqlite3.Connection, device: str, after: int) -> list[Event]:
    def epoch(text: str) -> float:
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()

    rows = db.execute("SELECT seq, data, ts, received_at FROM events WHERE site = ? AND device = ? AND seq > ?"
                      " AND type LIKE 'kiosk.%' ORDER BY seq", (SITE, device, after))  # fmt: skip
    return [Event(r[0], json.loads(r[1]), epoch(r[2]), epoch(r[3])) for r in rows]


def paper(new: list[Event], state: str) -> Event | None:
    return next((e for e in new if e.data.get("consumable") == "thermal_paper" and e.data["state"] == state), None)


@dataclass
class Sample:
    stored: float  # print returned -> this bench reads "empty" in the store
    poll_wait: float  # print returned -> ts of the first event of the poll that saw it
    serial: float  # that first event's ts -> the "empty" event's ts (the poll's events are emitted one by one)
    to_consumer: float  # "empty" ts -> consumer received_at
    visible: float  # received_at -> read here
    events: int  # kiosk.* events after "low" up to and including "empty" (those of the poll that saw it)
    since_low: float  # "low" ts -> paper-end


@dataclass
class Series:
    poll_s: float
    samples: list[Sample] = field(default_factory=list)
    held: list[Sample] = field(default_factory=list)
    receipts: int = 0
    receipt_mm: float = 0.0
    note: str = ""


async def paper_series(poll_s: float, k: int, held: int, port: int, db: sqlite3.Connection, workdir: Path,
                       deadline: float) -> Series:  # fmt: skip
    out, device, clock = Series(poll_s), f"kiosk-p{poll_s:g}".replace(".", "_"), SteppedClock()
    agent = Agent(
        AgentConfig(site=SITE, device=device, role="kiosk", heartbeat_s=60, clock_sync_file=Path("/"),
                    mqtt=MqttConfig(host="127.0.0.1", port=port), outbox=OutboxConfig(path=workdir / f"{device}.db"),
                    kiosk=KioskConfig(receipt=SimulatedReceiptConfig(), poll_s=poll_s)),
        clock=clock,
    )  # fmt: skip
    task = asyncio.create_task(agent.run())
    try:
        role = agent.kiosk
        sim = role.receipt_sim if role else None
        assert role is not None and sim is not None
        last = (await until(lambda: paper(events(db, device, -1), "ok"), 15, "first snapshot")).seq
        phases = random.sample([(j + random.random()) / k for j in range(k)], k) + [random.random()] * held
        for i in range(k + held):  # paper-end at a random phase of the poll, stratified: one per 1/k of it
            hold = DEBOUNCE_S if i >= k else 0.0
            if time.monotonic() + 3 * poll_s + 5 + hold > deadline:
                out.note = f"stopped after {i} of {k + held} samples: time limit"
                break
            if i:
                sim.refill(SHORT_ROLL * out.receipt_mm)
            while not out.receipt_mm or sim.paper_mm > out.receipt_mm:  # until the next receipt ends the roll
                before = sim.paper_mm
                await role.print_receipt(LINES)
                out.receipt_mm, out.receipts = out.receipt_mm or before - sim.paper_mm, out.receipts + 1
            clock.offset += DEBOUNCE_S  # the "low" is held by the previous change (ok, or the refill): let it out
            low: Event = await until(lambda: paper(events(db, device, last), "low"),  # noqa: B023 (awaited here)
                                     3 * poll_s + 5, "low in the store", STORE_POLL_S)  # fmt: skip
            if not hold:
                clock.offset += DEBOUNCE_S  # the hours at near-end
            await asyncio.sleep(phases[i] * poll_s)
            await role.print_receipt(LINES)
            t0, w0 = time.perf_counter(), time.time()
            out.receipts += 1
            assert sim.paper_mm == 0
            while True:
                new = events(db, device, low.seq)
                t, w = time.perf_counter(), time.time()
                if empty := paper(new, "empty"):
                    break
                if t - t0 > 2 * poll_s + 10 + hold:
                    raise TimeoutError(f"poll_s={poll_s:g}: no thermal_paper empty stored in {t - t0:.0f} s")
                await asyncio.sleep(STORE_POLL_S)
            before_empty = [e.ts for e in new if e.seq <= empty.seq]  # kiosk.* only: no heartbeats
            s = Sample(t - t0, min(before_empty) - w0, empty.ts - min(before_empty), empty.received_at - empty.ts,
                       w - empty.received_at, len(before_empty), w0 - low.ts)  # fmt: skip
            (out.held if hold else out.samples).append(s)
            last = empty.seq
            print(f"  poll_s={poll_s:g}{' held' if hold else ''}: {s.stored * 1000:,.0f} ms", flush=True)
    finally:
        agent.stop()
        await asyncio.wait_for(task, 20)
    return out


async def paper_to_store(args: argparse.Namespace, workdir: Path, stack: contextlib.ExitStack) -> list[Series]:
    broker = LocalMosquitto(workdir / "mosquitto")
    stack.callback(broker.stop)
    broker.start()
    cfg, log_path = workdir / "consumer.toml", workdir / "consumer.log"
    cfg.write_text(f'instance = "bench"\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
                   f'[store]\nurl = "sqlite+aiosqlite:///{workdir / "store.db"}"\n')  # fmt: skip
    consumer = spawn([sys.executable, "-m", "hallfleet.cli", "consumer", "--config", str(cfg)], log_path, stack)

    def subscribed() -> bool:
        if consumer.poll() is not None:
            raise RuntimeError(f"consumer exited with {consumer.returncode}; see {log_path}")
        return "subscribed" in log_path.read_text(errors="replace")

    await until(subscribed, 30, "consumer subscription")
    db = sqlite3.connect(workdir / "store.db", isolation_level=None)
    stack.callback(db.close)
    end = args.t0 + args.time_limit
    fast = await paper_series(1.0, args.fast_k, args.held, broker.port, db, workdir, end - 35 * args.slow_k)
    return [fast, await paper_series(10.0, args.slow_k, 0, broker.port, db, workdir, end)]


# -- report -------------------------------------------------------------------------------------------
def machine() -> list[tuple[str, str]]:
    def out(*argv: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            r = subprocess.run(argv, capture_output=True, text=True, timeout=5)
            return ((r.stdout or r.stderr).strip().splitlines() or ["unknown"])[0]
        return "unknown"

    dpkg = out("dpkg-query", "-W", "-f=${Version}", "cups-ipp-utils")
    return [
        ("nproc", f"{len(os.sched_getaffinity(0))} (os.cpu_count {os.cpu_count()})"),
        ("CPU", cpu_model()),
        ("memory", memory_total()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("Mosquitto", out(str(find_mosquitto()), "-h")),
        ("ippeveprinter", f"{out(find_binary('ippeveprinter'), '--version')} (Debian cups-ipp-utils {dpkg})"),
        ("pyusb", out(sys.executable, "-c", "import usb; print(usb.__version__)")),
        ("load average at start", load_average()),
    ]


def findings(costs: list[Cost], series: list[Series]) -> list[str]:
    esc, ipp, both = costs[3], costs[5], series[0].samples + series[1].samples
    cpu = (esc.cpu_s / esc.n + (ipp.cpu_s + ipp.peer_cpu_s) / ipp.n) * 1e6
    md = [
        "## Findings",
        "",
        f"- One poll of both printers costs ~{cpu:,.0f} µs of CPU (ESC/POS via to_thread on the "
        f"sim; IPP client + ippeveprinter): {cpu / 1e4:.3f} % of a core at poll_s = 1, a tenth of that at 10.",
    ]
    for s in series:
        if xs := [x.stored for x in s.samples]:
            md.append(
                f"- Paper-end -> stored, poll_s = {s.poll_s:g}: p50 {ms(pct(xs, 50))} ms, max {ms(max(xs))} ms, "
                f"mean {ms(sum(xs) / len(xs))} ms (poll_s / 2 = {s.poll_s * 500:,.0f} ms), n = {len(xs)}."
            )
    if both:
        md.append(
            f'- The "empty" is event {pct([x.events for x in both], 50):.0f} of its poll and comes p50 '
            f"{ms(pct([x.serial for x in both], 50))} ms after the first: `KioskRole.publish()` awaits each "
            "`emit()` in turn, and each waits for its own outbox group commit (commit_interval_ms 20)."
        )
    md += [
        f'- Inside the debounce window (HELD) it took {ms(x.stored)} ms: "low" had been published '
        f"{ms(x.since_low)} ms before paper-end."
        for x in series[0].held
    ]
    return [*md, ""]


def report(costs: list[Cost], series: list[Series], mach: list[tuple[str, str]], cmd: str, started: dt.datetime,
           took: float) -> str:  # fmt: skip
    md = [f"# Kiosk role: status polling cost, paper-end -> store, {started:%Y-%m-%d %H:%M %Z}", "",
          f"Command: `{cmd}` (took {took:.0f} s; one machine, loopback only; load average at the end "
          f"{load_average()}).", "", "## Machine", "",
          *table(["", ""], mach), "", "## 1. Cost of one status poll", "",
          "Sequential polls after a warm-up. CPU: `time.process_time()` of the bench process (all threads); the "
          "server's from `/proc/<pid>/stat` (10 ms ticks). Ratio: wall / CPU per poll against the baseline just "
          "above. **ESC/POS runs on `SimulatedUsbPrinter`, a pyusb backend in this process: the driver + pyusb + "
          "the simulated device's Python, not a USB bus.** The sim's timeouts are immediate; on a real printer "
          "each poll also waits out the drain read (`DRAIN_TIMEOUT_MS` = 20 ms in `drivers/escpos/printer.py`), "
          "so a real poll lasts at least 20 ms, CPU aside.", "",
          *table(["poll", "n", "polls/s", "wall µs/poll", "bench CPU µs/poll", "server CPU µs/poll",
                  "ratio wall / CPU"], [c.row() for c in costs]), "",
          "## 2. Paper-end -> kiosk.consumable thermal_paper \"empty\" in the store", "",
          "Private Mosquitto, `hallfleet consumer` (own process, SQLite, shipped `[ingest]`), in-process agent "
          f"(outbox defaults), kiosk role with `SimulatedReceiptConfig()` (50 m roll, near-end 2 m), debounce_s "
          f"{DEBOUNCE_S:g} and snapshot_s default. The first sample runs the whole roll down with `print_receipt`, "
          f"later ones a roll of {SHORT_ROLL:g} receipts; the last receipt comes after a random 0..poll_s pause "
          "(stratified: one in each 1/n of the cycle). "
          f"The debouncer holds an \"empty\" that follows the \"low\" within {DEBOUNCE_S:g} s; on a kiosk the roll "
          "sits at near-end for hours, so once \"low\" is stored the agent's `Clock` (intervals only: debouncer, "
          "snapshot, link) is stepped by debounce_s to stand for them (asyncio's timers, the poll sleep, are not). "
          "Store read every 5 ms. Stages from the stored event: envelope `ts` (agent) and `received_at` "
          "(consumer); one host, one clock.", ""]  # fmt: skip
    md[4:4] = findings(costs, series)
    rows = []
    for s in series:
        for label, xs in ((f"poll_s = {s.poll_s:g}", s.samples), (f"poll_s = {s.poll_s:g}, HELD", s.held)):
            if xs:
                st = [x.stored for x in xs]
                stages = [ms(pct([getattr(x, a) for x in xs], 50)) for a in ("poll_wait", "serial", "to_consumer",
                                                                               "visible", "since_low")]  # fmt: skip
                rows.append([label, str(len(xs)), ms(pct(st, 50)), ms(pct(st, 99)), ms(max(st)),
                             ms(sum(st) / len(st)), *stages])  # fmt: skip
    md += table(["paper-end -> stored (ms)", "n", "p50", "p99", "max", "mean", "p50 wait for the poll",
                 "p50 earlier events of that poll", "p50 ts -> consumer", "p50 consumer -> read",
                 "p50 low ts -> paper-end"], rows)  # fmt: skip
    md += ["", 'Samples (ms: stored / waited for the poll / events of that poll up to "empty"):', ""]
    for s in series:
        for label, xs in (("", s.samples), (" held", s.held)):
            if xs:
                text = ", ".join(f"{ms(x.stored)} / {ms(x.poll_wait)} / {x.events}" for x in xs)
                md.append(f"- poll_s = {s.poll_s:g}{label}: {text}")
        md.append(f"- poll_s = {s.poll_s:g}: {s.receipts} receipts of {s.receipt_mm:.2f} mm. {s.note}".rstrip())
    md += ["", "Expected: U(0, poll_s) for the next poll (mean poll_s / 2), then the outbox group commit (20 ms), "
           "MQTT, the consumer's batch_wait_ms (5 ms) and commit, and up to 5 ms of store polling. "
           "`KioskRole.publish()` awaits each `emit()` in turn and each waits for its own group commit, so the "
           "\"empty\", last of its poll's events (faults, then state, then consumables), comes one commit per "
           "earlier event later. HELD: no clock step, so the \"empty\" came less than debounce_s after the "
           "\"low\" was published and the debouncer keeps it until the window ends (`Debouncer.due()`, next poll); "
           "the paper_end fault, its clearing by the refill also recent here, is held likewise. p99 with fewer "
           "than 100 samples is the maximum.", ""]  # fmt: skip
    return "\n".join(md)


# -- main ---------------------------------------------------------------------------------------------
async def run(args: argparse.Namespace, workdir: Path) -> tuple[list[Cost], list[Series]]:
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a background job inherits it ignored
        asyncio.get_running_loop().add_signal_handler(sig, main_task.cancel)
    with contextlib.ExitStack() as stack:  # stops every child, in reverse order, however we leave
        async with asyncio.timeout(args.time_limit + 60):
            print("1. polling cost", flush=True)
            costs = await polling_cost(args, workdir, stack)
            print("2. paper-end -> stored", flush=True)
            return costs, await paper_to_store(args, workdir, stack)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kiosk", description=__doc__.split("\n\n")[0])
    p.add_argument("--escpos-polls", type=int, default=2000, help="ESC/POS status polls (default 2000)")
    p.add_argument("--ipp-polls", type=int, default=300, help="IPP Get-Printer-Attributes polls (default 300)")
    p.add_argument("--fast-k", type=int, default=10, help="paper-end samples with poll_s = 1 (default 10)")
    p.add_argument("--slow-k", type=int, default=3, help="paper-end samples with poll_s = 10 (default 3)")
    p.add_argument("--held", type=int, default=1, help="poll_s = 1 samples inside the debounce window (default 1)")
    p.add_argument("--time-limit", type=float, default=220, help="seconds for the whole run (default 220)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (logs, store)")
    args = p.parse_args(argv)
    if min(args.escpos_polls, args.ipp_polls) < 1 or min(args.fast_k, args.slow_k, args.held) < 0:
        p.error("poll counts must be at least 1, sample counts at least 0")
    cmd = shlex.join([".venv/bin/python", "-m", "bench.kiosk", *(sys.argv[1:] if argv is None else argv)])
    started, args.t0, mach = dt.datetime.now().astimezone(), time.monotonic(), machine()
    costs, series = in_workdir("kiosk", "about 3 minutes", args.keep, lambda workdir: run(args, workdir))
    write_results("kiosk", started, report(costs, series, mach, cmd, started, time.monotonic() - args.t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
