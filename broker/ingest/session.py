"""One MQTT 5 connection of the consumer: the ``mqtt5`` codec (Rust, sans-I/O) on an asyncio Protocol.

The rule: a QoS 1 message is acknowledged only when the caller says so (after its commit), and the caller
never holds more than ``receive_maximum`` unacknowledged messages. At that bound the session stops parsing
and stops reading the socket until acknowledgements free room: Mosquitto 2.0 does not hold a client to the
Receive Maximum it announced (bench/receive_maximum.py), so the client must.

Each packet is parsed once, in Rust; a PUBLISH becomes one small immutable ``Message`` and nothing else.
What goes out (PUBACKs, confirmations, commands, PINGREQ) is gathered and written once per event-loop
turn, so a commit's 500 PUBACKs cost one system call.

One instance is one TCP/TLS connection. A reconnect is a new Session with a new ``link`` number: packet
ids belong to the connection that delivered them (the broker reuses them on the next one), so an id of an
old link is never acknowledged on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple, cast

import mqtt5

log = logging.getLogger(__name__)

# PUBACK with reason Success and no properties: the reason code and property length may be left out
# (MQTT 5, 3.4.2.1), so it is the fixed header plus the packet id.
_PUBACK = struct.Struct(">BBH")
_PUBACK_TYPE = 0x40
WRITE_BUFFER_HIGH = 1 << 20  # past this the broker is not reading: QoS 0 sends are skipped and counted
DISCONNECT_WAIT_S = 5.0

# CONNACK refusals that retrying cannot cure: the configuration (or the broker's) must change first.
# Plain ints: the codec's enums are not hashable.
_RC = mqtt5.ConnAckReasonCode
PERMANENT_REFUSALS = frozenset(
    int(rc)
    for rc in (
        _RC.UNSUPPORTED_PROTOCOL_VERSION,
        _RC.CLIENT_ID_NOT_VALID,
        _RC.BAD_USER_NAME_OR_PASSWORD,
        _RC.NOT_AUTHORIZED,
        _RC.BANNED,
        _RC.BAD_AUTHENTICATION_METHOD,
    )
)
_ADVICE = {
    int(_RC.BAD_USER_NAME_OR_PASSWORD): "check mqtt.username and the password file "
    "(mqtt.password_file, or mqtt-password in $CREDENTIALS_DIRECTORY) against the broker's password file",
    int(_RC.NOT_AUTHORIZED): "the broker knows this account but does not let it connect: "
    "check its password and the broker's password and ACL files",
    int(_RC.CLIENT_ID_NOT_VALID): "the broker refuses the client id consumer-{instance}: choose another instance name",
    int(_RC.BANNED): "the broker has banned this client: ask whoever runs it",
}


class LinkError(Exception):
    """The link to the broker could not be made or broke. ``reason`` is the MQTT reason or the OS error."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


class NotConnected(LinkError):
    """A publish while no connection is up; nothing was sent."""


class ConnectRefused(LinkError):
    """The broker answered CONNECT with a refusal. ``permanent`` refusals (bad credentials, not
    authorised, banned, bad client id) stop the receiver: retrying would only hammer the broker."""

    def __init__(self, where: str, code: int) -> None:
        name = _RC(code).name
        self.code = code
        self.permanent = code in PERMANENT_REFUSALS
        advice = _ADVICE.get(code, "fix the configuration" if self.permanent else "retrying with backoff")
        super().__init__(f"broker {where} refused the connection: {name} (0x{code:02x}); {advice}", name)


class SubscribeRefused(LinkError):
    """The broker refused (or downgraded below QoS 1) a subscription the consumer cannot work without."""

    def __init__(self, refused: list[tuple[str, str]]) -> None:
        what = ", ".join(f"{pattern}: {reason}" for pattern, reason in refused)
        super().__init__(
            f"broker refused subscriptions ({what}): check the consumer account's ACL (readwrite on the hall/v1 "
            "topics) and that the broker allows shared subscriptions",
            what,
        )
        self.refused = refused


class PublishRefused(Exception):
    """The broker answered a QoS 1 publish with a failure reason (MQTT 5, 3.4.2.1)."""

    def __init__(self, topic: str, code: int) -> None:
        name = mqtt5.PubAckReasonCode(code).name
        super().__init__(f"broker refused the publish to {topic}: {name} (0x{code:02x})")
        self.topic = topic
        self.code = code


