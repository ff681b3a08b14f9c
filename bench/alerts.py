"""Alerting benchmark: fault event -> page latency, and how fast events go through the rules.

    .venv/bin/python -m bench.alerts [--kiosks 1000] [--events 50000] [--faults 40] [--backend sqlite|postgres|both]

Prints figures and asserts nothing; the same figures go to ``bench/results/alerts-<date>.md``.

1. Rule throughput with K kiosks: the consumer's commit stage (``Committer``) in this process, batches of 500
   events: ``kiosk.state`` snapshots saying "up" (what healthy kiosks send), plus a share c of state changes
   (down / degraded / up, random kiosks) and the same share of ``kiosk.consumable`` readings (ok / low /
   empty), for c = 0, 1 % and 5 % (a real hall changes a few times a day per kiosk: c = 0 to 1 % is the
   realistic range, 5 % a storm); each event is stored and its signals applied
   in the same transaction, as the consumer does. Baseline in the same run: the same batches through a
   fresh store through the commit stage without its rules stage, so the ratio is what the rules cost.
   Then the SLA tick: the time of one ``SlaClock.tick`` with the incidents those events left open.
2. Alert latency. A private Mosquitto, the consumer in this process on a SQLite store with the product
   defaults except ``act_after_s = 0`` (no group wait: the figure is the pipeline, not the policy), a real
   HTTP webhook receiver as the technician's channel. F kiosks, one at a time, publish ``kiosk.state``
   down (QoS 1 PUBACKed); the figure is from just before that publish to the webhook request's arrival
   (same process, one monotonic clock). Run twice: with the shipped polling intervals (SLA tick 1 s,
   sender 1 s) and with both at 0.1 s, to show where the time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench._machine import cpu_model, load_average, memory_total
from bench._run import write_results
from broker.alerts.routing import AlertsConfig, Router
from broker.config import ConsumerConfig, IngestConfig, RulesConfig, StoreConfig
from broker.consumer import Consumer
from broker.ingest.commit import Committer
from broker.ingest.counters import Counters
from broker.ingest.decode import Decoder
from broker.ingest.items import Item
from broker.ingest.rules_stage import RulesStage
from broker.ingest.session import Message
from broker.mosquitto.local import LocalMosquitto
from broker.rules.incidents import IncidentRules
from broker.rules.sla import SlaClock
from broker.sites import HallOutagePolicy, SiteConfig, Sites, SlaPolicy
from broker.store.db import Batch, StatusUpdate, Store
from protocol import topics
from protocol.envelope import Envelope, Presence, StatusMessage
from protocol.events import KioskConsumable, KioskState
from protocol.ids import uuid7
from runtime.clock import SystemClock
from runtime.settings import MqttConfig
from tests.support.hall import Device, ManualClock
from tests.support.http_receiver import HttpServer

SITE = "bench"
_open_incidents = [0]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- 1. rule throughput ---------------------------------------------------------------------------------
def make_batches(kiosks: int, events: int, changes: float, seed: int = 7) -> list[list[Item]]:
    """The events as the consumer's decode stage makes them (broker/ingest/decode.py), in batches of 500."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    decode = Decoder(SystemClock())
    seq = [0] * kiosks
    items: list[Item] = []
    for i in range(events):
        k = rng.randrange(kiosks)
        seq[k] += 1
        r = rng.random()
        payload: Any
        if r >= 2 * changes:
            event_type, payload = "kiosk.state", KioskState(state="up")
        elif r < changes:
            event_type = "kiosk.state"
            payload = KioskState(state=rng.choice(["down", "degraded", "up"]), functions_affected=["ticket"])
        else:
            event_type = "kiosk.consumable"
            payload = KioskConsumable(consumable="thermal_paper", state=rng.choice(["ok", "ok", "low", "empty"]))
        at = now + dt.timedelta(milliseconds=i)
        env = Envelope(
            v=1, id=uuid7(), site=SITE, device=f"kiosk-{k:04d}", type=event_type, seq=seq[k],
            boot_id="b", ts=at, clock_synced=True, data=payload.model_dump(mode="json"),
        )  # fmt: skip
        topic = topics.event(SITE, env.device, event_type)
        items.append(decode(Message(topic, env.model_dump_json().encode(), i % 65535 + 1, False, False), at))
    return [items[i : i + 500] for i in range(0, len(items), 500)]


