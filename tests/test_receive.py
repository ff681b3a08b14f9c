"""The ingest's receive stage against a real Mosquitto: persistent session, shared subscription, acks only
when the caller says so, its own Receive Maximum bound, typed refusals, TLS, retained statuses, keepalive,
and a broker killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from broker.ingest.receive import (
    Batch,
    ConnectRefused,
    Message,
    NotConnected,
    PublishRefused,
    Receiver,
    ReceiverOptions,
    Subscription,
)
from broker.mosquitto.local import HOST, LocalMosquitto, free_port
from protocol import topics
from runtime.backoff import Backoff
from runtime.transport import TlsFiles
from tests.support.mqtt import publish
from tests.support.procs import wait_for
from tests.support.tls import make_ca, make_server_cert
from tests.test_security import auth_conf, password_file

EVENTS = topics.shared("rx", topics.ALL_EVENTS)
FAST = Backoff(0.05, 0.5)


def options(port: int, client_id: str = "rx-test", **kw: object) -> ReceiverOptions:
    subs = kw.pop("subscriptions", (Subscription(EVENTS), Subscription(topics.ALL_STATUS)))
    return ReceiverOptions(HOST, port, client_id, subs, backoff=FAST, **kw)  # type: ignore[arg-type]


def events(n: int, start: int = 0, device: str = "att-1") -> list[tuple[str, bytes, bool]]:
    topic = topics.event("rx-hall", device, "attendance.punch")
    return [(topic, f"{i}".encode(), False) for i in range(start, start + n)]


class Collector:
    """Reads ``rx.batches()`` in a task; acknowledges each batch when ``auto_ack`` (as a committing caller
    would), else keeps them for the test to acknowledge."""

    def __init__(self, rx: Receiver, auto_ack: bool = True) -> None:
        self.rx = rx
        self.auto_ack = auto_ack
        self.messages: list[Message] = []
        self.batches: list[Batch] = []
        self.error: BaseException | None = None
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for batch in self.rx.batches():
                self.batches.append(batch)
                self.messages += batch.messages
                if self.auto_ack:
                    self.rx.ack(batch.link, batch.packet_ids())
        except Exception as exc:
            self.error = exc

    def payloads(self) -> list[int]:
        return [int(m.payload) for m in self.messages if m.topic.startswith("hall/v1/rx-hall/")]

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


@asynccontextmanager
async def receiving(opts: ReceiverOptions, auto_ack: bool = True) -> AsyncIterator[tuple[Receiver, Collector]]:
    async with Receiver(opts) as rx:
        await asyncio.wait_for(rx.wait_connected(), 10)
        collector = Collector(rx, auto_ack)
        try:
            yield rx, collector
        finally:
            await collector.stop()


def ids_of(got: Collector, link: int) -> list[int]:
    return [pid for b in got.batches if b.link == link for pid in b.packet_ids()]


def saved_after(broker: LocalMosquitto, t: float) -> bool:
    db = broker.persistence_dir / "mosquitto.db"
    return db.is_file() and db.stat().st_mtime > t


async def send(port: int, items: list[tuple[str, bytes, bool]]) -> None:
    await asyncio.to_thread(publish, port, items)


async def test_a_shared_subscription_receives_in_order_and_acknowledged_messages_are_not_sent_again(
    mosquitto: LocalMosquitto,
) -> None:
    """GIVEN a receiver on a shared subscription WHEN 300 events arrive and it acknowledges them all and
    reconnects THEN it got each once, in order, as published, and nothing comes again."""
    async with receiving(options(mosquitto.port)) as (rx, got):
        await send(mosquitto.port, events(300))
        await wait_for(lambda: len(got.payloads()) >= 300, 10, "300 events")
        assert got.payloads() == list(range(300))
        first = got.messages[0]
        assert first.topic == topics.event("rx-hall", "att-1", "attendance.punch")
        assert first.payload == b"0" and isinstance(first.payload, bytes)
        assert first.qos == 1 and not first.retain and not first.duplicate
        await wait_for(lambda: rx.unacked == 0, 5, "every message acknowledged")
    async with receiving(options(mosquitto.port)) as (rx, got):
        assert rx.stats.session_present, "the broker kept the persistent session"
        await asyncio.sleep(1.0)
        assert got.payloads() == []


async def test_unacknowledged_messages_come_again_after_a_restart_and_acknowledged_ones_do_not(
    mosquitto: LocalMosquitto,
) -> None:
    """GIVEN 100 events received, the first 40 acknowledged WHEN the receiver stops and starts again THEN
    exactly the other 60 come again, marked duplicate."""
    async with receiving(options(mosquitto.port), auto_ack=False) as (rx, got):
        await send(mosquitto.port, events(100))
        await wait_for(lambda: len(got.messages) >= 100, 10, "100 events")
        acked = [m.packet_id for m in got.messages[:40] if m.packet_id is not None]
        assert rx.ack(got.batches[0].link, acked) == 40
        assert rx.unacked == 60
        await asyncio.sleep(0.2)  # the PUBACKs go out on the next loop turn; let the broker read them
    async with receiving(options(mosquitto.port), auto_ack=False) as (rx, again):
        await wait_for(lambda: len(again.messages) >= 60, 10, "the 60 unacknowledged events")
        await asyncio.sleep(0.5)
        assert again.payloads() == list(range(40, 100))
        assert all(m.duplicate for m in again.messages)


async def test_two_receivers_in_one_share_group_split_the_load_exactly_once(mosquitto: LocalMosquitto) -> None:
    """GIVEN two receivers (two client ids) in one share group WHEN 2,000 events arrive THEN each event
    reaches exactly one of them, and both take part."""
    async with (
        receiving(options(mosquitto.port, "rx-a")) as (_a, got_a),
        receiving(options(mosquitto.port, "rx-b")) as (_b, got_b),
    ):
        await send(mosquitto.port, events(2000))
        await wait_for(lambda: len(got_a.payloads()) + len(got_b.payloads()) >= 2000, 20, "2,000 events")
        await asyncio.sleep(0.5)
        a, b = got_a.payloads(), got_b.payloads()
        assert len(a) + len(b) == 2000
        assert sorted(a + b) == list(range(2000))
        assert a and b, f"one receiver got everything: {len(a)} / {len(b)}"


async def test_the_receiver_holds_no_more_than_its_receive_maximum_although_mosquitto_sends_more(
    mosquitto: LocalMosquitto,
) -> None:
    """GIVEN receive_maximum 20 and 500 queued events WHEN the first 20 are acknowledged (Mosquitto 2.0 then
    sends hundreds: bench/receive_maximum.py) THEN the receiver still hands out only 20 more and stops
    reading; each acknowledgement lets that many in, until all 500 came once."""
    async with receiving(options(mosquitto.port, receive_maximum=20), auto_ack=False) as (rx, got):
        await send(mosquitto.port, events(500))
        await wait_for(lambda: len(got.messages) >= 20, 10, "the first 20")
        await asyncio.sleep(0.5)
        assert len(got.messages) == 20 and rx.unacked == 20
        taken = 0
        while taken < 500:
            window = got.messages[taken:]
            assert 0 < len(window) <= 20, f"{len(window)} unacknowledged messages held at once"
            assert rx.unacked == len(window)
            rx.ack(got.batches[0].link, [m.packet_id for m in window if m.packet_id is not None])
            taken += len(window)
            if taken < 500:
                await wait_for(lambda t=taken: len(got.messages) >= min(t + 20, 500), 10, f"20 more after {taken}")
                await asyncio.sleep(0.05 if taken > 20 else 0.5)  # the first time: let Mosquitto over-send
        assert got.payloads() == list(range(500))
        assert rx.stats.pauses >= 1, "Mosquitto over-sent and the receiver did not have to stop reading?"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[LocalMosquitto]:
    """A broker that takes only user consumer-1 with password right-pw, and lets it use hall/# only."""
    passwd = password_file(tmp_path / "passwd", {"consumer-1": "right-pw"})
    acl = tmp_path / "acl"
    acl.write_text("user consumer-1\ntopic readwrite hall/#\ntopic read $SYS/#\n")
    broker = LocalMosquitto(tmp_path / "mq", extra_conf=auth_conf(passwd, acl))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