class Message(NamedTuple):
    """One received PUBLISH. A tuple: immutable, no per-instance dict, cheap at 300,000 a second.
    ``packet_id`` is None for QoS 0 (nothing to acknowledge)."""

    topic: str
    payload: bytes
    packet_id: int | None
    retain: bool
    duplicate: bool  # the broker sent it before, on an earlier connection of this session

    @property
    def qos(self) -> int:
        return 0 if self.packet_id is None else 1


@dataclass(frozen=True, slots=True)
class Subscription:
    pattern: str
    qos: int = 1
    required: bool = True  # a refused required subscription stops the receiver; others are logged


@dataclass(slots=True)
class LinkStats:
    """Counters over every connection of one receiver, for health and metrics."""

    connects: int = 0
    received: int = 0
    acked: int = 0
    stale_acks: int = 0  # acknowledgements for a connection that has ended: the broker sends those again
    pauses: int = 0  # times the receive bound stopped reading the socket
    skipped_sends: int = 0  # QoS 0 sends not written (no connection, or the broker was not reading)
    last_error: str = ""
    session_present: bool = False


@dataclass(frozen=True, slots=True)
class Connected:
    """What the broker said in its CONNACK that the caller should know."""

    session_present: bool
    keepalive_s: int
    outgoing_window: int


Deliver = Callable[[int, list[Message]], None]