async def births(store: Store, kiosks: int) -> None:
    now = dt.datetime.now(dt.UTC)
    b = Batch()
    for k in range(kiosks):
        status = StatusMessage(state=Presence.ONLINE, session=1, boot_id="b", ts=now, heartbeat_s=3600, role="kiosk")
        b.statuses.append(StatusUpdate(SITE, f"kiosk-{k:04d}", status, False, now))
    await store.write(b)


async def rule_throughput(
    url: str, kiosks: int, events: int, changes: float, with_rules: bool
) -> tuple[float, list[float]]:
    """Events/s through the consumer's commit stage (broker/ingest/commit.py) with its rules stage or without,
    decoding not timed; then, with the rules, the SLA clock's first two ticks (ms)."""
    store = await Store.open(url)
    sites = Sites({SITE: SiteConfig()})
    rules = RulesStage(IncidentRules(sites, store.roles)) if with_rules else None
    commit = Committer(store, rules, SystemClock(), Counters(), asyncio.Event())
    await births(store, kiosks)
    batches = make_batches(kiosks, events, changes)
    t0 = time.perf_counter()
    for b in batches:
        await commit(b)
    rate = events / (time.perf_counter() - t0)
    ticks: list[float] = []
    if with_rules:
        clock = SlaClock(store.engine, sites, Router(AlertsConfig()), plan_every_s=1e9)
        later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1)
        for _ in range(2):  # the first takes T+0 for every open incident, the second finds nothing due
            t1 = time.perf_counter()
            await clock.tick(later)
            ticks.append((time.perf_counter() - t1) * 1000)
        t1 = time.perf_counter()  # restock and maintenance planning: its own job beside the tick
        await clock.plan(later)
        ticks.append((time.perf_counter() - t1) * 1000)
        _open_incidents[0] = await store.scalar(sa.text("SELECT count(*) FROM incidents WHERE state != 'closed'"))
    await store.close()
    return rate, ticks


# -- 2. alert latency ----------------------------------------------------------------------------------
async def alert_latency(workdir: Path, faults: int, poll_s: float | None) -> list[float]:
    http = HttpServer()
    http.start()
    broker = LocalMosquitto(workdir / f"mosquitto-{poll_s}")
    broker.start()
    url = f"sqlite+aiosqlite:///{workdir}/latency-{poll_s}.db"
    rules = RulesConfig() if poll_s is None else RulesConfig(tick_s=poll_s)
    alerts: dict[str, Any] = {
        "channels": {"tech": {"type": "webhook", "url": http.url("/tech")}},
        "recipients": {"zhang": {"role": "technician", "channel": "tech"}},
    }
    if poll_s is not None:
        alerts["send_every_s"] = poll_s
    cfg = ConsumerConfig.model_validate(
        {
            "instance": "bench",
            "mqtt": MqttConfig(host="127.0.0.1", port=broker.port),
            "store": StoreConfig(url=url),
            "ingest": IngestConfig(),
            # Every kiosk here fails on its own: no hall-wide outage may swallow the pages being timed.
            "sites": {SITE: SiteConfig(sla=SlaPolicy(act_after_s=0), hall_outage=HallOutagePolicy(min_devices=10_000))},
            "alerts": alerts,
            "rules": rules,
        }
    )
    store = await Store.open(url)
    consumer = Consumer(cfg, store)
    task = asyncio.create_task(consumer.run())
    await consumer.ready.wait()
    clock = ManualClock(dt.datetime.now(dt.UTC))
    latencies: list[float] = []
    try:
        for i in range(faults):
            dev = Device(broker.port, SITE, f"kiosk-24h-{i:03d}", clock)
            dev.birth()
            await asyncio.sleep(0.05)
            before = len(http.requests)
            clock.t = dt.datetime.now(dt.UTC)
            t0 = time.monotonic()
            await asyncio.to_thread(dev.state, "down", "ticket")
            while len(http.requests) == before:
                if time.monotonic() - t0 > 30:
                    raise RuntimeError(f"no page for fault {i} within 30 s")
                await asyncio.sleep(0.002)
            latencies.append((http.requests[before].at - t0) * 1000)
            await asyncio.sleep(random.uniform(0, 0.3))  # a random phase of the polling loops
    finally:
        consumer.stop()
        await task
        await store.close()
        broker.stop()
        http.stop()
    return latencies


