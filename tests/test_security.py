"""Security at the broker: TLS with the hall CA, per-device passwords (file or systemd credential) and the
per-device ACL. Real Mosquitto with its own CA, password file and ACL; real agent processes."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from paho.mqtt.enums import CallbackAPIVersion

from broker import mosquitto as mosquitto_pkg
from broker.config import ConsumerConfig, IngestConfig, StoreConfig
from broker.consumer import Consumer
from broker.mosquitto.local import HOST, LocalMosquitto, free_port
from broker.store.db import Store
from broker.store.schema import dead_letters
from protocol import topics
from protocol.envelope import Envelope
from protocol.ids import uuid7
from runtime.settings import MqttConfig, TlsConfig
from tests.conftest import RunningConsumer
from tests.support.procs import Proc, outbox_state, stored_seqs, wait_for, write_toml
from tests.support.tls import Ca, make_ca, make_server_cert

pytestmark = pytest.mark.timeout(60)

ACL_EXAMPLE = Path(mosquitto_pkg.__file__).parent / "hallfleet.acl.example"
CONSUMER_USER = "hallfleet-consumer"
CONSUMER_PASSWORD = "consumer-secret"
REFUSED = ("Not authorized", "Bad user name or password")
BACKOFF_INITIAL_S = 0.1
BACKOFF_MAX_S = 1.0


# -- fixtures and helpers ------------------------------------------------------------------------------
@pytest.fixture
def brokers() -> Iterator[list[LocalMosquitto]]:
    started: list[LocalMosquitto] = []
    yield started
    for b in started:
        b.stop()


def start_broker(workdir: Path, brokers: list[LocalMosquitto], extra_conf: str) -> LocalMosquitto:
    broker = LocalMosquitto(workdir, extra_conf=extra_conf)
    brokers.append(broker)
    broker.start()
    return broker


def mosquitto_passwd() -> str:
    found = shutil.which("mosquitto_passwd")
    if found:
        return found
    for candidate in ("/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError("mosquitto_passwd not found: it comes with Debian's mosquitto package (scripts/setup)")


def password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file (hashed), made by the real tool."""
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        args = ["-b", "-c"] if i == 0 else ["-b"]
        subprocess.run([mosquitto_passwd(), *args, str(path), user, password], check=True, timeout=10)
    return path


def secret(path: Path, value: str) -> Path:
    """Write a secret file atomically (as provisioning would), so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(value + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)
    return path


def auth_conf(passwd: Path, acl: Path | None = None) -> str:
    # per_listener_settings stays false (as in hallfleet.conf): these apply to every listener, and the
    # later "allow_anonymous false" overrides LocalMosquitto's "allow_anonymous true".
    lines = ["allow_anonymous false", f"password_file {passwd}"]
    if acl is not None:
        lines.append(f"acl_file {acl}")
    return "\n".join(lines) + "\n"


def tls_listener_conf(port: int, ca: Ca, cert: Path, key: Path) -> str:
    return f"listener {port} {HOST}\ncafile {ca.cert}\ncertfile {cert}\nkeyfile {key}\n"


@asynccontextmanager
async def running_consumer(
    port: int,
    url: str,
    *,
    ca: Ca | None = None,
    username: str | None = None,
    passwd: Path | None = None,
) -> AsyncIterator[RunningConsumer]:
    """An in-process consumer like conftest's, with credentials and TLS."""
    store = await Store.open(url)
    mqtt_cfg = MqttConfig(
        host=HOST,
        port=port,
        username=username,
        password_file=passwd,
        tls=TlsConfig(ca_file=ca.cert) if ca else None,
        backoff_initial_s=BACKOFF_INITIAL_S,
        backoff_max_s=BACKOFF_MAX_S,
    )
    cfg = ConsumerConfig(instance="sec", mqtt=mqtt_cfg, store=StoreConfig(url=url), ingest=IngestConfig(sweep_s=0.1))
    c = Consumer(cfg, store)
    task = asyncio.create_task(c.run())
    try:
        await asyncio.wait_for(c.ready.wait(), 10)
        yield RunningConsumer(c, store, task)
    finally:
        c.stop()
        await asyncio.wait_for(task, 10)
        await store.close()