async def test_a_refused_password_ends_the_receiver_with_a_typed_error_naming_the_reason(
    secured: LocalMosquitto,
) -> None:
    """GIVEN a broker with a password file WHEN the receiver's password is wrong THEN wait_connected and
    batches() raise ConnectRefused naming the CONNACK reason, and it stops retrying."""
    opts = options(secured.port, "consumer-1", username="consumer-1", password="wrong-pw")
    async with Receiver(opts) as rx:
        with pytest.raises(ConnectRefused) as refused:
            await asyncio.wait_for(rx.wait_connected(), 10)
        assert refused.value.permanent
        assert refused.value.code in (0x86, 0x87)
        assert refused.value.reason in ("BAD_USER_NAME_OR_PASSWORD", "NOT_AUTHORIZED")
        assert "password" in str(refused.value)
        with pytest.raises(ConnectRefused):
            async for _ in rx.batches():
                pass
        await asyncio.sleep(0.3)
        assert rx.stats.connects == 0


async def test_publishes_are_confirmed_or_refused_by_the_broker(secured: LocalMosquitto) -> None:
    """GIVEN the right password WHEN the receiver publishes at QoS 1 inside and outside its ACL, and at
    QoS 0 THEN the allowed one is PUBACKed and delivered, the denied one raises PublishRefused."""
    opts = options(secured.port, "consumer-1", username="consumer-1", password="right-pw")
    async with receiving(opts) as (rx, got):
        await rx.publish(topics.event("rx-hall", "att-1", "attendance.punch"), b"7", expiry_s=60)
        assert rx.send(topics.event("rx-hall", "att-1", "attendance.punch"), b"8")
        with pytest.raises(PublishRefused) as refused:
            await rx.publish("elsewhere/x", b"no")
        assert refused.value.code == 0x87
        await wait_for(lambda: sorted(got.payloads()) == [7, 8], 10, "both publishes delivered")
    with pytest.raises(NotConnected):
        await rx.publish(topics.event("rx-hall", "att-1", "attendance.punch"), b"9")
    assert not rx.send("hall/v1/x/y/stored", b"{}")


