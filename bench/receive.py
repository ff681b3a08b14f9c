"""Receive-path benchmark: how fast one process drains a backlog of queued QoS 1 messages, count only, with
an acknowledgement for each. Prints figures and asserts nothing.

    .venv/bin/python -m bench.receive [--events 100000] [--rounds 3] [--receive-maximum 2000] [--keep]

Drain mode, so the generator is never the ceiling: for each round, every subscriber kind first gets its own
persistent session (client id bench-KIND, shared subscription ``$share/bench-KIND/hall/v1/+/+/evt/#``,
QoS 1, then DISCONNECT), the generator then publishes N pre-built ~300-byte ``attendance.punch`` envelopes
(bench/ingest.py's, imported) and waits for every PUBACK, so the broker holds N messages for each session.
Each kind then drains its backlog in a fresh child process, one after the other:

- ``paho``: paho-mqtt 2.x ``loop_forever`` (the consumer's receive path before issue 19), acknowledging
  each message as it returns from ``on_message``.
- ``receiver``: broker/ingest/receive.py on the default asyncio loop, every batch acknowledged at once.
- ``receiver-uvloop``: the same on uvloop, as ``hallfleet consumer`` runs.

Figures per kind (median over rounds): messages/s = N / (connect -> Nth message handed to the caller), CPU
seconds (user+system of the child, same window) per 100,000 messages, and the load average before the
drain (a busy machine shows here first). Everything listens on 127.0.0.1 only; the private Mosquitto and
every child stop on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench._machine import cpu_model, load_average, memory_total
from bench._run import in_workdir, write_results
from broker.mosquitto.local import HOST, LocalMosquitto

KINDS = ("paho", "receiver", "receiver-uvloop")
SITE = "bench-hall"
FILTER = "hall/v1/+/+/evt/#"
# A snapshot of 100,000 queued messages every second would compete with the drain for the CPU.
MOSQUITTO_EXTRA = "autosave_interval 600\n"
SESSION_EXPIRY_S = 3600
CHILD_TIMEOUT_S = 600.0


def share(kind: str) -> str:
    return f"$share/bench-{kind}/{FILTER}"


def connect_props(receive_maximum: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    props.ReceiveMaximum = receive_maximum
    return props


# -- the parent: broker, sessions, generator -------------------------------------------------------------
def make_sessions(port: int, receive_maximum: int, kinds: tuple[str, ...] = KINDS) -> None:
    """A persistent session per kind, subscribed, then left: the broker queues for each from now on."""
    for kind in kinds:
        done: list[bool] = []
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{kind}", protocol=mqtt.MQTTv5)
        c.on_subscribe = lambda *_a, d=done: d.append(True)
        c.connect(HOST, port, clean_start=False, properties=connect_props(receive_maximum))
        c.loop_start()
        try:
            c.subscribe(share(kind), qos=1)
            deadline = time.monotonic() + 10
            while not done and time.monotonic() < deadline:
                time.sleep(0.01)
            if not done:
                raise RuntimeError(f"no SUBACK for bench-{kind}")
        finally:
            c.disconnect()
            c.loop_stop()


def payloads(n: int, devices: int = 50) -> list[tuple[str, bytes]]:
    from bench.ingest import envelope_bytes  # the same envelopes as the ingest bench; imports pydantic models

    ts = dt.datetime.now(dt.UTC)
    out = []
    for k in range(n):
        device = f"att-{k % devices:04d}"
        topic = f"hall/v1/{SITE}/{device}/evt/attendance.punch"
        out.append((topic, envelope_bytes(SITE, device, k // devices + 1, "bench-boot", ts)))
    return out


def generate(port: int, items: list[tuple[str, bytes]]) -> float:
    """Publish every item at QoS 1 and wait for all PUBACKs; returns the seconds it took."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-generator", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.connect(HOST, port)
    c.loop_start()
    t0 = time.monotonic()
    try:
        infos = [c.publish(topic, payload, qos=1) for topic, payload in items]
        for info in infos:
            info.wait_for_publish(60)
            if not info.is_published():
                raise RuntimeError("the broker did not PUBACK the backlog")
    finally:
        c.disconnect()
        c.loop_stop()
    return time.monotonic() - t0


def drain(kind: str, port: int, events: int, receive_maximum: int) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.receive", "--child", kind, "--port", str(port)]
    argv += ["--events", str(events), "--receive-maximum", str(receive_maximum)]
    load = load_average()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S + 30, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} drain failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["load"] = load
    return result