def agent(
    workdir: Path,
    port: int,
    site: str,
    device: str,
    *,
    events_n: int,
    rate: float = 50.0,
    ca: Ca | None = None,
    passwd: Path | None = None,
) -> Proc:
    """An agent process; its password comes from ``passwd`` or, without it, $CREDENTIALS_DIRECTORY."""
    name = f"agent-{site}-{device}"
    mqtt_section: dict[str, object] = {
        "host": HOST,
        "port": port,
        "backoff_initial_s": BACKOFF_INITIAL_S,
        "backoff_max_s": BACKOFF_MAX_S,
    }
    if passwd is not None:
        mqtt_section["password_file"] = str(passwd)
    sections: dict[str, dict[str, object]] = {"mqtt": mqtt_section}
    if ca is not None:
        sections["mqtt.tls"] = {"ca_file": str(ca.cert)}
    sections["outbox"] = {"path": str(outbox_path(workdir, site, device))}
    sections["sim"] = {"events": events_n, "rate_per_s": rate}
    # A long heartbeat: no health events, so the seqs are exactly the sim events 0..n-1.
    cfg = write_toml(
        workdir / f"{name}.toml",
        {"site": site, "device": device, "role": "sim", "heartbeat_s": 600},
        sections,
    )
    return Proc(name, ["agent", "--config", str(cfg)], workdir)


def outbox_path(workdir: Path, site: str, device: str) -> Path:
    return workdir / f"agent-{site}-{device}.db"


async def all_stored(store: Store, site: str, device: str, n: int) -> bool:
    return await stored_seqs(store, site, device) == list(range(n))


async def assert_exactly_once(store: Store, workdir: Path, site: str, device: str, n: int) -> None:
    seqs = await stored_seqs(store, site, device)
    assert len(seqs) == len(set(seqs)), f"an event was stored twice: {seqs}"
    assert seqs == list(range(n)), f"the store misses seqs: {seqs}"
    assert outbox_state(outbox_path(workdir, site, device))["next_seq"] == n


def refusals(log: str) -> int:
    return sum(1 for line in log.splitlines() if "refused the connection" in line)


def reconnect_delays(log: str) -> list[float]:
    return [float(m) for m in re.findall(r"reconnecting in ([0-9.]+) s", log)]


def punch(site: str, device: str) -> bytes:
    env = Envelope(
        v=1,
        id=uuid7(),
        site=site,
        device=device,
        type="attendance.punch",
        seq=0,
        boot_id="forger",
        ts=datetime.now(UTC),
        clock_synced=True,
        data={"staff_id": "S0001", "method": "face"},
    )
    return env.model_dump_json().encode()


def publish_as(port: int, user: str, password: str, topic: str, payload: bytes) -> str:
    """Log in as ``user`` (client id = username, as devices do), publish at QoS 1 and return the PUBACK
    reason the broker gave."""
    reasons: dict[int, str] = {}
    acked = threading.Event()
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)

    def on_publish(_c: object, _u: object, mid: int, rc: object, _p: object) -> None:
        reasons[mid] = str(rc)
        acked.set()

    c.on_publish = on_publish
    c.connect(HOST, port)
    c.loop_start()
    try:
        info = c.publish(topic, payload, qos=1)
        assert acked.wait(10), f"no PUBACK for {topic}"
        return reasons[info.mid]
    finally:
        c.disconnect()
        c.loop_stop()


# -- 1. TLS --------------------------------------------------------------------------------------------
@pytest.fixture
def tls_broker(tmp_path: Path, brokers: list[LocalMosquitto]) -> tuple[LocalMosquitto, int, Ca]:
    """A broker with the plain listener of LocalMosquitto plus a TLS listener whose certificate (for
    127.0.0.1 and localhost) the returned CA signed."""
    ca = make_ca(tmp_path / "tls", "hall-ca")
    server = make_server_cert(ca, tmp_path / "tls")
    tls_port = free_port()
    broker = start_broker(tmp_path / "mq", brokers, tls_listener_conf(tls_port, ca, server.cert, server.key))
    return broker, tls_port, ca


