"""The central consumer, composed: the ingest stages (broker/ingest/) and the background jobs (broker/jobs/).

The rule it keeps: a message is acknowledged only after the transaction holding it has committed, so a
consumer killed at any moment loses nothing: the broker re-delivers what was never acknowledged
(platform-notes.md: Node-RED acknowledges on receipt and loses what it had in memory). After each commit
the devices are told which of their events the store now holds, and only then do they forget them.

What the store refuses costs only the message behind it (broker/ingest/isolation.py); a store that is
unavailable is retried with backoff, visibly, and a stop request ends the wait at once (nothing acknowledged).
Each stage and each job can be read alone; this module only wires them together and owns their lifetimes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Iterator, Sequence

from broker.alerts.deliveries import Deliverer
from broker.alerts.routing import Router
from broker.attendance.face_settings import FaceSettingsSync
from broker.attendance.jobs import AttendanceJobs
from broker.config import ConsumerConfig
from broker.duties.jobs import DutyJobs
from broker.hall import mirror as hall
from broker.hall.job import HallMirror
from broker.hall.mirror import Leads
from broker.ingest.batch import Batcher
from broker.ingest.commit import Committer
from broker.ingest.counters import Counters
from broker.ingest.decode import Decoder
from broker.ingest.isolation import describe
from broker.ingest.pipeline import Ingest
from broker.ingest.receive import ConnectRefused, LinkError, NotConnected, Receiver, ReceiverOptions
from broker.ingest.rules_stage import RulesStage
from broker.ingest.signatures import KeyRefresh, Signatures, load_keys
from broker.jobs import central
from broker.jobs.health import HealthReport
from broker.jobs.runner import Job, JobRunner
from broker.outbound import send_commands
from broker.queueing.jobs import QueueJobs
from broker.ratings.jobs import RatingJobs
from broker.rules.incidents import IncidentRules
from broker.rules.sla import SlaClock
from broker.sites import Sites
from broker.store.db import Store
from broker.store.keys import DeviceKey
from config.base import ConfigError
from protocol.commands import Command
from runtime.clock import Clock, SystemClock
from runtime.sdnotify import notify, watchdog_interval_s

log = logging.getLogger(__name__)

# Allocations (less deallocations) between young collections while consuming; the default is 700.
GC_YOUNG_THRESHOLD = 20_000
# How long a thread that wants the GIL waits for the running one to let go; the default is 5 ms. The SQLite
# writer's thread wants it back after each call into SQLite while the loop decodes, and at 5 ms a drain's events
# insert took twice its own CPU time in those waits.
SWITCH_INTERVAL_S = 0.0005

__all__ = ["Consumer", "StartupError", "run_consumer"]


class StartupError(Exception):
    """An expected failure to start, said in one line (no traceback unless -v): what is wrong, where."""


@contextlib.contextmanager
def tuned_for_ingest() -> Iterator[None]:
    """The interpreter set for a long-running ingest, and set back after (a test run, the demo go on)."""
    # Start-up leaves ~200,000 long-lived objects (modules, SQLAlchemy's tables, pydantic's schemas) that
    # every full collection would walk again, triggered by the ingest's allocations: a drain's profile put
    # the collector at a sixth of the main thread. Frozen, they are left out; garbage made later is not.
    # (No collect first: its pass over a test run's heap would cost every in-process consumer start.)
    gc.freeze()
    # A batch holds its messages' objects until it commits (up to half the receive maximum, ~15 objects
    # each): at the default 700 allocations a young collection walked them again and again and promoted
    # them, so they were walked once more by the full collections. Past a batch's size most die young.
    young = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *young[1:])
    switch = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*young)
        sys.setswitchinterval(switch)


class Consumer:
    def __init__(self, cfg: ConsumerConfig, store: Store, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock or SystemClock()
        self.counters = Counters()
        self.ready = asyncio.Event()
        self.sites = Sites(cfg.sites)
        self.jobs = JobRunner(self.clock.now)
        self.health = HealthReport(store, self.counters, cfg.instance, cfg.ingest.health_s)
        self.signatures = Signatures(cfg.ingest.require_signatures)
        self.receiver: Receiver | None = None
        self._stop = asyncio.Event()
        self._closing = asyncio.Event()
        self.rules: RulesStage | None = None
        self.deliverer: Deliverer | None = None
        self._router: Router | None = None
        # The centre's view of which sites their own hall consumer leads; a hall consumer leads its own site.
        self.leads = Leads() if cfg.role == "centre" else None
        if cfg.rules.enabled:
            self.rules = RulesStage(IncidentRules(self.sites, store.roles), self.leads)
            self._router = Router(cfg.alerts, {name: s.name for name, s in cfg.sites.items() if s.name})
            self.deliverer = Deliverer(store.engine, cfg.alerts, self.clock, publish=self._publish_alert)

    def stop(self) -> None:
        self._stop.set()

    @property
    def uncommitted(self) -> int:
        """Messages received and not yet committed (and so not yet acknowledged): the consumer's lag."""
        return self.receiver.unacked if self.receiver is not None else 0

    async def run(self) -> None:
        """Consume until stop(). A broker that refuses the credentials or the subscriptions (what retrying
        cannot cure) raises StartupError."""
        notify("READY=1")
        # Keys before the first message: a signed event must not be refused as unknown for want of a refresh.
        self.signatures.replace(await load_keys(self.store))
        try:
            with tuned_for_ingest():
                await self._consume()
        except (ConnectRefused, LinkError) as exc:
            raise StartupError(self._refused(exc)) from exc
        finally:
            notify("STOPPING=1")
            self.ready.clear()
            await self.health.stopped(self.clock.now())
            self.receiver = None
            if self.deliverer is not None:
                await self.deliverer.aclose()
            c = self.counters
            log.info(
                "consumer %s stopped: received %d, stored %d, dead letters %d, batches %d",
                self.cfg.instance,
                c.received,
                c.stored,
                c.dead,
                c.batches,
            )

    async def _consume(self) -> None:
        async with Receiver(ReceiverOptions.for_consumer(self.cfg)) as rx:
            self.receiver = rx
            async with self.jobs:
                for job in self._jobs(rx):
                    self.jobs.start(job)
                await self._ingest(rx).run(self._stop, self.ready)
                if self.cfg.role == "hall":
                    await self._resign(rx)

    def _ingest(self, rx: Receiver) -> Ingest:
        i = self.cfg.ingest
        batcher = Batcher(i.batch_size, i.batch_wait_ms / 1000, i.receive_maximum)
        commit = Committer(self.store, self.rules, self.clock, self.counters, self._closing)
        decode = Decoder(self.clock, self.signatures, self.leads)
        return Ingest(rx, decode, batcher, commit, self.counters, self._closing, confirm=self.cfg.role == "centre")

    async def _resign(self, rx: Receiver) -> None:
        """A hall consumer stopped on purpose hands its site back to the centre, as its Will would."""
        assert self.cfg.site is not None
        with contextlib.suppress(LinkError, TimeoutError):
            await rx.publish(hall.lead_topic(self.cfg.site), hall.OFFLINE, retain=True, timeout_s=2.0)

    def _jobs(self, rx: Receiver) -> list[Job]:
        """In start order; the runner stops them in reverse (deliveries first, the sweep last)."""
        i, r = self.cfg.ingest, self.cfg.rules
        jobs: list[Job] = []
        pet = watchdog_interval_s()
        if pet is not None:
            jobs.append(central.Watchdog(pet))
        jobs.append(self.health)
        jobs.append(KeyRefresh(self.store, self.signatures, i.keys_refresh_s))
        jobs.append(central.PresenceSweep(self.store, self.rules, self.counters, i.sweep_s))
        jobs.append(central.CommandRepublish(self.store, rx, i.republish_s))
        if self.cfg.role == "hall":
            return jobs + self._hall_jobs(rx)
        if self.rules is not None and self._router is not None and self.deliverer is not None:
            leads = self.leads.current if self.leads is not None else None
            sla = SlaClock(self.store.engine, self.sites, self._router, r.plan_every_s, hall_led=leads)
            jobs.append(central.SlaTicks(sla, rx, r.tick_s))
            jobs.append(central.Ticking("planning", r.tick_s, sla.plan))  # gated by plan_every_s of hall time
            jobs.append(central.GallerySync(self.store, self.cfg.gallery, self.rules, rx, r.gallery_every_s))
            jobs.append(FaceSettingsSync(self.store, self.sites, rx, r.gallery_every_s))
            # Modules that keep their own checks behind tick(now); the names are the metrics' job labels.
            attendance = AttendanceJobs(self.store, self.sites, self._router)
            jobs.append(central.Ticking("attendance", r.attendance_every_s, attendance.tick))
            ratings = RatingJobs(self.store, self.sites, self._router)
            jobs.append(central.Ticking("ratings", r.ratings_every_s, ratings.tick))
            duties = DutyJobs(self.store, self.sites, self._router)
            jobs.append(central.Ticking("duties", r.duties_every_s, duties.tick))
            queueing = QueueJobs(self.store, self.sites, self._router)
            jobs.append(central.Ticking("queueing", r.queueing_every_s, queueing.tick))
            jobs.append(central.AlertDeliveries(self.deliverer, self.cfg.alerts.send_every_s))
        return jobs

    def _hall_jobs(self, rx: Receiver) -> list[Job]:
        """A hall consumer's smaller role: its site's SLA clock (restart_app through the hall's broker) and
        alerts to whoever is on site, and its incidents sent to the centre. Attendance, ratings, duties,
        queueing, planning and the gallery stay the centre's (config validation keeps rules on)."""
        assert self._router is not None and self.deliverer is not None and self.cfg.site is not None
        r = self.cfg.rules
        sla = SlaClock(self.store.engine, self.sites, self._router, r.plan_every_s)
        return [
            central.SlaTicks(sla, rx, r.tick_s),
            central.AlertDeliveries(self.deliverer, self.cfg.alerts.send_every_s),
            HallMirror(self.store, rx, self.cfg.site, self.cfg.hall.mirror_s, self.cfg.hall.resync_s),
        ]

    def _refused(self, exc: LinkError) -> str:
        m = self.cfg.mqtt
        if isinstance(exc, ConnectRefused):
            words = exc.reason.replace("_", " ").capitalize()  # NOT_AUTHORIZED -> Not authorized
            return f"MQTT broker {m.host}:{m.port} refused user {m.username or '(none)'}: {words}"
        return f"MQTT broker {m.host}:{m.port}: {exc}"

    async def send_commands(self, commands: Sequence[tuple[DeviceKey, Command]]) -> int:
        """Publish commands already committed (broker/outbound.py); what cannot go now stays queued."""
        rx = self.receiver
        if rx is None:
            return 0
        return await send_commands(rx, commands, self.clock.now())

    async def _publish_alert(self, topic: str, payload: bytes) -> None:
        rx = self.receiver
        if rx is None or not rx.connected:
            raise NotConnected("the consumer is not connected to the broker")
        await rx.publish(topic, payload)


