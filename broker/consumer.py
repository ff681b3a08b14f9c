"""The central consumer: MQTT (shared subscription) -> validate -> batch -> store -> acknowledge.

A message is PUBACKed only after the transaction holding it has committed, so a consumer killed at
any moment loses nothing: the broker re-delivers what was never acknowledged (platform-notes.md:
Node-RED acknowledges on receipt and loses what it had in memory). After each commit the devices are
told which of their events the store now holds, and only then do they forget them.

What the store refuses costs only the message behind it (broker/ingest/isolation.py): the rest of the batch
commits, the offender goes to dead_letters as ``store_rejected`` with the database's message. A store that is
unavailable is retried with backoff, visibly, and a stop request ends the wait at once (nothing acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import paho.mqtt.client as mqtt
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from broker import gallery
from broker.access.signals import ALARM_TYPES, alarm_signals
from broker.alerts.deliveries import Deliverer
from broker.alerts.routing import Router
from broker.attendance.jobs import AttendanceJobs
from broker.config import ConsumerConfig
from broker.duties.jobs import DutyJobs
from broker.ingest.isolation import Backoff, StopCommitting, commit_isolated, describe
from broker.ingest.items import Item, Seen, dead_letter, refused, to_batch
from broker.queueing.jobs import QueueJobs
from broker.ratings.jobs import RatingJobs
from broker.rules.consumables import LevelReading
from broker.rules.incidents import IncidentRules, Signal, signals_from_event
from broker.rules.sla import SlaClock
from broker.sites import Sites
from broker.store.db import StatusUpdate, Store, Transition
from protocol import topics
from protocol.bounds import printable
from protocol.clock import Clock, SystemClock
from protocol.commands import Command, CommandAck, ConfigReport
from protocol.envelope import Envelope, Frozen, StatusMessage, StoredAck, settle_clock
from protocol.events import KioskConsumable, Rejected, RejectReason, errors_of, validate_event
from protocol.sdnotify import notify, watchdog_loop
from protocol.settings import ConfigError
from protocol.topics import Kind, TopicError
from protocol.transport import AsyncMqtt, LinkOptions, MqttError

log = logging.getLogger(__name__)

SYS_DROPPED = "$SYS/broker/publish/messages/dropped"
# CONNACK reasons that no retry can change: the start fails instead of looping on them.
REFUSED_FOR_GOOD = frozenset({"Bad user name or password", "Not authorized", "Client identifier not valid", "Banned"})
SIGNAL_TYPES = frozenset({"kiosk.state", "kiosk.fault", "device.fault", "kiosk.consumable"}) | ALARM_TYPES
FLUSHER_STOP_S = 10.0  # a commit in progress may finish; the unit's TimeoutStopSec is 30 s
DELIVERY_STOP_S = 15.0  # a notifier's own timeout is 10 s


@dataclass(slots=True)
class Counters:
    received: int = 0
    stored: int = 0
    dead: int = 0
    statuses: int = 0
    batches: int = 0
    store_errors: int = 0  # writes that failed because the store was unavailable (each retried)
    store_rejected: int = 0  # messages the store refused, moved to dead_letters as store_rejected
    store_unstorable: int = 0  # messages not even a dead letter could be written for (logged, acknowledged)
    store_unavailable_since: datetime | None = None  # set while ingest waits for the store
    largest_batch: int = 0
    broker_dropped: int = 0  # Mosquitto's own count of messages it dropped (queue limits), from $SYS
    transitions: list[Transition] = field(default_factory=list)


@dataclass(slots=True)
class _Pending:
    items: list[Item] = field(default_factory=list)
    mids: list[int] = field(default_factory=list)


class StartupError(Exception):
    """An expected failure to start, said in one line (no traceback unless -v): what is wrong, where."""


class Consumer:
    def __init__(self, cfg: ConsumerConfig, store: Store, clock: Clock | None = None) -> None:
        self.cfg = cfg
        self.store = store
        self.clock = clock or SystemClock()
        self.counters = Counters()
        self.ready = asyncio.Event()
        self._pending = _Pending()
        self._wake = asyncio.Event()
        self._client: AsyncMqtt | None = None
        self._flusher_closing = asyncio.Event()
        self._stop = asyncio.Event()
        self.sites = Sites(cfg.sites)
        self.sla: SlaClock | None = None
        self.deliverer: Deliverer | None = None
        self.attendance: AttendanceJobs | None = None
        self.ratings: RatingJobs | None = None
        self.queueing: QueueJobs | None = None
        self.duties: DutyJobs | None = None
        if cfg.rules.enabled:
            store.rules = IncidentRules(self.sites, store.roles)
            router = Router(cfg.alerts, {name: s.name for name, s in cfg.sites.items() if s.name})
            self.sla = SlaClock(store.engine, self.sites, router, cfg.rules.plan_every_s)
            self.deliverer = Deliverer(store.engine, cfg.alerts, self.clock, publish=self._publish_alert)
            self.attendance = AttendanceJobs(store, self.sites, router)
            self.ratings = RatingJobs(store, self.sites, router)
            self.queueing = QueueJobs(store, self.sites, router)
            self.duties = DutyJobs(store, self.sites, router)

    def stop(self) -> None:
        self._stop.set()

    @property
    def uncommitted(self) -> int:
        """Messages received and not yet committed (and so not yet acknowledged): the consumer's lag."""
        return len(self._pending.mids)

    # -- connection --------------------------------------------------------------------------------
    def _options(self) -> LinkOptions:
        m = self.cfg.mqtt
        client_id = f"consumer-{self.cfg.instance}"
        return LinkOptions(
            host=m.host,
            port=m.port,
            client_id=client_id,
            username=m.username,
            password=m.password(),
            tls=m.tls_files(),
            keepalive_s=m.keepalive_s,
            session_expiry_s=m.session_expiry_s,
            manual_ack=True,
            receive_maximum=self.cfg.ingest.receive_maximum,
            max_inflight=m.max_inflight,
        )

    async def run(self) -> None:
        """Consume until stop(): reconnect with capped jittered backoff, never crash on input. A broker that
        refuses the credentials before the first connection raises StartupError."""
        loops = [
            asyncio.create_task(self._sweep_loop(), name="presence-sweep"),
            asyncio.create_task(watchdog_loop(), name="watchdog"),
        ]
        if self.sla is not None and self.deliverer is not None:
            loops.append(asyncio.create_task(self._sla_loop(self.sla), name="sla-clock"))
            loops.append(asyncio.create_task(self._gallery_loop(), name="gallery"))
            loops.append(asyncio.create_task(self._attendance_loop(), name="attendance"))
            loops.append(asyncio.create_task(self._ratings_loop(), name="ratings"))
            loops.append(asyncio.create_task(self._queueing_loop(), name="queueing"))
            loops.append(asyncio.create_task(self._duties_loop(), name="duties"))
            loops.append(asyncio.create_task(self.deliverer.run(), name="deliveries"))
        notify("READY=1")
        attempt = 0
        try:
            while not self._stop.is_set():
                try:
                    await self._one_connection()
                    attempt = 0
                except MqttError as exc:
                    if exc.reason in REFUSED_FOR_GOOD and not self.ready.is_set() and self.counters.received == 0:
                        m = self.cfg.mqtt
                        raise StartupError(
                            f"MQTT broker {m.host}:{m.port} refused user {m.username or '(none)'}: {exc.reason}"
                        ) from exc
                    log.warning("consumer MQTT link: %s", exc)
                if self._stop.is_set():
                    break
                m = self.cfg.mqtt
                ceiling = min(m.backoff_max_s, m.backoff_initial_s * 2 ** min(attempt, 20))
                attempt += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), ceiling / 2 + random.uniform(0, ceiling / 2))
        finally:
            notify("STOPPING=1")
            if self.deliverer is not None:
                self.deliverer.stop()
                await asyncio.wait(loops[-1:], timeout=DELIVERY_STOP_S)
            for task in loops:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
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

    async def _one_connection(self) -> None:
        client = AsyncMqtt(self._options())
        client.on_message = self._on_message
        # A persistent session's queued messages arrive right behind the CONNACK, before our SUBSCRIBE
        # is answered: the batch and the flusher must exist before the first byte is read.
        self._pending = _Pending()  # unacked messages of a dead connection are re-delivered
        self._client = client
        try:
            await client.connect()
        except MqttError:
            self._client = None
            raise
        flusher = asyncio.create_task(self._flush_loop(client), name="flush")
        closed = asyncio.create_task(client.wait_closed())
        stop = asyncio.create_task(self._stop.wait())
        try:
            await self._subscribe(client)
            self.ready.set()
            await asyncio.wait({flusher, closed, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (closed, stop):
                task.cancel()
            await self._stop_flusher(flusher)
            if closed.done() and not closed.cancelled():
                log.warning("consumer connection ended: %s", closed.result())
            self.ready.clear()
            self._client = None
            if self._stop.is_set():
                await client.disconnect()
            else:
                await client.close()

    async def _stop_flusher(self, flusher: asyncio.Task[None]) -> None:
        """Let a commit in progress finish rather than cancel it half-way (a cancelled database call
        may hang in its own cleanup); what it cannot acknowledge any more is redelivered and deduped."""
        self._flusher_closing.set()
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(flusher), FLUSHER_STOP_S)
        except TimeoutError:
            log.error("a commit took over %.0f s while the connection closed: cancelling it", FLUSHER_STOP_S)
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher
        except Exception:  # the flusher's own failure: logged, the connection is gone anyway
            log.exception("flusher failed")
        finally:
            self._flusher_closing.clear()

    async def _subscribe(self, client: AsyncMqtt) -> None:
        group = self.cfg.ingest.share_group
        await client.subscribe(
            [
                (topics.shared(group, topics.ALL_EVENTS), 1),
                (topics.shared(group, topics.ALL_HEALTH), 1),
                (topics.shared(group, topics.ALL_CMD_ACKS), 1),
                # Every consumer sees every status (retained too, which shared subscriptions never
                # get); presence updates are conditional, so applying one twice changes nothing.
                (topics.ALL_STATUS, 1),
            ]
        )
        try:
            # Stock Mosquitto drops queued QoS 1 messages silently past its limits; its $SYS counter
            # is the only trace (platform-notes.md). Optional: an account without $SYS rights consumes.
            await client.subscribe([(SYS_DROPPED, 0)])
        except MqttError as exc:
            log.warning("cannot watch the broker's drop counter: %s", exc)
        log.info("consumer %s subscribed", client.options.client_id)

    # -- receive: runs on the loop thread inside paho's read ----------------------------------------
    def _on_message(self, msg: mqtt.MQTTMessage) -> None:
        try:
            self._accept(msg)
        except Exception as exc:  # a bug must cost one message (kept, with why), never the consumer
            log.exception("unexpected error on %s", msg.topic[:200])
            self._dead(msg, RejectReason.MALFORMED, f"internal error: {exc!r}")

    def _accept(self, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == SYS_DROPPED:
            self._broker_dropped(msg.payload)
            return
        self.counters.received += 1
        mid = msg.mid if msg.qos > 0 else None
        if mid is not None:
            self._pending.mids.append(mid)
        try:
            t = topics.parse(msg.topic)
        except TopicError as exc:
            self._dead(msg, RejectReason.BAD_TOPIC, str(exc))
            return
        if t.kind is Kind.STATUS:
            self._status(msg, t.site, t.device)
        elif t.kind in (Kind.EVENT, Kind.HEALTH, Kind.CMD_ACK):
            try:
                env, payload = validate_event(t, bytes(msg.payload))
            except Rejected as exc:
                self._dead(msg, exc.reason, exc.detail)
                return
            self._add(self._event_item(msg, settle_clock(env, self.clock.now()), payload))
        else:
            self._dead(msg, RejectReason.BAD_TOPIC, f"consumer does not take {t.kind.value} messages")
            return
        if len(self._pending.mids) >= self.cfg.ingest.receive_maximum and self._client is not None:
            self._client.pause_reading()  # resumed once this batch is committed and acknowledged

    def _event_item(self, msg: mqtt.MQTTMessage, env: Envelope, payload: Frozen) -> Item:
        now = self.clock.now()
        key = f"{env.site}/{env.device}"
        row = {
            "site": env.site,
            "device": env.device,
            "id": env.id,
            "type": env.type,
            "seq": env.seq,
            "boot_id": env.boot_id,
            "ts": env.ts,
            "clock_synced": env.clock_synced,
            "replayed": env.replayed,
            "received_at": now,
            "data": payload.model_dump_json(),
        }
        signals: tuple[Signal, ...] = ()
        level = None
        if env.type in SIGNAL_TYPES:
            signals = tuple(signals_from_event(env, payload, now)) + tuple(alarm_signals(env, payload, now))
            if isinstance(payload, KioskConsumable):
                level = LevelReading(
                    key, env.site, env.device, payload.consumable, payload.state, payload.level_pct, env.ts
                )
        return Item(
            msg.topic,
            bytes(msg.payload),
            msg.mid if msg.qos > 0 else None,
            event=row,
            seen=Seen(key, env.site, env.device, now),
            signals=signals,
            level=level,
            ack=(key, payload, now) if isinstance(payload, CommandAck) else None,
            config_report=(key, env.type == "config.applied", payload, now)
            if isinstance(payload, ConfigReport)
            else None,
            confirm=(env.site, env.device, env.seq),
        )

    def _add(self, item: Item) -> None:
        items = self._pending.items
        items.append(item)
        if len(items) == 1 or len(items) >= self.cfg.ingest.batch_size:
            # The first message starts the batch_wait_ms clock; a full batch goes at once.
            self._wake.set()

    def _broker_dropped(self, payload: bytes | bytearray) -> None:
        try:
            value = int(payload)
        except ValueError:
            return
        if value > self.counters.broker_dropped:
            log.warning(
                "the broker has dropped %d messages (was %d): raise max_queued_messages in its config; "
                "agents re-send what the store never confirmed",
                value,
                self.counters.broker_dropped,
            )
        self.counters.broker_dropped = value

    def _status(self, msg: mqtt.MQTTMessage, site: str, device: str) -> None:
        mid = msg.mid if msg.qos > 0 else None
        if not msg.payload:  # a retained status being cleared (device removed): only to acknowledge
            if mid is not None:
                self._add(Item(msg.topic, b"", mid))
            return
        try:
            status = StatusMessage.model_validate_json(msg.payload)
        except ValidationError as exc:
            self._dead(msg, RejectReason.MALFORMED, errors_of(exc))
            return
        at = self.clock.now()
        key = f"{site}/{device}"
        update = StatusUpdate(site, device, status, bool(msg.retain), at)
        self._add(
            Item(
                msg.topic,
                bytes(msg.payload),
                mid,
                status=update,
                seen=None if msg.retain else Seen(key, site, device, at),
            )
        )
        self.counters.statuses += 1
        self._wake.set()  # presence changes should not wait for a full batch

    def _dead(self, msg: mqtt.MQTTMessage, reason: RejectReason, detail: str) -> None:
        log.warning("dead letter (%s) on %s: %s", reason.value, msg.topic[:200], printable(detail[:200]))
        raw = bytes(msg.payload)
        row = dead_letter(msg.topic, raw, reason.value, detail, self.clock.now())
        self._add(Item(msg.topic, raw, msg.mid if msg.qos > 0 else None, dead=row))
        self._wake.set()

    # -- commit, then acknowledge ------------------------------------------------------------------
    async def _flush_loop(self, client: AsyncMqtt) -> None:
        wait_s = self.cfg.ingest.batch_wait_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)
            if self._flusher_closing.is_set():
                return
            if not self._pending.mids and not self._pending.items:
                self._wake.clear()
                continue
            if len(self._pending.items) < self.cfg.ingest.batch_size and wait_s:
                await asyncio.sleep(wait_s)
            self._wake.clear()
            pending, self._pending = self._pending, _Pending()
            try:
                held = await self._commit(pending.items)
            except StopCommitting:
                log.warning(
                    "stopped while the store was unavailable: %d messages left unacknowledged "
                    "(the broker delivers them again)",
                    len(pending.mids),
                )
                return
            for mid in pending.mids:
                client.ack(mid)
            client.resume_reading()
            self._confirm(client, held)

    def _confirm(self, client: AsyncMqtt, held: Sequence[Item]) -> None:
        """Tell each device which of its events the store now holds (stored, or kept as a dead letter)."""
        seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
        for item in held:
            if item.confirm is not None:
                site, device, seq = item.confirm
                seqs[(site, device)].append(seq)
        for (site, device), device_seqs in seqs.items():
            with contextlib.suppress(MqttError):  # lost confirmations only cause re-sends
                client.publish(
                    topics.stored(site, device), StoredAck.from_seqs(device_seqs).model_dump_json().encode(), qos=0
                )

    async def _commit(self, items: list[Item]) -> list[Item]:
        """Commit the items, isolating what the store refuses, retrying while it is unavailable.
        Meanwhile we read at most ``receive_maximum`` unacknowledged messages, then stop reading the socket
        until this batch is acknowledged. Returns the items now held (stored or dead-lettered)."""
        retry = Backoff(self._flusher_closing, self._store_waiting)
        try:
            out = await commit_isolated(items, self._write, retry)
            held = out.committed
            if out.rejected:
                now = self.clock.now()
                dead = [refused(item, RejectReason.STORE_REJECTED.value, why, now) for item, why in out.rejected]
                last = await commit_isolated(dead, self._write, retry)
                held = held + last.committed
                self.counters.store_rejected += len(last.committed)
                for item, why in last.rejected:  # escaped and truncated, so this is a bug: say so loudly
                    self.counters.store_unstorable += 1
                    log.error(
                        "not even the dead letter of a message on %s could be stored (%s): acknowledged without it",
                        printable(item.topic[:200]),
                        why,
                    )
        finally:
            self.counters.store_unavailable_since = None
        c = self.counters
        c.batches += 1
        c.largest_batch = max(c.largest_batch, len(items))
        return held

    async def _write(self, items: Sequence[Item]) -> None:
        batch = to_batch(items)
        self._log_transitions(await self.store.write(batch))
        self.counters.stored += len(batch.events)
        self.counters.dead += len(batch.dead)

    def _store_waiting(self, exc: BaseException, delay: float) -> None:
        c = self.counters
        c.store_errors += 1
        if c.store_unavailable_since is None:
            c.store_unavailable_since = self.clock.now()
        log.error("store unavailable (%s); ingest waits, retrying in %.1f s", describe(exc), delay)

    def _log_transitions(self, transitions: list[Transition]) -> None:
        for t in transitions:
            log.info("presence %s -> %s (session %d, %s)", t.key, t.state, t.session, t.reason)
        self.counters.transitions.extend(transitions)
        del self.counters.transitions[:-1000]

    async def _sweep_loop(self) -> None:
        last_republish = self.clock.monotonic()
        while True:
            await asyncio.sleep(self.cfg.ingest.sweep_s)
            try:
                now = self.clock.now()
                self._log_transitions(await self.store.sweep_stale(now))
                for command_id, key in await self.store.expire_commands(now):
                    log.info("command %s for %s expired before the device took it", command_id, key)
                if self.clock.monotonic() - last_republish >= self.cfg.ingest.republish_s:
                    last_republish = self.clock.monotonic()
                    await self._republish_queued(now)
            except SQLAlchemyError as exc:
                log.error("presence sweep failed: %s", exc)
            except Exception:  # a rule bug must not end the sweep: presence would freeze for every device
                log.exception("presence sweep failed")

    async def _sla_loop(self, sla: SlaClock) -> None:
        """SLA timers, verified recovery, hall outages, escalation, restock and maintenance planning."""
        while True:
            await asyncio.sleep(self.cfg.rules.tick_s)
            try:
                result = await sla.tick(self.clock.now())
            except SQLAlchemyError as exc:
                log.error("SLA clock: store unavailable (%s)", exc.__class__.__name__)
                continue
            except Exception:  # a rule bug must not stop ingest; the timers are in the database
                log.exception("SLA clock tick failed")
                continue
            self._send_commands(result.commands)

    async def _gallery_loop(self) -> None:
        """Terminals get the face-gallery updates they lack; a revocation past its deadline is an incident."""
        while True:
            await asyncio.sleep(self.cfg.rules.gallery_every_s)
            try:
                self._send_commands(await gallery.reconcile(self.store, self.cfg.gallery, self.clock.now()))
            except SQLAlchemyError as exc:
                log.error("gallery reconcile: store unavailable (%s)", exc.__class__.__name__)
            except Exception:
                log.exception("gallery reconcile failed")

    async def _attendance_loop(self) -> None:
        assert self.attendance is not None
        while True:
            await asyncio.sleep(self.cfg.rules.attendance_every_s)
            try:
                await self.attendance.tick(self.clock.now())
            except SQLAlchemyError as exc:
                log.error("attendance jobs: store unavailable (%s)", exc.__class__.__name__)
            except Exception:
                log.exception("attendance jobs failed")

    async def _ratings_loop(self) -> None:
        assert self.ratings is not None
        while True:
            await asyncio.sleep(self.cfg.rules.ratings_every_s)
            try:
                await self.ratings.tick(self.clock.now())
            except SQLAlchemyError as exc:
                log.error("rating jobs: store unavailable (%s)", exc.__class__.__name__)
            except Exception:
                log.exception("rating jobs failed")

    async def _queueing_loop(self) -> None:
        assert self.queueing is not None
        while True:
            await asyncio.sleep(self.cfg.rules.queueing_every_s)
            try:
                await self.queueing.tick(self.clock.now())
            except SQLAlchemyError as exc:
                log.error("queue jobs: store unavailable (%s)", exc.__class__.__name__)
            except Exception:
                log.exception("queue jobs failed")

    async def _duties_loop(self) -> None:
        """Daily duties (broker/duties) and lockers' overdue items, at the planning cadence."""
        assert self.duties is not None
        while True:
            await asyncio.sleep(self.cfg.rules.plan_every_s)
            try:
                await self.duties.tick(self.clock.now())
            except SQLAlchemyError as exc:
                log.error("duty jobs: store unavailable (%s)", exc.__class__.__name__)
            except Exception:
                log.exception("duty jobs failed")

    def _send_commands(self, commands: list[tuple[str, Command]]) -> None:
        """Commands the rules committed; what cannot go now stays queued for the republish loop."""
        client = self._client
        for key, cmd in commands:
            if client is None or not client.is_connected:
                return
            site, device = key.split("/", 1)
            with contextlib.suppress(MqttError):
                ttl = max(1, int((cmd.expires_at - self.clock.now()).total_seconds()))
                client.publish(topics.cmd(site, device), cmd.model_dump_json().encode(), qos=1, expiry_s=ttl)

    async def _publish_alert(self, topic: str, payload: bytes) -> None:
        client = self._client
        if client is None or not client.is_connected:
            raise MqttError("the consumer is not connected to the broker")
        await client.publish_confirmed(topic, payload)

    async def _republish_queued(self, now: datetime) -> None:
        """Commands still ``queued``: the first publish may have failed, or reached a device that had no
        session yet (the broker keeps nothing for it). Send them again; the device runs an id once."""
        client = self._client
        if client is None or not client.is_connected:
            return
        for key, cmd in await self.store.queued_commands(now, older_than_s=self.cfg.ingest.republish_s):
            site, device = key.split("/", 1)
            ttl = int((cmd.expires_at - now).total_seconds())
            if ttl >= 1:
                client.publish(topics.cmd(site, device), cmd.model_dump_json().encode(), qos=1, expiry_s=ttl)


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
