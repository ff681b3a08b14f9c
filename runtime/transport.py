"""paho-mqtt 2.x driven from the asyncio loop, without paho's network thread.

The socket is watched with ``add_reader``/``add_writer`` and ``loop_misc`` runs from a task, as aiomqtt
does; callbacks therefore run on the loop's thread and may touch loop state directly. One instance is
one connection: reconnecting means a new instance, so no paho-internal retransmit queue ever races our
own outbox (the outbox is the single source of what still has to be sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)


READS_PER_WAKEUP = 256


def _tls_pending(sock: socket.socket | None) -> bool:
    pending = getattr(sock, "pending", None)
    return bool(pending and pending())


class MqttError(Exception):
    """The broker refused us, or the link broke. ``reason`` is the MQTT reason string when there is one."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca_file: str
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(slots=True)
class LinkOptions:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    keepalive_s: int = 30
    clean_start: bool = False
    session_expiry_s: int = 86_400
    will: Will | None = None
    manual_ack: bool = False
    receive_maximum: int = 1000
    max_inflight: int = 100
    connect_timeout_s: float = 10.0


MessageHandler = Callable[[mqtt.MQTTMessage], None]
PubackHandler = Callable[[int, ReasonCode], None]


class AsyncMqtt:
    def __init__(self, options: LinkOptions) -> None:
        self.options = options
        self.on_message: MessageHandler | None = None
        self.on_puback: PubackHandler | None = None
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._connected: asyncio.Future[None] = self._loop.create_future()
        self._closed: asyncio.Future[str] = self._loop.create_future()
        self._suback: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._puback_waiters: dict[int, asyncio.Future[ReasonCode]] = {}
        self._received = 0
        self._paused = False
        self._misc: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self._client = self._make_client()

    # -- construction ------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        o = self.options
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=o.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=o.manual_ack,
        )
        if o.username is not None:
            c.username_pw_set(o.username, o.password)
        if o.tls is not None:
            c.tls_set(
                ca_certs=o.tls.ca_file,
                certfile=o.tls.cert_file,
                keyfile=o.tls.key_file,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        if o.will is not None:
            c.will_set(o.will.topic, o.will.payload, qos=o.will.qos, retain=o.will.retain)
        c.max_inflight_messages_set(o.max_inflight)
        # Our own outbox bounds what is pending; paho's queue must never be the place that drops.
        c.max_queued_messages_set(0)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_socket_register_write
        c.on_socket_unregister_write = self._on_socket_unregister_write
        return c

    # -- lifecycle ---------------------------------------------------------------------------------
    async def connect(self) -> None:
        """Open the TCP/TLS connection and wait for a successful CONNACK; raise MqttError otherwise."""
        o = self.options
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = o.session_expiry_s
        props.ReceiveMaximum = o.receive_maximum
        self._client.connect_timeout = o.connect_timeout_s
        # The TCP connect and TLS handshake block; run them off the loop. Socket callbacks from that
        # thread are marshalled back (see _in_loop).
        try:
            await self._loop.run_in_executor(
                None,
                lambda: self._client.connect(
                    o.host, o.port, keepalive=o.keepalive_s, clean_start=o.clean_start, properties=props
                ),
            )
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"cannot reach MQTT broker {o.host}:{o.port}: {exc}") from exc
        self._misc = self._loop.create_task(self._misc_loop(), name=f"mqtt-misc-{o.client_id}")
        try:
            await asyncio.wait_for(asyncio.shield(self._connected), o.connect_timeout_s)
        except TimeoutError:
            await self.close()
            raise MqttError(f"no CONNACK from {o.host}:{o.port} within {o.connect_timeout_s} s") from None
        except MqttError:
            await self.close()
            raise

    async def disconnect(self, reason: int = 0) -> None:
        """Clean DISCONNECT: with reason 0 the broker discards our Will."""
        if self.is_connected:
            self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=reason))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed), 5)
        await self.close()

    async def close(self) -> None:
        """Drop the socket without a DISCONNECT (the broker will publish our Will)."""
        if self._misc is not None:
            self._misc.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc
            self._misc = None
        if self._sock is not None:
            self._remove_watchers(self._sock)
        with contextlib.suppress(Exception):
            self._client.socket() and self._client.socket().close()  # type: ignore[union-attr]
        self._finish("closed")

    @property
    def is_connected(self) -> bool:
        return self._connected.done() and not self._connected.exception() and not self._closed.done()

    async def wait_closed(self) -> str:
        """Wait until the connection ends; returns why."""
        return await asyncio.shield(self._closed)

    # -- operations --------------------------------------------------------------------------------
    def publish(
        self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, expiry_s: int | None = None
    ) -> int:
        props = None
        if expiry_s is not None:
            # The broker discards the message once it is this old (a command that came too late).
            props = Properties(PacketTypes.PUBLISH)
            props.MessageExpiryInterval = max(1, expiry_s)
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise MqttError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        return info.mid

    async def publish_confirmed(
        self,
        topic: str,
        payload: bytes,
        retain: bool = False,
        expiry_s: int | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        """QoS 1 publish that returns once the broker PUBACKed it; MqttError if it refused."""
        fut: asyncio.Future[ReasonCode] = self._loop.create_future()
        mid = self.publish(topic, payload, qos=1, retain=retain, expiry_s=expiry_s)
        self._puback_waiters[mid] = fut
        try:
            rc = await asyncio.wait_for(fut, timeout_s)
        finally:
            self._puback_waiters.pop(mid, None)
        if rc.is_failure:
            raise MqttError(f"broker refused the publish to {topic}: {rc}", str(rc))

    async def subscribe(self, filters: list[tuple[str, int]], timeout_s: float = 10.0) -> None:
        result, mid = self._client.subscribe([(f, mqtt.SubscribeOptions(qos=q)) for f, q in filters])
        if result != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"subscribe failed: {mqtt.error_string(result)}")
        fut: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
        self._suback[mid] = fut
        try:
            codes = await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise MqttError(f"no SUBACK within {timeout_s} s") from None
        refused = [f"{f}: {rc}" for (f, _), rc in zip(filters, codes, strict=False) if rc.is_failure]
        if refused:
            raise MqttError(f"broker refused subscriptions: {', '.join(refused)}")

    def ack(self, mid: int, qos: int = 1) -> None:
        """Manual PUBACK (manual_ack=True): sent only once the message is committed."""
        self._client.ack(mid, qos)

    def pending_writes(self) -> bool:
        return self._client.want_write()

    # -- paho callbacks (run on the loop thread) ---------------------------------------------------
    def _on_connect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        if self._connected.done():
            return
        if rc.is_failure:
            self._connected.set_exception(MqttError(f"broker refused the connection: {rc}", str(rc)))
        else:
            self._connected.set_result(None)

    def _on_disconnect(self, _c: Any, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
        self._finish(str(rc))

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self._received += 1
        if self.on_message is not None:
            self.on_message(msg)

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        waiter = self._puback_waiters.get(mid)
        if waiter is not None and not waiter.done():
            waiter.set_result(rc)
        if self.on_puback is not None:
            self.on_puback(mid, rc)

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, codes: list[ReasonCode], _p: Any) -> None:
        fut = self._suback.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(codes)

    def _on_socket_open(self, _c: Any, _u: Any, sock: Any) -> None:
        self._in_loop(self._watch, sock)

    def _on_socket_close(self, _c: Any, _u: Any, sock: Any) -> None:
        self._in_loop(self._remove_watchers, sock)

    def _on_socket_register_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self._in_loop(self._loop.add_writer, sock, self._client.loop_write)

    def _on_socket_unregister_write(self, _c: Any, _u: Any, sock: Any) -> None:
        self._in_loop(self._loop.remove_writer, sock)

    # -- helpers -----------------------------------------------------------------------------------
    def _in_loop(self, fn: Callable[..., Any], *args: Any) -> None:
        if self._loop.is_closed():
            # paho's Client.__del__ closes its sockets through these callbacks, at garbage collection, in whatever
            # thread runs it and possibly after the loop is gone: a closed loop watches nothing, so nothing to do
            # (raising there is an "Exception ignored in Client.__del__" that failed an unrelated test in CI).
            return
        if threading.get_ident() == self._loop_thread:
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def _watch(self, sock: socket.socket) -> None:
        self._sock = sock
        # paho leaves Nagle on: a publish right after a PUBACK then waits for the peer's delayed ACK
        # (about 40 ms here; bench/commands.py). MQTT packets are small and latency matters more.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._loop.add_reader(sock, self._read)

    def _read(self) -> None:
        """paho's loop_read() takes one packet per call for a subscriber: keep reading while packets
        keep coming (bounded), instead of one event-loop round per message (bench/ingest.py measured
        the difference). A TLS socket may hold decrypted bytes the selector cannot see: drain those too."""
        for _ in range(READS_PER_WAKEUP):
            if self._paused:
                return
            before = self._received
            rc = self._client.loop_read()
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                self._finish(mqtt.error_string(rc))
                return
            if self._received == before and not _tls_pending(self._sock):
                return

    def pause_reading(self) -> None:
        """Stop taking messages (the caller holds enough unacknowledged ones). Mosquitto 2.0 does not
        hold a client to its Receive Maximum (bench/receive_maximum.py), so we do."""
        if not self._paused and self._sock is not None:
            self._paused = True
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._sock)

    def resume_reading(self) -> None:
        if self._paused and self._sock is not None and not self._closed.done():
            self._paused = False
            self._loop.add_reader(self._sock, self._read)
            self._loop.call_soon(self._read)  # bytes may already wait in a TLS buffer

    def _remove_watchers(self, sock: socket.socket) -> None:
        with contextlib.suppress(Exception):
            self._loop.remove_reader(sock)
        with contextlib.suppress(Exception):
            self._loop.remove_writer(sock)

    def _finish(self, why: str) -> None:
        if not self._connected.done():
            self._connected.set_exception(MqttError(f"connection ended before CONNACK: {why}", why))
            self._connected.exception()  # mark retrieved: connect() may not be waiting any more
        if not self._closed.done():
            self._closed.set_result(why)
        for fut in self._suback.values():
            if not fut.done():
                fut.set_exception(MqttError(f"connection lost while subscribing: {why}", why))
        self._suback.clear()
        for waiter in self._puback_waiters.values():
            if not waiter.done():
                waiter.set_exception(MqttError(f"connection lost before PUBACK: {why}", why))

    async def _misc_loop(self) -> None:
        # Keepalive PINGREQs and timeouts. paho's own loop calls this about once a second; every quarter keepalive
        # (a second at least) still sends the PINGREQ within 1.25 keepalives of the last packet out, inside the
        # broker's 1.5, and a simulator with thousands of links on one loop wakes for them 7.5 times less often at
        # the default 30 s (issue 20: it was a wakeup per link per second).
        interval = max(1.0, self.options.keepalive_s / 4)
        while True:
            await asyncio.sleep(interval)
            if self._client.loop_misc() != mqtt.MQTT_ERR_SUCCESS:
                self._finish("keepalive timeout or connection lost")
                return