async def test_tls_with_the_hall_ca_receives_and_a_rogue_ca_never_connects(tmp_path: Path) -> None:
    """GIVEN a Mosquitto TLS listener signed by the hall CA WHEN one receiver trusts that CA and another a
    rogue one THEN the first receives over TLS; the second keeps failing verification and gets nothing."""
    ca = make_ca(tmp_path / "tls", "hall-ca")
    rogue = make_ca(tmp_path / "rogue", "rogue-ca")
    server = make_server_cert(ca, tmp_path / "tls")
    tls_port = free_port()
    conf = f"listener {tls_port} {HOST}\ncafile {ca.cert}\ncertfile {server.cert}\nkeyfile {server.key}\n"
    broker = LocalMosquitto(tmp_path / "mq", extra_conf=conf)
    broker.start()
    try:
        async with receiving(options(tls_port, "rx-tls", tls=TlsFiles(str(ca.cert)))) as (_rx, got):
            await send(broker.port, events(50))
            await wait_for(lambda: len(got.payloads()) >= 50, 10, "50 events over TLS")
            assert got.payloads() == list(range(50))
        async with Receiver(options(tls_port, "rx-rogue", tls=TlsFiles(str(rogue.cert)))) as fooled:
            await wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in fooled.stats.last_error, 10, "a refused cert")
            assert not fooled.connected and fooled.stats.connects == 0
    finally:
        broker.stop()


async def test_retained_statuses_arrive_on_subscribe_marked_retained_and_live_ones_are_not(
    mosquitto: LocalMosquitto,
) -> None:
    """GIVEN a retained status on the broker WHEN the receiver subscribes THEN it gets it with retain set;
    a status published (retained) while subscribed comes with retain clear, as the consumer expects."""
    status = topics.status("rx-hall", "kiosk-1")
    await send(mosquitto.port, [(status, b'{"old": true}', True)])
    async with receiving(options(mosquitto.port)) as (_rx, got):
        await wait_for(lambda: len(got.messages) >= 1, 10, "the retained status")
        assert got.messages[0].topic == status and got.messages[0].retain
        await send(mosquitto.port, [(status, b'{"new": true}', True)])
        await wait_for(lambda: len(got.messages) >= 2, 10, "the live status")
        assert got.messages[1].payload == b'{"new": true}' and not got.messages[1].retain


