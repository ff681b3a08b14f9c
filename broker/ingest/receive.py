"""The receive stage of the consumer's ingest: a persistent MQTT 5 session that hands out batches of
messages and acknowledges them only when the caller says they are committed (or dead-lettered).

The rule: nothing is PUBACKed that the caller has not acknowledged, and an acknowledgement only counts on
the connection that delivered the message. A consumer killed at any moment therefore loses nothing: the
broker keeps the persistent session (clean_start=False, session expiry) and sends again whatever was not
acknowledged. Reconnects use capped, jittered backoff; a refusal that retrying cannot cure (bad
credentials, an ACL that refuses the subscriptions) ends ``batches()`` with a typed error instead.

    async with Receiver(ReceiverOptions.for_consumer(cfg)) as rx:
        async for batch in rx.batches():
            ...  # decode, validate, commit
            rx.ack(batch.link, batch.packet_ids())

Why not paho: on this machine paho 2.2 tops out at 16,500 messages/s whatever is built around it, and the
mqtt5 codec under this stage was measured at about 20 times that; a smoke run of bench/receive.py showed
this stage using about a twentieth of paho's CPU per message (docs/ingest.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import mqtt5

from broker.hall import mirror as hall
from broker.ingest.session import (
    ConnectRefused,
    LinkError,
    LinkStats,
    Message,
    NotConnected,
    PublishRefused,
    Session,
    SubscribeRefused,
    Subscription,
)
from protocol import topics
from runtime.backoff import Backoff
from runtime.transport import TlsFiles

if TYPE_CHECKING:
    from broker.config import ConsumerConfig

__all__ = [
    "Batch",
    "ConnectRefused",
    "LinkError",
    "LinkStats",
    "Message",
    "NotConnected",
    "PublishRefused",
    "Receiver",
    "ReceiverOptions",
    "SubscribeRefused",
    "Subscription",
    "tls_context",
]

log = logging.getLogger(__name__)

# Mosquitto's own count of messages it dropped past its queue limits: the only trace of such a loss.
SYS_DROPPED = "$SYS/broker/publish/messages/dropped"
CLOSE_GRACE_S = 1.0  # after the DISCONNECT: a connect or backoff still running is cancelled
DEFAULT_BACKOFF = Backoff(1.0, 60.0)  # MqttConfig's defaults


@dataclass(frozen=True, slots=True)
class ReceiverOptions:
    host: str
    port: int
    client_id: str
    subscriptions: tuple[Subscription, ...]
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 86_400
    receive_maximum: int = 2000  # unacknowledged messages the caller may hold at once
    max_inflight: int = 100  # our own QoS 1 publishes awaiting PUBACK
    connect_timeout_s: float = 10.0
    backoff: Backoff = DEFAULT_BACKOFF

    will: mqtt5.Will | None = None  # a hall consumer's lead status: ``offline`` when it dies

    @classmethod
    def for_consumer(cls, cfg: ConsumerConfig) -> ReceiverOptions:
        """The consumer's session: client id consumer-{instance}, its shared group for events, health and
        command acks, and every status (retained ones too, which shared subscriptions never get). A hall
        consumer (role 'hall') takes only its own site's topics, as hall-{instance}, and leaves a Will on its
        lead status; the centre also takes the hall consumers' lead statuses and incidents (broker/hall/)."""
        m, group = cfg.mqtt, cfg.ingest.share_group
        site = cfg.site if cfg.role == "hall" else None
        subscriptions = [
            Subscription(topics.shared(group, _of_site(topics.ALL_EVENTS, site))),
            Subscription(topics.shared(group, _of_site(topics.ALL_HEALTH, site))),
            Subscription(topics.shared(group, _of_site(topics.ALL_CMD_ACKS, site))),
            Subscription(_of_site(topics.ALL_STATUS, site)),
        ]
        will = None
        if site is None:
            subscriptions += [Subscription(hall.ALL_LEADS), Subscription(topics.shared(group, hall.ALL_INCIDENTS))]
        else:
            will = mqtt5.Will(
                hall.lead_topic(site),
                payload=hall.OFFLINE,
                qos=mqtt5.QoS.AT_LEAST_ONCE,
                retain=True,
                # A reconnect within this long announces the lead again before the Will is sent, so a blip on
                # the hall's LAN does not hand the site to the centre for a moment (which could act on it).
                will_delay_interval=hall.WILL_DELAY_S,
            )
        # Optional: an account without $SYS rights still consumes.
        subscriptions.append(Subscription(SYS_DROPPED, qos=0, required=False))
        return cls(
            host=m.host,
            port=m.port,
            client_id=f"{'hall' if site else 'consumer'}-{cfg.instance}",
            subscriptions=tuple(subscriptions),
            username=m.username,
            password=m.password(),
            tls=m.tls_files(),
            keepalive_s=m.keepalive_s,
            session_expiry_s=m.session_expiry_s,
            receive_maximum=cfg.ingest.receive_maximum,
            max_inflight=m.max_inflight,
            backoff=Backoff(m.backoff_initial_s, m.backoff_max_s),
            will=will,
        )