async def run_consumer(cfg: ConsumerConfig, clock: Clock | None = None) -> None:
    """``hallfleet consumer``: open the store (migrating it), consume until SIGINT/SIGTERM. What keeps it
    from starting (a password file, the store, the broker's answer to our credentials) is a StartupError."""
    import signal

    try:
        cfg.mqtt.password()  # read now: a missing file is a start-up error, not a reconnect loop
    except ConfigError as exc:
        raise StartupError(f"MQTT password: {exc}") from exc
    store = await _open_store(cfg)
    consumer = Consumer(cfg, store, clock)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, consumer.stop)
    metrics = None
    if cfg.metrics_port is not None:
        from broker.api.metrics import serve_consumer_metrics

        metrics = serve_consumer_metrics(consumer, cfg.metrics_port)
        log.info("consumer metrics on http://127.0.0.1:%d/metrics", cfg.metrics_port)
    try:
        await consumer.run()
    finally:
        if metrics is not None:
            metrics[0].shutdown()
        await store.close()


async def _open_store(cfg: ConsumerConfig) -> Store:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(cfg.store.url).render_as_string(hide_password=True)
    except Exception:  # not even a URL: say so without echoing it (it may hold the password)
        raise StartupError("store.url is not an SQLAlchemy URL") from None
    try:
        return await asyncio.wait_for(Store.open(cfg.store.url, stale_factor=cfg.ingest.stale_factor), 60)
    except (Exception, TimeoutError) as exc:
        raise StartupError(f"cannot open the store {url}: {describe(exc)}") from exc