async def test_keepalive_keeps_an_idle_session_up(mosquitto: LocalMosquitto) -> None:
    """GIVEN keepalive 2 s (Mosquitto drops a silent client after 3 s) WHEN nothing happens for 7 s THEN the
    first connection is still up and still receives."""
    async with receiving(options(mosquitto.port, keepalive_s=2)) as (rx, got):
        await asyncio.sleep(7)
        assert rx.connected and rx.stats.connects == 1, rx.stats.last_error
        await send(mosquitto.port, events(5))
        await wait_for(lambda: len(got.payloads()) >= 5, 10, "events after the idle time")


async def test_a_broker_killed_and_restarted_is_reconnected_and_old_packet_ids_are_never_acknowledged(
    mosquitto: LocalMosquitto,
) -> None:
    """GIVEN 10 events received and not acknowledged WHEN the broker is killed with SIGKILL and started again
    THEN the receiver reconnects by itself and resumes its session; the 10 come again, and acknowledging them
    with the old connection's ids does nothing (the broker reuses ids): only the new ids do."""
    async with receiving(options(mosquitto.port), auto_ack=False) as (rx, got):
        await send(mosquitto.port, events(10))
        await wait_for(lambda: len(got.messages) >= 10, 10, "10 events")
        old_link = got.batches[-1].link
        old_ids = ids_of(got, old_link)
        # Mosquitto keeps sessions across SIGKILL only as of its last autosave (every second here).
        received_at = time.time()
        await wait_for(lambda: saved_after(mosquitto, received_at), 10, "an autosave with the session")
        mosquitto.kill()
        await wait_for(lambda: not rx.connected, 10, "the receiver to see the broker gone")
        await asyncio.sleep(0.5)  # a few refused reconnects meanwhile
        mosquitto.start()
        await wait_for(lambda: rx.connected, 15, "the reconnect")
        assert rx.stats.connects == 2 and rx.stats.session_present
        await wait_for(lambda: len(got.messages) >= 20, 10, "the 10 unacknowledged events again")
        new_link = got.batches[-1].link
        assert new_link != old_link and all(m.duplicate for m in got.messages[10:])
        assert rx.ack(old_link, old_ids) == 0
        assert rx.stats.stale_acks == 10 and rx.unacked == 10
        assert rx.ack(new_link, ids_of(got, new_link)) == 10 and rx.unacked == 0
        await send(mosquitto.port, events(5, start=10))
        await wait_for(lambda: len(got.payloads()) >= 25, 10, "events after the restart")
        assert got.payloads() == [*range(10), *range(15)]


async def test_a_clean_stop_sends_disconnect(mosquitto: LocalMosquitto) -> None:
    """GIVEN a connected receiver WHEN it is closed THEN the broker logs a clean DISCONNECT, not a lost socket."""
    async with receiving(options(mosquitto.port, "rx-bye")):
        pass
    await wait_for(lambda: "Client rx-bye disconnected." in mosquitto.log_path.read_text(), 5, "DISCONNECT")


def test_the_receiver_works_on_uvloop_as_the_consumer_runs(mosquitto: LocalMosquitto) -> None:
    """GIVEN uvloop (hallfleet consumer's loop: its transports do not derive from asyncio's) WHEN 300 events
    arrive with receive_maximum 50 and the receiver publishes at QoS 1 THEN all come once, in order, within
    the bound, and the publish is PUBACKed."""
    import uvloop

    async def body() -> tuple[list[int], int, int]:
        async with receiving(options(mosquitto.port, "rx-uv", receive_maximum=50), auto_ack=False) as (rx, got):
            await rx.publish(topics.event("rx-hall", "att-1", "attendance.punch"), b"-1")
            await send(mosquitto.port, events(300))
            most = 0
            while len(got.payloads()) < 301:
                await wait_for(lambda: rx.unacked > 0, 10, "more events")
                await asyncio.sleep(0.05)
                most = max(most, rx.unacked)
                batches, got.batches = got.batches, []
                for b in batches:
                    rx.ack(b.link, b.packet_ids())
            return got.payloads(), most, rx.stats.pauses

    payloads, most, pauses = uvloop.run(body())
    assert sorted(payloads) == [-1, *range(300)] and payloads[1:] == list(range(300))
    assert most <= 50 and pauses >= 1