async def test_agent_trusting_the_hall_ca_delivers_over_tls(
    tls_broker: tuple[LocalMosquitto, int, Ca], sqlite_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    _broker, tls_port, ca = tls_broker
    n = 10
    async with running_consumer(tls_port, sqlite_url, ca=ca) as c:
        a = agent(tmp_path, tls_port, "qp", "tls-ok", events_n=n, ca=ca)
        procs.append(a.start())
        await wait_for(lambda: all_stored(c.store, "qp", "tls-ok", n), 20, "the TLS agent's events")
        await wait_for(lambda: outbox_state(outbox_path(tmp_path, "qp", "tls-ok"))["depth"] == 0, 10, "drain")
        await assert_exactly_once(c.store, tmp_path, "qp", "tls-ok", n)
    assert "connected to MQTT" in a.log()


async def test_agent_trusting_another_ca_never_connects_keeps_retrying_and_logs_the_verify_failure(
    tls_broker: tuple[LocalMosquitto, int, Ca], sqlite_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    broker, tls_port, ca = tls_broker
    rogue_ca = make_ca(tmp_path / "other", "someone-elses-ca")
    async with running_consumer(broker.port, sqlite_url) as c:  # plain TCP, on the loopback listener
        fooled = agent(tmp_path, tls_port, "qp", "tls-bad", events_n=5, ca=rogue_ca)
        control = agent(tmp_path, tls_port, "qp", "tls-ok", events_n=5, ca=ca)
        procs += [fooled.start(), control.start()]
        # The control proves the broker, the consumer and the TLS listener work meanwhile.
        await wait_for(lambda: all_stored(c.store, "qp", "tls-ok", 5), 20, "the control agent's events")
        await wait_for(lambda: "certificate verify failed" in fooled.log().lower(), 10, "the verify failure")
        await asyncio.sleep(2.0)
        assert await stored_seqs(c.store, "qp", "tls-bad") == [], "an agent that cannot verify the broker sent"
        assert outbox_state(outbox_path(tmp_path, "qp", "tls-bad"))["depth"] == 5, "events must be kept"
    log = fooled.log()
    assert fooled.alive, f"the agent must survive a TLS failure and keep retrying:\n{log[-2000:]}"
    assert "connected to MQTT" not in log
    assert len(re.findall("certificate verify failed", log, re.IGNORECASE)) >= 3, f"no retries:\n{log[-2000:]}"
    assert "Traceback" not in log, f"a TLS failure is expected, not a crash:\n{log[-3000:]}"


# -- 2. Username and password --------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["password_file", "credentials_directory"])
async def test_agent_with_the_right_password_delivers(
    source: str,
    sqlite_url: str,
    tmp_path: Path,
    procs: list[Proc],
    brokers: list[LocalMosquitto],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    n = 10
    passwd = password_file(tmp_path / "passwd", {CONSUMER_USER: CONSUMER_PASSWORD, "qp.att-1": "s3cret!"})
    broker = start_broker(tmp_path / "mq", brokers, auth_conf(passwd))
    consumer_secret = secret(tmp_path / "consumer-password", CONSUMER_PASSWORD)
    async with running_consumer(broker.port, sqlite_url, username=CONSUMER_USER, passwd=consumer_secret) as c:
        if source == "password_file":
            a = agent(tmp_path, broker.port, "qp", "att-1", events_n=n, passwd=secret(tmp_path / "pw", "s3cret!"))
            procs.append(a.start())
        else:
            # What systemd's LoadCredential=mqtt-password:... gives the service: a directory in the env.
            creds = tmp_path / "credentials"
            secret(creds / "mqtt-password", "s3cret!")
            a = agent(tmp_path, broker.port, "qp", "att-1", events_n=n)
            monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
            procs.append(a.start())
            monkeypatch.delenv("CREDENTIALS_DIRECTORY")
        await wait_for(lambda: all_stored(c.store, "qp", "att-1", n), 20, "the agent's events")
        await assert_exactly_once(c.store, tmp_path, "qp", "att-1", n)
    log = a.log()
    assert not any(r in log for r in REFUSED), f"the right password was refused:\n{log[-2000:]}"


async def test_wrong_password_is_refused_agent_backs_off_and_delivers_everything_once_the_file_is_fixed(
    sqlite_url: str, tmp_path: Path, procs: list[Proc], brokers: list[LocalMosquitto]
) -> None:
    n = 20
    passwd = password_file(tmp_path / "passwd", {CONSUMER_USER: CONSUMER_PASSWORD, "qp.att-1": "right"})
    broker = start_broker(tmp_path / "mq", brokers, auth_conf(passwd))
    consumer_secret = secret(tmp_path / "consumer-password", CONSUMER_PASSWORD)
    agent_secret = secret(tmp_path / "agent-password", "wrong")
    async with running_consumer(broker.port, sqlite_url, username=CONSUMER_USER, passwd=consumer_secret) as c:
        a = agent(tmp_path, broker.port, "qp", "att-1", events_n=n, passwd=agent_secret)
        procs.append(a.start())
        # Refused again and again while the device keeps taking events into its outbox.
        await wait_for(lambda: refusals(a.log()) >= 6, 20, "six refused connection attempts")
        await wait_for(lambda: outbox_state(outbox_path(tmp_path, "qp", "att-1"))["sim"] >= n, 10, "n events")
        log = a.log()
        assert a.alive, f"a refused login must not end the agent:\n{log[-2000:]}"
        assert any(r in log for r in REFUSED), f"the log must say why the broker refused:\n{log[-2000:]}"
        assert await stored_seqs(c.store, "qp", "att-1") == []

        # Backoff: the delays grow from backoff_initial_s and never exceed backoff_max_s.
        delays = reconnect_delays(log)
        assert len(delays) >= 5, log[-2000:]
        assert max(delays) <= BACKOFF_MAX_S, delays
        assert min(delays[4:]) >= BACKOFF_MAX_S / 2, f"no exponential backoff: {delays}"
        attempts_before = refusals(log)
        await asyncio.sleep(2.0)
        assert refusals(a.log()) - attempts_before <= 5, "retrying faster than the backoff allows"

        # Provisioning fixes the secret: the next attempt reads it again and gets in.
        secret(agent_secret, "right")
        await wait_for(lambda: all_stored(c.store, "qp", "att-1", n), 20, "every event after the fix")
        await wait_for(lambda: outbox_state(outbox_path(tmp_path, "qp", "att-1"))["depth"] == 0, 10, "drain")
        await assert_exactly_once(c.store, tmp_path, "qp", "att-1", n)
    assert "connected to MQTT" in a.log()


# -- 3. ACL --------------------------------------------------------------------------------------------
# hallfleet.acl.example, loaded as it is: users hallfleet-consumer, site01.kiosk03 and site01.pad07.
DEVICE_PASSWORDS = {"site01.kiosk03": "kiosk-pw", "site01.pad07": "pad-pw"}


@pytest.fixture
def acl_broker(tmp_path: Path, brokers: list[LocalMosquitto]) -> LocalMosquitto:
    passwd = password_file(tmp_path / "passwd", {CONSUMER_USER: CONSUMER_PASSWORD, **DEVICE_PASSWORDS})
    return start_broker(tmp_path / "mq", brokers, auth_conf(passwd, ACL_EXAMPLE))


async def test_device_cannot_publish_an_event_on_another_devices_topic_but_can_on_its_own(
    acl_broker: LocalMosquitto, sqlite_url: str, tmp_path: Path
) -> None:
    consumer_secret = secret(tmp_path / "consumer-password", CONSUMER_PASSWORD)
    async with running_consumer(acl_broker.port, sqlite_url, username=CONSUMER_USER, passwd=consumer_secret) as c:
        # pad07 forges a punch that claims to be kiosk03's, on kiosk03's topic: envelope and topic agree,
        # so only the broker's ACL stands in the way.
        forged = await asyncio.to_thread(
            publish_as,
            acl_broker.port,
            "site01.pad07",
            DEVICE_PASSWORDS["site01.pad07"],
            topics.event("site01", "kiosk03", "attendance.punch"),
            punch("site01", "kiosk03"),
        )
        assert forged == "Not authorized", f"the broker accepted a publish on another device's topic: {forged}"
        own = await asyncio.to_thread(
            publish_as,
            acl_broker.port,
            "site01.pad07",
            DEVICE_PASSWORDS["site01.pad07"],
            topics.event("site01", "pad07", "attendance.punch"),
            punch("site01", "pad07"),
        )
        assert own == "Success", own
        # Same publisher, same subscriber, QoS 1: had the forged one been routed, it would be here first.
        await wait_for(lambda: all_stored(c.store, "site01", "pad07", 1), 10, "the device's own event")
        await asyncio.sleep(0.5)
        assert await stored_seqs(c.store, "site01", "kiosk03") == [], "a forged event was stored"
        assert await c.store.scalar(sa.select(sa.func.count()).select_from(dead_letters)) == 0
        assert c.consumer.counters.received == 1, "the consumer saw the forged event"


async def test_agent_under_the_example_acl_delivers_and_receives_the_store_confirmations(
    acl_broker: LocalMosquitto, sqlite_url: str, tmp_path: Path, procs: list[Proc]
) -> None:
    n = 5
    consumer_secret = secret(tmp_path / "consumer-password", CONSUMER_PASSWORD)
    async with running_consumer(acl_broker.port, sqlite_url, username=CONSUMER_USER, passwd=consumer_secret) as c:
        a = agent(
            tmp_path,
            acl_broker.port,
            "site01",
            "kiosk03",
            events_n=n,
            passwd=secret(tmp_path / "kiosk-pw", DEVICE_PASSWORDS["site01.kiosk03"]),
        )
        procs.append(a.start())
        await wait_for(lambda: all_stored(c.store, "site01", "kiosk03", n), 20, "the agent's events")
        # The end-to-end ack: the consumer publishes .../stored, the agent then forgets the events. Without
        # it the agent re-sends everything every confirm_timeout_s and its outbox never shrinks.
        await wait_for(
            lambda: outbox_state(outbox_path(tmp_path, "site01", "kiosk03"))["depth"] == 0,
            5,
            "the store's confirmations on hall/v1/site01/kiosk03/stored to reach the agent (the ACL must let "
            "the consumer write and the device read .../stored)",
        )
        await assert_exactly_once(c.store, tmp_path, "site01", "kiosk03", n)
    assert "Traceback" not in a.log()