class Session(asyncio.Protocol):
    """The protocol object of one connection. Construct with ``Session.open``."""

    def __init__(self, link: int, receive_maximum: int, deliver: Deliver, stats: LinkStats) -> None:
        self.link = link
        self._stats = stats
        self._loop = asyncio.get_running_loop()
        self._deliver = deliver
        self._receive_maximum = receive_maximum
        self._transport: asyncio.Transport | None = None
        self._in = bytearray()
        self._out = bytearray()
        self._flush_scheduled = False
        self._unacked: set[int] = set()
        self._reading_paused = False
        self._writing_paused = False
        self._connack: asyncio.Future[mqtt5.ConnAckPacket] = self._loop.create_future()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._subacks: dict[int, asyncio.Future[list[int]]] = {}
        self._pubacks: dict[int, asyncio.Future[int]] = {}
        self._window = asyncio.Semaphore(1)
        self._next_id = 0
        self._last_out = time.monotonic()
        self._ping_sent: float | None = None
        self._keepalive: asyncio.Task[None] | None = None

    # -- opening and closing ---------------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        *,
        host: str,
        port: int,
        tls: ssl.SSLContext | None,
        connect: mqtt5.ConnectPacket,
        link: int,
        deliver: Deliver,
        stats: LinkStats,
        max_inflight: int,
        timeout_s: float,
    ) -> tuple[Session, Connected]:
        """TCP (and TLS) connect, CONNECT, wait for CONNACK. Raises ConnectRefused or LinkError."""
        loop = asyncio.get_running_loop()
        where = f"{host}:{port}"
        try:
            _, session = await asyncio.wait_for(
                loop.create_connection(
                    lambda: cls(link, connect.receive_max, deliver, stats),
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls is not None else None,
                ),
                timeout_s,
            )
        except TimeoutError:
            raise LinkError(f"cannot reach MQTT broker {where}: no connection within {timeout_s} s") from None
        except (OSError, ssl.SSLError) as exc:
            raise LinkError(f"cannot reach MQTT broker {where}: {exc}", str(exc)) from exc
        session._write(connect.write())
        try:
            connack = await asyncio.wait_for(asyncio.shield(session._connack), timeout_s)
        except TimeoutError:
            session.abort()
            raise LinkError(f"no CONNACK from {where} within {timeout_s} s") from None
        except BaseException:  # the link broke, or the receiver is closing while we connect
            session.abort()
            raise
        if connack.reason_code != mqtt5.ConnAckReasonCode.SUCCESS:
            session.abort()
            raise ConnectRefused(where, int(connack.reason_code))
        # The broker may shorten our keepalive; then its value is the one to keep (MQTT 5, 3.2.2.3.14).
        keepalive = connack.server_keep_alive if connack.server_keep_alive is not None else connect.keep_alive
        window = max(1, min(max_inflight, connack.receive_max))
        session._window = asyncio.Semaphore(window)
        if keepalive:
            session._keepalive = loop.create_task(session._keepalive_loop(keepalive), name=f"mqtt-keepalive-{link}")
        return session, Connected(connack.session_present, keepalive, window)

    async def disconnect(self) -> None:
        """Clean DISCONNECT (reason 0: the broker keeps the session and drops any Will), then wait for the
        broker to close. Closing first would race a quick restart: Mosquitto may take the new CONNECT for
        this client id before reading our last PUBACKs, drop them with the old socket and send those
        messages again (seen in tests/test_receive.py)."""
        try:
            if self._transport is not None and not self._transport.is_closing():
                self._out += mqtt5.DisconnectPacket().write()
                self._flush()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._closed), DISCONNECT_WAIT_S)
        finally:
            self.abort()

    def abort(self) -> None:
        """Drop the connection now, without DISCONNECT."""
        if self._transport is not None:
            self._transport.abort()
        self._finish("closed by the client")

    async def wait_closed(self) -> str:
        """Wait until the connection ends; returns why."""
        return await asyncio.shield(self._closed)

    def closed_why(self) -> str:
        return self._closed.result() if self._closed.done() else ""

    @property
    def is_open(self) -> bool:
        return not self._closed.done()

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    # -- asyncio.Protocol ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's TCP transport (the consumer runs on uvloop) has every
        # method of asyncio.Transport without deriving from it.
        self._transport = cast(asyncio.Transport, transport)
        self._transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._finish(f"connection lost: {exc}" if exc else "connection closed by the broker")

    def data_received(self, data: bytes) -> None:
        self._in += data
        self._parse()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False

    # -- receiving -----------------------------------------------------------------------------------
    def _parse(self) -> None:
        """Take every whole packet from the input buffer, stopping at the receive bound."""
        buf = self._in
        got: list[Message] = []
        unacked = self._unacked
        bound = self._receive_maximum
        publish = mqtt5.PublishPacket
        offset = 0
        error: ValueError | None = None
        with memoryview(buf) as view:
            end = len(view)
            while offset < end:
                if len(unacked) >= bound:
                    self._pause_reading()
                    break
                try:
                    packet, size = mqtt5.read(view[offset:])
                except IndexError:  # an incomplete packet: the rest comes with the next read
                    break
                except ValueError as exc:  # a malformed packet from the broker: nothing after it is trustworthy
                    error = exc
                    break
                offset += size
                if type(packet) is publish:
                    pid = packet.packet_id
                    if pid is not None:
                        unacked.add(pid)
                    got.append(Message(packet.topic, packet.payload, pid, packet.retain, packet.duplicate))
                else:
                    self._control(packet)
        if offset:
            del buf[:offset]
        if got:
            self._deliver(self.link, got)
        if error is not None:
            log.error("malformed packet from the broker (%s): dropping the connection", error)
            self._protocol_error(f"malformed packet from the broker: {error}")

    def _control(self, packet: mqtt5.Packet) -> None:
        if isinstance(packet, mqtt5.PubAckPacket):
            fut = self._pubacks.pop(packet.packet_id, None)
            if fut is not None:
                self._window.release()
                if not fut.done():
                    fut.set_result(int(packet.reason_code))
        elif isinstance(packet, mqtt5.PingRespPacket):
            self._ping_sent = None
        elif isinstance(packet, mqtt5.SubAckPacket):
            sub = self._subacks.pop(packet.packet_id, None)
            if sub is not None and not sub.done():
                sub.set_result([int(code) for code in packet.reason_codes])
        elif isinstance(packet, mqtt5.ConnAckPacket):
            if not self._connack.done():
                self._connack.set_result(packet)
        elif isinstance(packet, mqtt5.DisconnectPacket):
            why = f"the broker disconnected us: {packet.reason_code.name}"
            if packet.reason_str:
                why += f" ({packet.reason_str})"
            self._finish(why)
        else:  # QoS 2 flows, AUTH, or a client-only packet: we never asked for any of them
            self._protocol_error(f"unexpected {type(packet).__name__} from the broker")

    def _pause_reading(self) -> None:
        if not self._reading_paused and self._transport is not None:
            self._reading_paused = True
            self._stats.pauses += 1
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._reading_paused and self._transport is not None and not self._transport.is_closing():
            self._reading_paused = False
            self._ping_sent = None  # its PINGRESP may still wait unread behind what we held back
            self._transport.resume_reading()
            self._loop.call_soon(self._parse)  # packets already in the buffer come first

    # -- acknowledging and sending -----------------------------------------------------------------
    def ack(self, packet_ids: Iterable[int]) -> int:
        """PUBACK these ids (those still unacknowledged on this connection); returns how many."""
        unacked = self._unacked
        out = self._out
        pack = _PUBACK.pack
        n = 0
        for pid in packet_ids:
            if pid in unacked:
                unacked.remove(pid)
                out += pack(_PUBACK_TYPE, 2, pid)
                n += 1
        if n:
            self._schedule_flush()
            if len(unacked) < self._receive_maximum:
                self._resume_reading()
        return n

    def send(self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None) -> bool:
        """QoS 0 publish. False (and counted) when the broker is not taking our bytes: a lost
        confirmation costs the device one re-send, a stalled consumer costs everyone."""
        if self._writing_paused or self._transport is None or self._closed.done():
            self._stats.skipped_sends += 1
            return False
        expiry = max(1, expiry_s) if expiry_s is not None else None
        self._write(mqtt5.PublishPacket(topic, payload, retain=retain, message_expiry_interval=expiry).write())
        return True

    async def publish(self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None) -> int:
        """QoS 1 publish within the broker's receive window; returns the PUBACK reason code."""
        await self._window.acquire()
        if self._closed.done():
            self._window.release()
            raise NotConnected(f"connection closed before publishing to {topic}")
        pid = self._new_id()
        fut: asyncio.Future[int] = self._loop.create_future()
        self._pubacks[pid] = fut  # the window slot is released when the PUBACK comes (see _control)
        expiry = max(1, expiry_s) if expiry_s is not None else None
        packet = mqtt5.PublishPacket(
            topic,
            payload,
            qos=mqtt5.QoS.AT_LEAST_ONCE,
            packet_id=pid,
            retain=retain,
            message_expiry_interval=expiry,
        )
        self._write(packet.write())
        return await fut

    async def subscribe(self, subscriptions: Iterable[Subscription]) -> list[int]:
        """One SUBSCRIBE; returns the SUBACK reason codes in order."""
        filters = [
            # retain_as_published=False: a live status arrives with RETAIN 0 and only what the broker
            # replays on subscribing has RETAIN 1, as with paho's defaults; the consumer tells the two apart.
            mqtt5.TopicFilter(
                s.pattern,
                max_qos=mqtt5.QoS(s.qos),
                retain_as_published=False,
                retain_handling=mqtt5.RetainHandling.SEND_ALWAYS,
            )
            for s in subscriptions
        ]
        pid = self._new_id()
        fut: asyncio.Future[list[int]] = self._loop.create_future()
        self._subacks[pid] = fut
        self._write(mqtt5.SubscribePacket(pid, filters).write())
        return await fut

    def _new_id(self) -> int:
        for _ in range(65535):
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self._pubacks and self._next_id not in self._subacks:
                return self._next_id
        raise LinkError("no free packet id: 65,535 publishes unacknowledged")

    def _write(self, data: bytes) -> None:
        self._out += data
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out:
            return
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(bytes(self._out))
            self._last_out = time.monotonic()
        self._out.clear()

    # -- keepalive -------------------------------------------------------------------------------------
    async def _keepalive_loop(self, keepalive_s: int) -> None:
        """PINGREQ when we have sent nothing for half the keepalive; a PINGRESP missing for a whole
        keepalive means a dead link (a powered-off broker host sends no RST). While the receive bound
        holds reading, the PINGRESP cannot be seen, so only the sending goes on."""
        period = keepalive_s / 4
        while not self._closed.done():
            await asyncio.sleep(period)
            now = time.monotonic()
            if self._ping_sent is not None and not self._reading_paused and now - self._ping_sent > keepalive_s:
                self._protocol_error(f"keepalive: no PINGRESP within {keepalive_s} s")
                return
            if now - self._last_out >= keepalive_s / 2 and (self._ping_sent is None or self._reading_paused):
                self._ping_sent = now
                self._write(mqtt5.PingReqPacket().write())

    # -- endings -------------------------------------------------------------------------------------
    def _protocol_error(self, why: str) -> None:
        if self._transport is not None:
            self._transport.abort()
        self._finish(why)

    def _finish(self, why: str) -> None:
        if self._closed.done():
            return
        self._closed.set_result(why)
        if self._keepalive is not None and self._keepalive is not asyncio.current_task():
            self._keepalive.cancel()
        lost = LinkError(f"connection ended: {why}", why)
        if not self._connack.done():
            self._connack.set_exception(lost)
            self._connack.exception()  # retrieved: open() may have stopped waiting
        waiting: list[asyncio.Future[list[int]] | asyncio.Future[int]] = [*self._subacks.values()]
        waiting += self._pubacks.values()
        for fut in waiting:
            if not fut.done():
                fut.set_exception(lost)
                fut.exception()
        self._subacks.clear()
        self._pubacks.clear()
        self._unacked.clear()