async def run_all(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    broker = LocalMosquitto(workdir / "mosquitto", extra_conf=MOSQUITTO_EXTRA)
    broker.start()
    results: list[dict[str, Any]] = []
    try:
        items = payloads(args.events)
        for rnd in range(1, args.rounds + 1):
            await asyncio.to_thread(make_sessions, broker.port, args.receive_maximum)
            gen_s = await asyncio.to_thread(generate, broker.port, items)
            print(f"round {rnd}: {args.events:,} queued for each of {len(KINDS)} sessions in {gen_s:.1f} s", flush=True)
            for kind in KINDS:
                r = await asyncio.to_thread(drain, kind, broker.port, args.events, args.receive_maximum)
                r.update(kind=kind, round=rnd)
                results.append(r)
                print(f"  {kind:16} {line(r)}", flush=True)
    finally:
        broker.stop()
    return results


def line(r: dict[str, Any]) -> str:
    if r["received"] < r["events"]:
        return f"INCOMPLETE: {r['received']:,} of {r['events']:,} in {r['wall_s']:.1f} s"
    return (
        f"{r['events'] / r['wall_s']:>10,.0f} msg/s  {r['cpu_s'] * 100_000 / r['events']:5.2f} CPU s per 100k  "
        f"load {r['load']}  ({r['loop']})"
    )


# -- the children: one kind each, timing only the drain --------------------------------------------------
def child_paho(port: int, events: int, receive_maximum: int) -> dict[str, Any]:
    count = 0
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-paho", protocol=mqtt.MQTTv5)

    def on_message(client: mqtt.Client, _u: object, _m: mqtt.MQTTMessage) -> None:
        nonlocal count
        count += 1
        if count >= events:
            client.disconnect()

    c.on_message = on_message
    t0, cpu0 = time.monotonic(), time.process_time()
    c.connect(HOST, port, clean_start=False, properties=connect_props(receive_maximum))
    c.subscribe(share("paho"), qos=1)
    c.loop_forever()
    wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {"received": count, "wall_s": wall, "cpu_s": cpu, "loop": "paho loop_forever"}


async def _drain_receiver(kind: str, port: int, events: int, receive_maximum: int) -> dict[str, Any]:
    from broker.ingest.receive import Receiver, ReceiverOptions, Subscription

    opts = ReceiverOptions(HOST, port, f"bench-{kind}", (Subscription(share(kind)),), receive_maximum=receive_maximum)
    count = 0
    t0, cpu0 = time.monotonic(), time.process_time()
    async with Receiver(opts) as rx:
        async for batch in rx.batches():
            count += len(batch.messages)
            rx.ack(batch.link, batch.packet_ids())
            if count >= events:
                break
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
    return {"received": count, "wall_s": wall, "cpu_s": cpu}


def child_receiver(kind: str, port: int, events: int, receive_maximum: int) -> dict[str, Any]:
    coro = _drain_receiver(kind, port, events, receive_maximum)
    runner: Callable[[Any], dict[str, Any]] = asyncio.run
    loop = "asyncio"
    if kind == "receiver-uvloop":
        import uvloop

        runner, loop = uvloop.run, f"uvloop {metadata.version('uvloop')}"
    result = runner(asyncio.wait_for(coro, CHILD_TIMEOUT_S))
    result["loop"] = loop
    return result


def child_main(args: argparse.Namespace) -> int:
    if args.child == "paho":
        result = child_paho(args.port, args.events, args.receive_maximum)
    else:
        result = child_receiver(args.child, args.port, args.events, args.receive_maximum)
    result["events"] = args.events
    print(json.dumps(result))
    return 0


# -- report ---------------------------------------------------------------------------------------------
def render(args: argparse.Namespace, results: list[dict[str, Any]], started: str, elapsed: float) -> str:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("paho-mqtt", "mqtt5", "uvloop"))
    lines = [
        f"# Receive path: drain {args.events:,} queued QoS 1 messages, count only, with acknowledgement",
        "",
        f"Run {started}, {elapsed:.0f} s, {args.rounds} round(s), receive maximum {args.receive_maximum}.",
        f"Machine: {platform.node()}, {cpu_model()}, {memory_total()}; Python {platform.python_version()}; "
        f"{versions}. Broker: LocalMosquitto, autosave_interval 600.",
        f"Command: `.venv/bin/python -m bench.receive --events {args.events} --rounds {args.rounds}`",
        "",
        "| subscriber | msg/s (median) | CPU s per 100k (median) | rounds | load average before each drain |",
        "|---|---|---|---|---|",
    ]
    for kind in KINDS:
        rs = [r for r in results if r["kind"] == kind]
        done = [r for r in rs if r["received"] >= r["events"]]
        if not done:
            lines.append(f"| {kind} | incomplete | | {len(rs)} | {'; '.join(r['load'] for r in rs)} |")
            continue
        rate = statistics.median(r["events"] / r["wall_s"] for r in done)
        cpu = statistics.median(r["cpu_s"] * 100_000 / r["events"] for r in done)
        loads = "; ".join(r["load"] for r in rs)
        lines.append(f"| {kind} ({done[0]['loop']}) | {rate:,.0f} | {cpu:.2f} | {len(done)}/{len(rs)} | {loads} |")
    lines += [
        "",
        "msg/s: N / (the child's connect -> the Nth message handed to the caller); CPU: the child's user+system",
        "time over the same window. Each kind drains its own session's backlog in a fresh process.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.receive", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=100_000, help="queued messages per session (default 100,000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds; figures are medians (default 3)")
    p.add_argument("--receive-maximum", type=int, default=2000, help="as the consumer's ingest.receive_maximum")
    p.add_argument("--keep", action="store_true", help="keep the work dir (broker log)")
    p.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if not 1 <= a.events <= 1_000_000 or not 1 <= a.rounds <= 10 or not 1 <= a.receive_maximum <= 65535:
        p.error("--events within 1 .. 1,000,000, --rounds within 1 .. 10, --receive-maximum within 1 .. 65535")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child is not None:
        return child_main(args)
    started = dt.datetime.now()
    t0 = time.monotonic()
    about = f"{args.rounds} round(s) of {args.events:,} messages for {len(KINDS)} subscribers"
    results = in_workdir("receive", about, args.keep, lambda workdir: run_all(args, workdir))
    write_results("receive", started, render(args, results, f"{started:%Y-%m-%d %H:%M}", time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
