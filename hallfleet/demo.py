"""``hallfleet demo``: two halls (Qingpu and Wanzhou, from the example site configs) on simulated hardware,
a private Mosquitto on a free loopback port, the consumer with its rules on SQLite, the API and dashboard,
and a local alert sink; hallfleet/demo_scenario.py plays a morning on the devices in real time. A summary
every few seconds; at the end (--seconds, or Ctrl-C) the month's reports so far go to ``<dir>/reports/``
and everything stops, leaving no process behind (the broker also dies with us: PR_SET_PDEATHSIG)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import secrets
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

from agent.agent import Agent
from agent.roles.rating import HttpError, read_request
from broker.alerts.notifiers import WebhookConfig
from broker.alerts.routing import AlertsConfig, RecipientConfig
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.attendance.roster import import_roster
from broker.config import ConsumerConfig, IngestConfig, RulesConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import LocalMosquitto
from broker.store.db import Store
from hallfleet import demo_scenario as sc
from protocol.settings import MqttConfig

SUMMARY_EVERY_S = 5.0
DEMO_USER = "demo"
# Everybody the default routes name, each on the demo's webhook sink.
RECIPIENTS = {
    "tech.wang": "technician",
    "site.li": "site_staff",
    "it.zhao": "it_section",
    "window.chen": "window_management",
}


def run_demo(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        workdir = args.dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hallfleet-demo-")))
        workdir.mkdir(parents=True, exist_ok=True)
        logging.getLogger().setLevel(logging.WARNING)
        broker = stack.enter_context(LocalMosquitto(workdir / "mosquitto"))
        print(f"Mosquitto on {broker.host}:{broker.port}; files in {workdir}")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_demo(args, workdir, broker))
    print("demo stopped: broker, consumer, API and devices are down.")
    return 0


class Sink:
    """The demo's one small HTTP server: the alert webhook (POST /alerts, appended to alerts.log and shown
    in one line) and the health probe of the simulated kiosk application (GET /health/...)."""

    def __init__(self, log_path: Path, health: dict[str, bool]) -> None:
        self.log_path = log_path
        self.health = health
        self.received = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            method, path, body = await asyncio.wait_for(read_request(reader, 1_000_000), 5)
            status = self._answer(method, path, body)
        except (HttpError, TimeoutError, ValueError, asyncio.IncompleteReadError):
            status = 400
        with contextlib.suppress(ConnectionError):
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            writer.close()

    def _answer(self, method: str, path: str, body: bytes) -> int:
        if method == "GET" and path.startswith("/health/"):  # healthy unless the scenario says otherwise
            return 200 if self.health.get(path, True) else 503
        if method != "POST" or path != "/alerts":
            return 404
        alert = json.loads(body)
        self.received += 1
        with self.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"received_at": datetime.now(UTC).isoformat(), **alert}, ensure_ascii=False) + "\n")
        print(f"  告警 → {alert.get('subject', '')}")
        return 200


def consumer_config(mqtt: MqttConfig, workdir: Path, sink: Sink) -> ConsumerConfig:
    return ConsumerConfig(
        instance="demo",
        mqtt=mqtt,
        store=StoreConfig(url=f"sqlite+aiosqlite:///{workdir / 'hallfleet.db'}"),
        ingest=IngestConfig(),
        sites=sc.load_sites(),
        alerts=AlertsConfig(
            channels={"demo-sink": WebhookConfig(url=f"{sink.base}/alerts", timeout_s=5)},
            recipients={n: RecipientConfig(role=r, channel="demo-sink") for n, r in RECIPIENTS.items()},
        ),
        # Planning and the rating and attendance jobs every few seconds instead of minutes: the demo is short.
        rules=RulesConfig(plan_every_s=10, attendance_every_s=15, ratings_every_s=5),
    )


async def _demo(args: argparse.Namespace, workdir: Path, broker: LocalMosquitto) -> None:
    mqtt = MqttConfig(host=broker.host, port=broker.port, keepalive_s=10)
    devices = sc.plan(args.devices)
    today = datetime.now(sc.ZONE).date()
    staff = {h.site: sc.staff_of(h, devices, today) for h in sc.HALLS}
    for hall in sc.HALLS:
        sc.write_attendance_files(workdir, hall, staff[hall.site])
    timing = sc.Timing(services_per_min=args.rate)
    scenario = sc.Scenario([], staff, timing)
    sink = Sink(workdir / "alerts.log", scenario.health)
    await sink.start()
    cfg = consumer_config(mqtt, workdir, sink)
    store = await Store.open(cfg.store.url, stale_factor=cfg.ingest.stale_factor)
    await import_roster(store, [m for ms in staff.values() for m in ms], by="demo", at=datetime.now(UTC))
    consumer = Consumer(cfg, store)
    scenario.fleet = [(d, Agent(sc.agent_config(d, workdir, mqtt, sink.base))) for d in devices]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    consumer_task = asyncio.create_task(consumer.run(), name="consumer")
    agent_tasks = [asyncio.create_task(a.run(), name=f"agent-{d.hall.site}-{d.name}") for d, a in scenario.fleet]
    password = secrets.token_urlsafe(12)
    await add_user(store, DEMO_USER, password, "it_admin", ("*",), datetime.now(UTC))
    try:
        async with _api(cfg, store) as url:
            print(f"仪表盘 dashboard: {url}  用户 user: {DEMO_USER}  密码 password: {password}")
            print(f"告警 alerts: webhook {sink.base}/alerts -> {workdir / 'alerts.log'}")
            print(
                f"设备 devices: {len(devices)}, {len(devices) // len(sc.HALLS)} per hall; 实时运行, 未加速 (real time)"
            )
            play = asyncio.create_task(scenario.run(), name="scenario")
            try:
                show = sc.show(store, stop, sink, timing, SUMMARY_EVERY_S)
                if args.seconds:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(show, args.seconds)
                else:
                    await show
            finally:
                print("stopping ...")
                play.cancel()
                await asyncio.gather(play, return_exceptions=True)
                for _, a in scenario.fleet:
                    a.stop()
                await asyncio.gather(*agent_tasks, return_exceptions=True)
                await asyncio.sleep(1.0)  # the last statuses and alerts reach the store and the sink
                consumer.stop()
                await asyncio.gather(consumer_task, return_exceptions=True)
                await sc.summary(store, sink, timing)
                print("\n".join(await sc.presence_lines(store)))
                await sc.write_reports(store, cfg, workdir / "reports")
    finally:
        for _, a in scenario.fleet:
            a.stop()
        consumer.stop()
        await asyncio.gather(consumer_task, *agent_tasks, return_exceptions=True)
        await sink.close()
        await store.close()


@contextlib.asynccontextmanager
async def _api(cfg: ConsumerConfig, store: Store) -> AsyncIterator[str]:
    """uvicorn serving the API and dashboard on a free loopback port, in this process, on the demo's store."""
    import uvicorn

    from broker.api.app import create_app
    from broker.api.cli import keep_mqtt

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api_cfg = ApiConfig(listen="127.0.0.1", port=port, centre=cfg, cookie_secure=False)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:  # the demo takes SIGINT itself
            yield

    app = create_app(api_cfg, store, None)
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