async def test_closing_while_the_broker_never_answers_returns_at_once(tmp_path: Path) -> None:
    """GIVEN a port that accepts TCP but never sends a CONNACK (a hung broker) WHEN the receiver is closed
    while it waits THEN close() returns within two seconds, not after the 10 s connect timeout."""
    server = await asyncio.start_server(lambda _r, _w: None, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        rx = Receiver(options(port, "rx-hung"))
        await rx.__aenter__()
        await asyncio.sleep(0.3)
        assert not rx.connected
        t0 = time.monotonic()
        await rx.close()
        assert time.monotonic() - t0 < 2.0
        assert [b async for b in rx.batches()] == []
    finally:
        server.close()


def test_the_consumer_options_keep_its_session_group_and_subscriptions() -> None:
    """GIVEN a consumer config WHEN its receiver options are made THEN the client id, share group, bound,
    keepalive and backoff are the config's, statuses are not shared and the $SYS counter is optional."""
    from broker.config import ConsumerConfig, IngestConfig
    from runtime.settings import MqttConfig

    cfg = ConsumerConfig(
        instance="c7",
        mqtt=MqttConfig(port=1999, keepalive_s=15, backoff_initial_s=0.5, backoff_max_s=9),
        ingest=IngestConfig(share_group="grp", receive_maximum=123),
    )
    o = ReceiverOptions.for_consumer(cfg)
    assert (o.client_id, o.port, o.keepalive_s, o.receive_maximum) == ("consumer-c7", 1999, 15, 123)
    assert o.backoff == Backoff(0.5, 9) and o.session_expiry_s == cfg.mqtt.session_expiry_s
    patterns = {s.pattern: s for s in o.subscriptions}
    assert set(patterns) == {
        "$share/grp/hall/v1/+/+/evt/#",
        "$share/grp/hall/v1/+/+/tele/health",
        "$share/grp/hall/v1/+/+/cmd/ack",
        "hall/v1/+/+/status",
        "hall/v1/+/_hall/lead",
        "$share/grp/hall/v1/+/_hall/incident",
        "$SYS/broker/publish/messages/dropped",
    }
    assert o.will is None
    assert not patterns["$SYS/broker/publish/messages/dropped"].required
    assert all(s.required and s.qos == 1 for p, s in patterns.items() if p.startswith(("$share", "hall/")))


def test_a_hall_consumer_takes_only_its_own_site_as_another_client_and_leaves_a_will_on_its_lead() -> None:
    """GIVEN a hall consumer (hall.site) for site qp WHEN its receiver options are made THEN it subscribes to
    qp's topics only, as hall-{instance} (not the centre's consumer-{instance}: a session of its own), takes no
    hall lead or incident, and its Will says offline on qp's lead status, retained."""
    from broker.config import ConsumerConfig, HallConfig

    o = ReceiverOptions.for_consumer(ConsumerConfig(instance="h1", hall=HallConfig(site="qp")))
    assert o.client_id == "hall-h1"
    assert {s.pattern for s in o.subscriptions} == {
        "$share/hallfleet/hall/v1/qp/+/evt/#",
        "$share/hallfleet/hall/v1/qp/+/tele/health",
        "$share/hallfleet/hall/v1/qp/+/cmd/ack",
        "hall/v1/qp/+/status",
        "$SYS/broker/publish/messages/dropped",
    }
    assert o.will is not None and o.will.topic == "hall/v1/qp/_hall/lead" and o.will.retain
    assert o.will.will_delay_interval > 0  # a reconnect soon enough never hands the site to the centre
