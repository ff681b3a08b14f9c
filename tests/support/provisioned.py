"""Brokers started on the files `hallfleet provision broker` renders, and MQTT clients that log in as a device,
a bridge, the consumer or the API would.

ProvisionedBroker composes a LocalMosquitto (process, loopback listener, persistence dir, log, ``user root``)
with ``include_dir`` on the generated directory, so Mosquitto itself reads the generated hallfleet.conf,
password file, ACL, certificates and CRL. The generated conf leaves persistence_location and log_dest to
LocalMosquitto (Mosquitto refuses a second value for them); everything else is as rendered.
"""

from __future__ import annotations

import os
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from broker.mosquitto.local import HOST, LocalMosquitto, free_port
from provisioning.brokerconf import Layout
from provisioning.credentials import write_file
from provisioning.operations import Secrets

WAIT_S = 10.0


def loopback_layout(conf_dir: Path) -> Layout:
    """Production layout on loopback with free ports; persistence and log come from LocalMosquitto."""
    return Layout(
        conf_dir=conf_dir,
        persistence_dir=None,
        log_file=None,
        bind=HOST,
        tls_port=free_port(),
        mtls_port=free_port(),
        local_port=None,
    )


class ProvisionedBroker:
    """A private Mosquitto whose security configuration is exactly the generated one."""

    def __init__(self, workdir: Path, layout: Layout) -> None:
        self.layout = layout
        self.pid_file = workdir / "mosquitto.pid"
        self.local = LocalMosquitto(workdir, extra_conf=f"include_dir {layout.conf_dir}\npid_file {self.pid_file}\n")

    @property
    def local_port(self) -> int:
        """The loopback plain listener: where the centre's consumer and API connect (with a password)."""
        return self.local.port

    def start(self) -> ProvisionedBroker:
        self.local.start()
        return self

    def stop(self) -> None:
        self.local.stop()

    def restart(self) -> None:
        self.local.restart()

    def reload(self) -> None:
        """What `systemctl reload mosquitto` does: SIGHUP, which re-reads the password file and the ACL."""
        os.kill(int(self.pid_file.read_text().strip()), signal.SIGHUP)
        time.sleep(0.5)  # Mosquitto handles the signal in its main loop, within its 100 ms-ish tick

    def log(self) -> str:
        return self.local.log_path.read_text(errors="replace") if self.local.log_path.exists() else ""


@dataclass(frozen=True, slots=True)
class Login:
    """How a client logs in: a username with a password, or a client certificate; TLS trusting ``ca``."""

    username: str | None
    password: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    client_id: str | None = None


def device_login(secrets: Secrets, directory: Path, *, ca: Path | None = None) -> Login:
    """Write a device's credentials to files, as its bundle would, and log in with them."""
    ca_path = write_file(directory / "ca.crt", secrets.ca_pem, 0o644)
    if secrets.cert is None:
        return Login(secrets.username, secrets.password, ca=ca or ca_path)
    cert = write_file(directory / f"{secrets.username}.crt", secrets.cert.cert_pem, 0o644)
    key = write_file(directory / f"{secrets.username}.key", secrets.cert.key_pem, 0o600)
    return Login(None, None, ca=ca or ca_path, cert=cert, key=key, client_id=secrets.username)


def _client(login: Login, client_id: str | None = None) -> mqtt.Client:
    cid = client_id or login.client_id or login.username or ""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    if login.username is not None:
        c.username_pw_set(login.username, login.password)
    if login.ca is not None:
        c.tls_set(
            ca_certs=str(login.ca),
            certfile=str(login.cert) if login.cert else None,
            keyfile=str(login.key) if login.key else None,
        )
    return c


def try_connect(port: int, login: Login) -> str:
    """Connect once and report the outcome: "Success", the CONNACK's refusal, or the TLS/socket failure."""
    c = _client(login)
    outcome: list[str] = []
    c.on_connect = lambda _c, _u, _f, rc, _p: outcome.append(str(rc))
    try:
        c.connect(HOST, port, keepalive=10)
        deadline = time.monotonic() + WAIT_S
        while not outcome and time.monotonic() < deadline:
            rc = c.loop(timeout=0.1)
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return f"connection lost: {mqtt.error_string(rc)}"
    except (ssl.SSLError, OSError) as exc:
        return f"refused in TLS/TCP: {exc}"
    finally:
        c.disconnect()
    return outcome[0] if outcome else "no CONNACK"


class Session:
    """A connected client on paho's thread; collects what it receives and the PUBACK reasons it gets."""

    def __init__(self, port: int, login: Login, *, client_id: str | None = None, persistent: bool = False) -> None:
        self.client = _client(login, client_id)
        self.received: list[mqtt.MQTTMessage] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subacks: dict[int, threading.Event] = {}
        self._pubacks: dict[int, str] = {}
        self.connect_reason = ""
        self.disconnects = 0
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish
        self.client.on_disconnect = self._on_disconnect
        self.client.reconnect_delay_set(min_delay=1, max_delay=1)
        props = None
        if persistent:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect(HOST, port, keepalive=10, clean_start=not persistent, properties=props)
        self.client.loop_start()
        if not self._connected.wait(WAIT_S) or self.connect_reason != "Success":
            self.close()
            raise AssertionError(f"{login.username or login.client_id} could not connect: {self.connect_reason!r}")

    def _on_connect(self, _c: object, _u: object, _f: object, rc: object, _p: object) -> None:
        self.connect_reason = str(rc)
        self._connected.set()

    def _on_message(self, _c: object, _u: object, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.received.append(msg)

    def _on_subscribe(self, _c: object, _u: object, mid: int, _rc: object, _p: object) -> None:
        self._subacks.setdefault(mid, threading.Event()).set()

    def _on_publish(self, _c: object, _u: object, mid: int, rc: object, _p: object) -> None:
        with self._lock:
            self._pubacks[mid] = str(rc)

    def _on_disconnect(self, _c: object, _u: object, _f: object, _rc: object, _p: object) -> None:
        self.disconnects += 1

    def subscribe(self, *filters: str) -> Session:
        for f in filters:
            _, mid = self.client.subscribe(f, qos=1)
            assert mid is not None, f"SUBSCRIBE {f} was not sent"
            assert self._subacks.setdefault(mid, threading.Event()).wait(WAIT_S), f"no SUBACK for {f}"
        return self

    def publish(self, topic: str, payload: bytes = b"x") -> str:
        """Publish at QoS 1 and return the PUBACK's reason (Mosquitto answers "Not authorized" to an ACL denial)."""
        info = self.client.publish(topic, payload, qos=1)
        wait_until(lambda: info.mid in self._pubacks, f"PUBACK for {topic}")
        with self._lock:
            return self._pubacks[info.mid]

    def topics(self) -> list[str]:
        with self._lock:
            return [m.topic for m in self.received]

    def payloads(self, topic: str) -> list[bytes]:
        with self._lock:
            return [bytes(m.payload) for m in self.received if m.topic == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextmanager
def session(port: int, login: Login, *, client_id: str | None = None, persistent: bool = False) -> Iterator[Session]:
    s = Session(port, login, client_id=client_id, persistent=persistent)
    try:
        yield s
    finally:
        s.close()


def wait_until(predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
