"""``hallfleet demo``: two halls (Qingpu and Wanzhou, from the example site configs) on simulated hardware,
a private Mosquitto on a free loopback port, the consumer with its rules on SQLite, the API and dashboard,
and a local alert sink; hallfleet/demo_scenario.py plays a working day (hallfleet/scenarios/demo-day.toml)
on the devices, ``--speed`` times faster than real time: agents, consumer and API share one ScaledClock, so
timestamps, SLA steps and attendance verdicts are the hall's. A summary with the day's progress every few
seconds; at the day's end (or --seconds, or Ctrl-C) the centre stops first, then the devices (so their clean
goodbye is not taken for an outage), the day is summed up and its reports go to ``<dir>/reports/``; nothing
is left running (the broker also dies with us: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
import uvicorn

from agent.agent import Agent
from broker.alerts.notifiers import WebhookConfig
from broker.alerts.routing import AlertsConfig, RecipientConfig
from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.cli import keep_mqtt
from broker.api.config import ApiConfig
from broker.attendance.roster import import_roster
from broker.config import ConsumerConfig, IngestConfig, RulesConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import notifications
from config.base import ConfigError
from drivers.ipp.sim import SimulatedIppServer
from drivers.queue.sim import SimQueueSystem
from hallfleet import demo_hall as hd
from hallfleet import demo_scenario as sc
from hallfleet.sink import Sink
from runtime.clock import Clock
from runtime.settings import MqttConfig

SUMMARY_EVERY_S = 5.0
DEMO_USER = "demo"
# Everybody the default routes name, each on the demo's webhook sink.
RECIPIENTS = {
    "tech.wang": "technician",
    "site.li": "site_staff",
    "it.zhao": "it_section",
    "window.chen": "window_management",
}
# At the day's end, how long (real seconds) the centre waits for the scenario's last punches to be stored.
FINISH_S = 15.0


def run_demo(args: argparse.Namespace) -> int:
    scenario = sc.load_scenario(args.scenario or sc.SCENARIO)  # a bad file stops the start, naming the field
    devices = sc.plan(args.devices, scenario.power)
    sc.check_scenario(scenario, devices)
    sites = Sites({k: SiteConfig.model_validate(v) for k, v in sc.load_sites().items()})
    if bad := hd.check_power(scenario.power, sites):
        raise ConfigError("invalid demo scenario:\n" + "\n".join(f"  {b}" for b in bad))
    on = args.date or datetime.now(sc.ZONE).date()
    day = sc.working_day(sites, on)
    if day != on and args.date is not None:
        raise ConfigError(f"--date {on}: not a working day in both halls (the latest one before is {day})")
    start = args.day_start or scenario.day.start
    if start >= scenario.day.end:
        raise ConfigError(f"--day-start {start:%H:%M}: the scenario's day ends at {scenario.day.end:%H:%M}")
    if args.dir is not None and (args.dir / "hallfleet.db").exists():
        # A second day in the same store and broker would mix with the first (and its retained goodbyes).
        raise ConfigError(f"--dir {args.dir}: holds a demo already; give an empty or new folder")
    with contextlib.ExitStack() as stack:
        workdir = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hallfleet-demo-")))
        workdir.mkdir(parents=True, exist_ok=True)
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("agent.selfheal").setLevel(logging.ERROR)  # the scenario tells the outages' story
        broker = stack.enter_context(LocalMosquitto(workdir / "mosquitto"))
        print(f"Mosquitto on {broker.host}:{broker.port}; files in {workdir}")
        demo_day = sc.DemoDay.of(day, start, scenario.day.end, args.speed)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_demo(args, workdir, broker, scenario, devices, demo_day))
    print("demo stopped: broker, consumer, API and devices are down.")
    return 0


def consumer_config(mqtt: MqttConfig, workdir: Path, sink: Sink, locker_hold_h: float | None = None) -> ConsumerConfig:
    """``locker_hold_h``: the halls' limit for a locker item, shortened so that the demo's one day shows it."""
    sites = sc.load_sites()
    if locker_hold_h is not None:
        for site in sites.values():
            site.setdefault("duties", {})["locker_max_hold_h"] = locker_hold_h
    return ConsumerConfig(
        instance="demo",
        mqtt=mqtt,
        store=StoreConfig(url=f"sqlite+aiosqlite:///{workdir / 'hallfleet.db'}"),
        ingest=IngestConfig(),
        sites=sites,
        alerts=AlertsConfig(
            channels={"demo-sink": WebhookConfig(url=f"{sink.base}/alerts", timeout_s=5)},
            recipients={n: RecipientConfig(role=r, channel="demo-sink") for n, r in RECIPIENTS.items()},
        ),
        # Restock and maintenance planning every ten hall minutes (plan_every_s is counted on the clock); the
        # rating, attendance and duties jobs sleep real seconds: every few, so follow-ups, notices, missed patrols
        # and overdue locker items are told within the day. The SLA clock ticks twice a (real) second: a minute
        # of hall time at 120x.
        # The queue job folds ticket steps each real second: a wait past its 10/30/60 limit is told within minutes.
        rules=RulesConfig(
            tick_s=0.5,
            plan_every_s=600,
            attendance_every_s=5,
            ratings_every_s=3,
            duties_every_s=10,
            queueing_every_s=1,
        ),
    )


async def _demo(
    args: argparse.Namespace,
    workdir: Path,
    broker: LocalMosquitto,
    scenario: sc.DayScenario,
    devices: list[sc.Device],
    day: sc.DemoDay,
) -> None:
    """The kiosks' A4 printers (drivers/ipp/sim.py) and each hall's queue system (drivers/queue/sim.py) are
    network devices of the halls: up before the agents that poll them, down after."""
    async with SimulatedIppServer() as printers, contextlib.AsyncExitStack() as stack:
        queues = {
            h.site: await stack.enter_async_context(SimQueueSystem(lambda: day.clock.now(), hd.SERVICES))
            for h in sc.HALLS
        }
        await _demo_day(args, workdir, broker, scenario, devices, day, printers, queues)


async def _demo_day(
    args: argparse.Namespace,
    workdir: Path,
    broker: LocalMosquitto,
    scenario: sc.DayScenario,
    devices: list[sc.Device],
    day: sc.DemoDay,
    printers: SimulatedIppServer,
    queues: dict[str, SimQueueSystem],
) -> None:
    mqtt = MqttConfig(host=broker.host, port=broker.port, keepalive_s=10)
    staff = {h.site: sc.staff_of(h, devices, day.date) for h in sc.HALLS}
    for hall in sc.HALLS:
        sc.write_attendance_files(workdir, hall, staff[hall.site])
    health: dict[str, bool] = {}
    sink = Sink(workdir / "alerts.log", health, lambda: day.clock.now())
    await sink.start()
    cfg = consumer_config(mqtt, workdir, sink, scenario.access.locker_hold_h)
    sites = Sites(cfg.sites)
    store = await Store.open(cfg.store.url, stale_factor=cfg.ingest.stale_factor)
    await import_roster(store, [m for ms in staff.values() for m in ms], by="demo", at=day.start)
    await hd.register_machines(store, scenario.power, day.start)
    await hd.register_24_hour(store, devices, day.start)
    password = secrets.token_urlsafe(12)
    await add_user(store, DEMO_USER, password, "it_admin", ("*",), day.start)  # its hash takes none of the morning
    clock = day.clock  # standing at the day's start until the fleet is up (play.prepare, day.begin below)
    consumer = Consumer(cfg, store, clock)
    play = sc.Scenario(scenario, day, sites, staff, store)
    play.health = health
    play.printers = printers
    play.queues = queues
    netcheck = hd.netcheck_config(broker.port, sink.port)
    sc.add_a4_printers(printers, devices, scenario)
    play.fleet = [
        (d, Agent(sc.agent_config(d, workdir, mqtt, sink.base, day.speed, scenario, printers, queues, netcheck), clock))
        for d in devices
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    consumer_task = asyncio.create_task(consumer.run(), name="consumer")
    agent_tasks = [asyncio.create_task(a.run(), name=f"agent-{d.hall.site}-{d.name}") for d, a in play.fleet]
    reports: list[Path] = []
    try:
        async with _api(cfg, store, clock) as url:
            await play.prepare()
            day.begin()  # hall time runs from here: the setup above took none of the morning
            print(f"仪表盘 dashboard: {url}  用户 user: {DEMO_USER}  密码 password: {password}")
            print(f"告警 alerts: webhook {sink.base}/alerts -> {workdir / 'alerts.log'}")
            print(
                f"设备 devices: {len(devices)}, {len(devices) // len(sc.HALLS)} per hall;"
                f" {day.date:%Y-%m-%d} {day.start:%H:%M}–{day.end:%H:%M} 大厅时间, {day.speed:g} 倍速"
                f" (约 {(day.end - day.start).total_seconds() / day.speed / 60:.1f} 分钟)"
            )
            playing = asyncio.create_task(play.run(), name="scenario")
            try:
                show = sc.show(store, stop, sink, day, SUMMARY_EVERY_S)
                if args.seconds:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(show, args.seconds)
                else:
                    await show
            finally:
                if day.over() and not stop.is_set():  # the day ran out: its last punches are made and stored first
                    await play.finish(FINISH_S)
                print(f"stopping at {day.now():%H:%M} 大厅时间 ...")
                playing.cancel()
                await asyncio.gather(playing, return_exceptions=True)
                # The centre stops before the devices: their clean goodbye at the end of the demo is not an
                # outage (a 24-hour kiosk shut down opens an incident), and the day's last events are in.
                await play.wait_quiet()
                await _deliveries_done(store, clock)
                consumer.stop()
                await asyncio.gather(consumer_task, return_exceptions=True)
                for _, a in play.fleet:
                    a.stop()
                results = await asyncio.gather(*agent_tasks, return_exceptions=True)
                failed = sum(1 for r in results if isinstance(r, BaseException))
                print(f"设备已关机 devices shut down: {len(results) - failed}/{len(results)} 正常关机")
        reports = await sc.write_reports(store, cfg, workdir / "reports", day)
        print("\n".join(await sc.day_summary(store, sites, day, sink, staff, reports)))
    finally:
        for _, a in play.fleet:
            a.stop()
        consumer.stop()
        await asyncio.gather(consumer_task, *agent_tasks, return_exceptions=True)
        await sink.close()
        await store.close()


async def _deliveries_done(store: Store, clock: Clock, within_s: float = 5.0) -> None:
    """Until the alerts due so far have left (bounded): the sink shows what the day raised."""
    n = notifications.c
    for _ in range(int(within_s / 0.2)):
        due = sa.select(sa.func.count()).where(n.state == "pending", n.due_at <= clock.now())
        if not await store.scalar(due):
            return
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def _api(cfg: ConsumerConfig, store: Store, clock: Clock) -> AsyncIterator[str]:
    """uvicorn serving the API and dashboard on a free loopback port, in this process, on the demo's store. Its
    modules are imported with the demo's, before hall time runs: imported here, they held the event loop over a
    second on a busy machine (ten hall minutes at 600x) while the devices started and the first staff arrived."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # A login lasts the longest the API allows: 30 days of hall time are six real hours at 120x.
    api_cfg = ApiConfig(listen="127.0.0.1", port=port, centre=cfg, cookie_secure=False, session_ttl_h=24 * 30)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the demo takes SIGINT itself
            yield

    app = create_app(api_cfg, store, None, clock)
    server = Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                   lifespan="off", timeout_graceful_shutdown=2))  # fmt: skip
    task = asyncio.create_task(server.serve(), name="api")
    link = asyncio.create_task(keep_mqtt(app, api_cfg), name="api-mqtt")  # the dashboard's commands go out
    try:
        while not server.started and not task.done():  # noqa: ASYNC110 -- uvicorn offers no event for it
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        link.cancel()
        await asyncio.gather(task, link, return_exceptions=True)
        if app.state.mqtt is not None:
            with contextlib.suppress(Exception):
                await app.state.mqtt.disconnect()