async def main_async(a: argparse.Namespace) -> list[str]:
    lines = [
        f"# bench.alerts {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}",
        "",
        f"- machine: {platform.node()}, {cpu_model()}, {memory_total()}, load {load_average()}",
        f"- python {platform.python_version()}; command: {' '.join(['python -m bench.alerts', *sys.argv[1:]])}",
        "",
        f"## 1. Rule throughput ({a.kiosks} kiosks, {a.events} events, batches of 500)",
        "",
        "| store | changes | rules on ev/s | rules off ev/s | ratio | open | 1st SLA tick ms | next tick ms "
        "| planning ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            await _run_all(a, Path(tmp), lines)
        finally:
            _stop_pg()  # before its directory goes
    return lines


async def _run_all(a: argparse.Namespace, work: Path, lines: list[str]) -> None:
    backends = ["sqlite", "postgres"] if a.backend == "both" else [a.backend]
    for backend in backends:
        for changes in (0.0, 0.01, 0.05):
            urls = await _urls(backend, work)
            base, _ = await rule_throughput(urls[0], a.kiosks, a.events, changes, with_rules=False)
            rate, ticks = await rule_throughput(urls[1], a.kiosks, a.events, changes, with_rules=True)
            lines.append(
                f"| {backend} | {changes:.0%} | {rate:,.0f} | {base:,.0f} | {rate / base:.2f} | "
                f"{_open_incidents[0]} | {ticks[0]:.0f} | {ticks[1]:.1f} | {ticks[2]:.0f} |"
            )
            print(lines[-1], flush=True)
    lines += ["", f"## 2. Fault event -> webhook page ({a.faults} faults, act_after_s = 0)", ""]
    lines += ["| polling (SLA tick, sender) | p50 ms | p99 ms | max ms |", "|---|---|---|---|"]
    for poll in (None, 0.1):
        lat = await alert_latency(work, a.faults, poll)
        label = "shipped (1 s, 1 s)" if poll is None else f"{poll} s, {poll} s"
        lines.append(f"| {label} | {statistics.median(lat):.0f} | {pct(lat, 0.99):.0f} | {max(lat):.0f} |")
        print(lines[-1], flush=True)


def _stop_pg() -> None:
    global _pg
    if _pg is not None:
        _pg.stop()
        _pg = None


_pg: Any = None


async def _urls(backend: str, work: Path) -> list[str]:
    if backend == "sqlite":
        return [f"sqlite+aiosqlite:///{work}/off.db", f"sqlite+aiosqlite:///{work}/on.db"]
    global _pg
    from tests.support.postgres import LocalPostgres

    if _pg is None:
        _pg = LocalPostgres(work / "pg")
        _pg.start()
    return [_pg.create_database(f"bench_{n}_{uuid.uuid4().hex[:12]}") for n in ("off", "on")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.alerts")
    p.add_argument("--kiosks", type=int, default=1000)
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--faults", type=int, default=40)
    p.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        lines = asyncio.run(main_async(a))
    finally:
        _stop_pg()
    write_results("alerts", dt.date.today(), "\n".join(lines), echo=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