def _of_site(topic_filter: str, site: str | None) -> str:
    """``hall/v1/+/+/evt/#`` narrowed to one site (a hall consumer's), or as it is."""
    return topic_filter if site is None else topic_filter.replace("/+/", f"/{site}/", 1)


@dataclass(frozen=True, slots=True)
class Batch:
    """Messages as they came off one connection (``link``), in order. Acknowledge with ``rx.ack(link, ids)``."""

    link: int
    messages: list[Message]

    def packet_ids(self) -> list[int]:
        return [m.packet_id for m in self.messages if m.packet_id is not None]


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """Verify the broker's certificate and host name against the hall CA (as paho's tls_set does)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=files.ca_file)
    if files.cert_file is not None:
        ctx.load_cert_chain(files.cert_file, files.key_file)
    return ctx


class Receiver:
    def __init__(self, options: ReceiverOptions) -> None:
        if not options.subscriptions:
            raise ValueError("a receiver needs at least one subscription")
        self.options = options
        # Built now: a CA file that cannot be read is a configuration error at start, not a retry loop.
        self._tls = tls_context(options.tls) if options.tls is not None else None
        self.stats = LinkStats()
        self._queue: deque[Batch] = deque()
        self._wake = asyncio.Event()
        self._up = asyncio.Event()
        self._stop = asyncio.Event()
        self._session: Session | None = None
        self._link = 0
        self._ended = asyncio.Event()  # closed, or stopped by an error retrying cannot cure
        self._fatal: LinkError | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    async def __aenter__(self) -> Receiver:
        self._task = asyncio.create_task(self._run(), name=f"receive-{self.options.client_id}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Clean DISCONNECT (the session and its queue stay on the broker), then stop reconnecting."""
        self._stop.set()
        self._ended.set()
        self._wake.set()
        session = self._session
        if session is not None:
            await session.disconnect()
        task, self._task = self._task, None
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=CLOSE_GRACE_S)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def wait_connected(self) -> None:
        """Until a connection is up and subscribed; raises the error that stopped the receiver."""
        while not self._up.is_set():
            if self._fatal is not None:
                raise self._fatal
            if self._stop.is_set():
                raise NotConnected("the receiver is closed")
            await _first(self._up.wait(), self._ended.wait())

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    @property
    def unacked(self) -> int:
        """Messages handed out on the current connection and not yet acknowledged: the consumer's lag."""
        session = self._session
        return session.unacked if session is not None else 0

    # -- the caller's side -------------------------------------------------------------------------
    async def batches(self) -> AsyncIterator[Batch]:
        """Batches in arrival order until close(); raises the error that stopped the receiver."""
        while True:
            if self._stop.is_set():
                return
            if self._queue:
                yield self._queue.popleft()
                continue
            if self._fatal is not None:
                raise self._fatal
            self._wake.clear()
            await self._wake.wait()

    def ack(self, link: int, packet_ids: Iterable[int]) -> int:
        """PUBACK these messages, all in one write. Ids of an ended connection are ignored (and counted):
        the broker sends those messages again, and the store takes each once."""
        session = self._session
        if session is None or session.link != link or not session.is_open:
            ids = list(packet_ids)
            self.stats.stale_acks += len(ids)
            return 0
        n = session.ack(packet_ids)
        self.stats.acked += n
        return n

    def send(self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None) -> bool:
        """QoS 0 publish (store confirmations): False, and counted, when it could not be written."""
        session = self._session
        if session is None or not self._up.is_set():
            self.stats.skipped_sends += 1
            return False
        return session.send(topic, payload, retain=retain, expiry_s=expiry_s)

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        expiry_s: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """QoS 1 publish (commands, alerts) that returns once the broker PUBACKed it. NotConnected when no
        connection is up, PublishRefused for a failure reason, LinkError when the link broke meanwhile."""
        session = self._session
        if session is None or not self._up.is_set():
            raise NotConnected(f"not connected to the broker: {topic} not sent")
        try:
            code = await asyncio.wait_for(session.publish(topic, payload, retain=retain, expiry_s=expiry_s), timeout_s)
        except TimeoutError:
            raise LinkError(f"no PUBACK for {topic} within {timeout_s} s") from None
        if code >= 0x80:
            raise PublishRefused(topic, code)

    # -- connection loop ---------------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            try:
                await self._one_connection()
                attempt = 0
            except (ConnectRefused, SubscribeRefused) as exc:
                if isinstance(exc, SubscribeRefused) or exc.permanent:
                    # A warning: the error itself is raised to the caller, which says it once (one line at start).
                    log.warning("receiver %s stopped: %s", self.options.client_id, exc)
                    self._fatal = exc
                    self._ended.set()
                    self._wake.set()
                    return
                self._note(exc)
            except LinkError as exc:
                self._note(exc)
            if self._stop.is_set():
                return
            delay = self.options.backoff.delay(attempt)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _one_connection(self) -> None:
        o = self.options
        self._link += 1
        session, connected = await Session.open(
            host=o.host,
            port=o.port,
            tls=self._tls,
            connect=self._connect_packet(),
            link=self._link,
            deliver=self._deliver,
            stats=self.stats,
            max_inflight=o.max_inflight,
            timeout_s=o.connect_timeout_s,
        )
        self._session = session
        self.stats.connects += 1
        self.stats.session_present = connected.session_present
        try:
            # A persistent session's queued messages follow the CONNACK before the SUBACK: they are
            # already being delivered. Subscribing again is idempotent, and replays retained statuses.
            await self._subscribe(session)
            self._up.set()
            self._wake.set()
            log.info(
                "receiver %s connected to %s:%d (session %s, keepalive %d s)",
                o.client_id,
                o.host,
                o.port,
                "resumed" if connected.session_present else "new",
                connected.keepalive_s,
            )
            # close() may run while this connection was still being made: wait for either.
            await _first(session.wait_closed(), self._stop.wait())
            if not self._stop.is_set():
                why = session.closed_why()
                raise LinkError(f"connection to {o.host}:{o.port} ended: {why}", why)
        finally:
            self._up.clear()
            await session.disconnect()  # a no-op on a link that already broke
            self._session = None

    async def _subscribe(self, session: Session) -> None:
        subs = self.options.subscriptions
        try:
            codes = await asyncio.wait_for(session.subscribe(subs), self.options.connect_timeout_s)
        except TimeoutError:
            raise LinkError(f"no SUBACK within {self.options.connect_timeout_s} s") from None
        refused: list[tuple[str, str]] = []
        for sub, code in zip(subs, codes, strict=False):
            if code >= 0x80:
                reason = mqtt5.SubAckReasonCode(code).name
            elif code < sub.qos:  # a downgrade to QoS 0 would end at-least-once delivery
                reason = f"granted QoS {code} only"
            else:
                continue
            if sub.required:
                refused.append((sub.pattern, reason))
            else:
                log.warning("optional subscription %s refused: %s", sub.pattern, reason)
        if refused:
            raise SubscribeRefused(refused)

    def _connect_packet(self) -> mqtt5.ConnectPacket:
        o = self.options
        return mqtt5.ConnectPacket(
            o.client_id,
            username=o.username,
            password=o.password.encode() if o.password is not None else None,
            clean_start=False,
            keep_alive=o.keepalive_s,
            session_expiry_interval=o.session_expiry_s,
            receive_max=o.receive_maximum,
            will=o.will,
        )

    def _deliver(self, link: int, messages: list[Message]) -> None:
        """Called by the session from data_received: queue for batches(), merged while not yet taken."""
        self.stats.received += len(messages)
        queue = self._queue
        if queue and queue[-1].link == link:
            queue[-1].messages.extend(messages)
        else:
            queue.append(Batch(link, messages))
        self._wake.set()

    def _note(self, exc: LinkError) -> None:
        self.stats.last_error = str(exc)
        log.warning("receiver %s: %s", self.options.client_id, exc)


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    """Until the first of ``waits`` finishes; the others are cancelled."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
