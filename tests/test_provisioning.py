"""Provisioning against real Mosquitto: every broker here runs on the files `hallfleet provision broker` renders
(password file, ACL, CA, server certificate, CRL, conf), and devices log in with the credentials their bundle
carries. The bundle itself is checked by bash, systemd-analyze, the agent's config loader and a real agent."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import get_args

import pytest
from cryptography import x509

from agent.config import AgentConfig
from hallfleet.cli import main as hallfleet_main
from protocol import topics
from provisioning.bundle import CREDENTIALS_RUN, STATE_DIR, UNIT, BundleOptions, write_bundle
from provisioning.credentials import SiteCa, hash_password, verify_password, write_file
from provisioning.operations import DeviceRequest, HallOptions, Provisioner, Secrets
from provisioning.registry import API_USER, CONSUMER_USER, AuthKind, RegistryError, Role
from runtime.settings import load_settings
from tests.support.procs import Proc
from tests.support.provisioned import (
    Login,
    ProvisionedBroker,
    device_login,
    loopback_layout,
    session,
    try_connect,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)

IT = "wang.li"  # the approving IT section member
HOSTS = ["127.0.0.1", "localhost"]
SITE = "qingpu"
QUIET_S = 0.5  # after the control message arrived, how long a forged one gets to show up anyway
ACCEPTED = {"Success", "No matching subscribers"}  # MQTT 5 PUBACK reasons of an allowed publish


# -- fixtures and helpers ------------------------------------------------------------------------------
@pytest.fixture
def prov(tmp_path: Path) -> Provisioner:
    return Provisioner(tmp_path / "provisioning")


@pytest.fixture
def brokers() -> Iterator[list[ProvisionedBroker]]:
    started: list[ProvisionedBroker] = []
    yield started
    for b in reversed(started):
        b.stop()


def add(prov: Provisioner, device: str, auth: AuthKind = "password", role: Role = "none", site: str = SITE) -> Secrets:
    _, secrets = prov.provision_device(DeviceRequest(site, device, role, auth, IT, "127.0.0.1"))
    return secrets


def start_centre(prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]) -> ProvisionedBroker:
    layout = loopback_layout(tmp_path / "centre-conf")
    prov.render_broker(layout.conf_dir, layout, HOSTS, approved_by=IT)
    broker = ProvisionedBroker(tmp_path / "centre", layout)
    brokers.append(broker.start())
    return broker


def rerender(prov: Provisioner, broker: ProvisionedBroker) -> None:
    """What IT does after a change: render the files again and reload the broker."""
    prov.render_broker(broker.layout.conf_dir, broker.layout, HOSTS)
    broker.reload()


def service(prov: Provisioner, user: str) -> Login:
    """The consumer or the API, on the centre's loopback listener (as in production)."""
    return Login(user, prov.stored_password(user))


def login(secrets: Secrets, tmp_path: Path) -> Login:
    return device_login(secrets, tmp_path / "devices" / secrets.username)


def port(broker: ProvisionedBroker, secrets: Secrets) -> int:
    return broker.layout.mtls_port if secrets.cert else broker.layout.tls_port


def assert_refused(outcome: str, who: str) -> None:
    assert outcome != "Success", f"{who} was let in"


# -- passwords: Mosquitto's own format -------------------------------------------------------------------
def test_password_hash_has_mosquittos_format_and_verifies_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    passwd = tmp_path / "passwd"
    subprocess.run([tool, "-b", "-c", str(passwd), "qingpu.att-1", "s3cret-from-the-tool"], check=True, timeout=10)
    theirs = passwd.read_text().strip().split(":", 1)[1]
    assert verify_password("s3cret-from-the-tool", theirs)
    assert not verify_password("s3cret-from-the-tooL", theirs)

    ours = hash_password("pw")
    m = re.fullmatch(r"\$7\$101\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)", ours)
    assert m, ours
    assert len(base64.b64decode(m[1])) == 12 and len(base64.b64decode(m[2])) == 64
    assert ours.count("$") == theirs.count("$") and ours.split("$")[2] == theirs.split("$")[2]


def test_mosquitto_accepts_a_password_hashed_by_provisioning_and_refuses_a_wrong_one(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    a = add(prov, "att-1")
    centre = start_centre(prov, tmp_path, brokers)
    assert "qingpu.att-1:$7$101$" in (centre.layout.conf_dir / "hallfleet.passwd").read_text()
    good = login(a, tmp_path)
    assert try_connect(centre.layout.tls_port, good) == "Success"
    wrong = Login(good.username, f"{good.password}x", ca=good.ca)
    assert_refused(try_connect(centre.layout.tls_port, wrong), "a wrong password")


# -- who may connect ---------------------------------------------------------------------------------------
def test_unauthenticated_clients_are_refused_on_every_listener(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    a = add(prov, "att-1")
    centre = start_centre(prov, tmp_path, brokers)
    ca = login(a, tmp_path).ca
    assert try_connect(centre.layout.tls_port, login(a, tmp_path)) == "Success"  # the control
    assert_refused(try_connect(centre.layout.tls_port, Login(None, ca=ca)), "an anonymous TLS client")
    assert_refused(try_connect(centre.layout.mtls_port, Login(None, ca=ca)), "a TLS client without a certificate")
    assert_refused(try_connect(centre.local_port, Login(None)), "an anonymous client on the loopback listener")
    assert_refused(try_connect(centre.layout.tls_port, Login(a.username, a.password)), "plain MQTT on the TLS port")
    assert_refused(try_connect(centre.layout.tls_port, Login("qingpu.nobody", "guess", ca=ca)), "an unknown user")


def test_tls_with_another_ca_is_refused_both_ways(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    a, c = add(prov, "att-1"), add(prov, "att-2", "cert")
    centre = start_centre(prov, tmp_path, brokers)
    rogue = SiteCa.create("someone else's CA", prov.now())
    rogue_ca = write_file(tmp_path / "rogue" / "ca.crt", rogue.cert_pem, 0o644)
    # The device does not trust a broker whose certificate another CA signed (a fake broker).
    good = login(a, tmp_path)
    assert try_connect(centre.layout.tls_port, good) == "Success"
    outcome = try_connect(centre.layout.tls_port, Login(good.username, good.password, ca=rogue_ca))
    assert "certificate verify failed" in outcome, outcome
    # The broker does not accept a certificate with a real device's name from another CA (impersonation).
    assert try_connect(centre.layout.mtls_port, login(c, tmp_path)) == "Success"
    forged = rogue.issue_client(c.username, prov.now())
    assert_refused(
        try_connect(centre.layout.mtls_port, device_login(Secrets(c.username, c.ca_pem, cert=forged), tmp_path / "f")),
        "a certificate for qingpu.att-2 signed by another CA",
    )


# -- the ACL ----------------------------------------------------------------------------------------------
def test_device_cannot_publish_as_another_device(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    a, b = add(prov, "att-1"), add(prov, "att-2", "cert")
    centre = start_centre(prov, tmp_path, brokers)
    with (
        session(centre.local_port, service(prov, CONSUMER_USER)) as consumer,
        session(centre.layout.tls_port, login(a, tmp_path)) as dev_a,
    ):
        consumer.subscribe("hall/v1/#")
        forged = [
            topics.event(SITE, "att-2", "attendance.punch"),
            topics.status(SITE, "att-2"),
            topics.health(SITE, "att-2"),
            topics.cmd_ack(SITE, "att-2"),
            topics.stored(SITE, "att-1"),  # not even its own confirmations
            topics.cfg(SITE, "att-1"),
            f"hall/v1/{SITE}/alerts",
        ]
        assert [dev_a.publish(t) for t in forged] == ["Not authorized"] * len(forged)
        own = topics.event(SITE, "att-1", "attendance.punch")
        assert dev_a.publish(own) in ACCEPTED
        wait_until(lambda: own in consumer.topics(), "the device's own event")
        time.sleep(QUIET_S)
        assert consumer.topics() == [own], "a forged publish was delivered"
    # The certificate device is held to its own prefix the same way.
    with session(centre.layout.mtls_port, login(b, tmp_path)) as dev_b:
        assert dev_b.publish(topics.event(SITE, "att-1", "attendance.punch")) == "Not authorized"
        assert dev_b.publish(topics.event(SITE, "att-2", "attendance.punch")) in ACCEPTED


def test_only_the_centre_writes_a_devices_commands_and_only_that_device_reads_them(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    a, b = add(prov, "att-1"), add(prov, "att-2")
    centre = start_centre(prov, tmp_path, brokers)
    cmd_b = topics.cmd(SITE, "att-2")
    with (
        session(centre.layout.tls_port, login(a, tmp_path)) as dev_a,
        session(centre.layout.tls_port, login(b, tmp_path)) as dev_b,
        session(centre.local_port, service(prov, API_USER)) as api,
        session(centre.local_port, service(prov, CONSUMER_USER)) as consumer,
    ):
        dev_a.subscribe(cmd_b, topics.cfg(SITE, "att-2"), "hall/v1/#")  # Mosquitto grants it, then filters
        dev_b.subscribe(cmd_b, topics.cfg(SITE, "att-2"))
        assert dev_a.publish(cmd_b, b"forged by att-1") == "Not authorized"
        assert dev_b.publish(cmd_b, b"forged by att-2 itself") == "Not authorized"
        assert consumer.publish(topics.cfg(SITE, "att-2"), b"consumer config") == "Not authorized"
        assert api.publish(cmd_b, b"from the API") == "Success"
        assert api.publish(topics.cfg(SITE, "att-2"), b"config from the API") == "Success"
        assert consumer.publish(cmd_b, b"remediation") == "Success"
        wait_until(lambda: len(dev_b.received) == 3, "the centre's commands and config")
        time.sleep(QUIET_S)
        assert dev_b.payloads(cmd_b) == [b"from the API", b"remediation"]
        assert dev_b.payloads(topics.cfg(SITE, "att-2")) == [b"config from the API"]
        assert dev_a.received == [], f"att-1 read att-2's traffic: {dev_a.topics()}"


def test_a_device_cannot_take_over_another_devices_session_with_its_client_id(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    a, b = add(prov, "att-1"), add(prov, "att-2")
    centre = start_centre(prov, tmp_path, brokers)
    with (
        session(centre.layout.tls_port, login(b, tmp_path)) as victim,
        session(centre.local_port, service(prov, API_USER)) as api,
    ):
        victim.subscribe(topics.cmd(SITE, "att-2"))
        # att-1 logs in with att-2's client id: without use_username_as_clientid the broker would drop att-2.
        with session(centre.layout.tls_port, login(a, tmp_path), client_id=b.username):
            time.sleep(QUIET_S)
            assert victim.disconnects == 0, "the victim's session was taken over"
            assert api.publish(topics.cmd(SITE, "att-2"), b"still yours") == "Success"
            wait_until(lambda: victim.payloads(topics.cmd(SITE, "att-2")) == [b"still yours"], "the command")


# -- revocation and rotation ------------------------------------------------------------------------------
def test_revoked_password_device_is_refused_and_dropped_after_a_reload(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    a, b = add(prov, "att-1"), add(prov, "att-2")
    centre = start_centre(prov, tmp_path, brokers)
    with session(centre.layout.tls_port, login(a, tmp_path)) as live:
        prov.revoke(a.username, "zhao.min", "stolen from the entrance")
        rerender(prov, centre)
        wait_until(lambda: live.disconnects >= 1, "the revoked device's connection to be dropped")
    assert_refused(try_connect(centre.layout.tls_port, login(a, tmp_path)), "a revoked device")
    assert try_connect(centre.layout.tls_port, login(b, tmp_path)) == "Success", "the reload locked out att-2"
    text = (centre.layout.conf_dir / "hallfleet.passwd").read_text() + (
        centre.layout.conf_dir / "hallfleet.acl"
    ).read_text()
    assert "att-1" not in text
    entry = prov.registry.load().require(a.username)
    assert (entry.state, entry.revoked_by, entry.revoke_reason) == ("revoked", "zhao.min", "stolen from the entrance")


def test_revoke_apply_renders_every_broker_again_and_reloads_so_the_device_is_out_at_once(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = add(prov, "att-1"), add(prov, "att-2")
    centre = start_centre(prov, tmp_path, brokers)
    pid = centre.pid_file.read_text().strip()
    revoke = ["provision", "revoke", f"{SITE}/att-1", "--dir", str(prov.directory), "--by", "zhao.min"]
    with session(centre.layout.tls_port, login(a, tmp_path)) as live:
        # A reload that fails is reported, with the files already rendered and the step left to IT.
        code = hallfleet_main([*revoke, "--reason", "stolen", "--apply", "--reload-cmd", "false"])
        assert code == 1
        assert "`false` failed" in capsys.readouterr().err
        assert "qingpu.att-1" not in (centre.layout.conf_dir / "hallfleet.acl").read_text()
        assert live.disconnects == 0, "nothing reloaded, yet the connection dropped"
        # The next change applied with a working reload (kill -HUP is what `systemctl reload mosquitto` sends)
        # takes both out: the revoked device, and att-2's password replaced by the rotation.
        rotate = ["provision", "rotate", f"{SITE}/att-2", "--dir", str(prov.directory), "--out", str(tmp_path / "b")]
        rotate += ["--index-url", "https://pkg.centre.example/simple", "--by", "zhao.min"]
        assert hallfleet_main([*rotate, "--apply", "--reload-cmd", f"kill -HUP {pid}"]) == 0
        out = capsys.readouterr().out
        assert f"rendered again: {centre.layout.conf_dir.resolve()}" in out and "reloaded: kill -HUP" in out
        wait_until(lambda: live.disconnects >= 1, "the revoked device's connection to be dropped")
    assert_refused(try_connect(centre.layout.tls_port, login(a, tmp_path)), "a revoked device")
    assert_refused(try_connect(centre.layout.tls_port, login(b, tmp_path)), "att-2's rotated-out password")


def test_apply_without_a_rendered_broker_says_what_to_do_first(
    prov: Provisioner, capsys: pytest.CaptureFixture[str]
) -> None:
    add(prov, "att-1")
    revoke = ["provision", "revoke", f"{SITE}/att-1", "--dir", str(prov.directory), "--by", "zhao.min"]
    assert hallfleet_main([*revoke, "--reason", "lost", "--apply", "--reload-cmd", "true"]) == 1
    assert "no broker directory was rendered yet" in capsys.readouterr().err
    assert prov.registry.load().require(f"{SITE}.att-1").state == "revoked", "the revoke itself must stand"


def test_revoked_certificate_is_refused_by_the_crl_and_its_live_connection_loses_every_topic(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    c, d = add(prov, "att-1", "cert"), add(prov, "att-2", "cert")
    centre = start_centre(prov, tmp_path, brokers)
    with session(centre.layout.mtls_port, login(c, tmp_path)) as live:
        assert live.publish(topics.event(SITE, "att-1", "attendance.punch")) in ACCEPTED
        prov.revoke(c.username, "zhao.min", "lost", compromised=True)
        rerender(prov, centre)
        outcome = try_connect(centre.layout.mtls_port, login(c, tmp_path))
        assert_refused(outcome, "a revoked certificate")
        wait_until(lambda: "certificate verify failed" in centre.log(), "the broker to log the CRL's refusal")
        assert try_connect(centre.layout.mtls_port, login(d, tmp_path)) == "Success", "the CRL locked out att-2"
        # Mosquitto 2.0.11 keeps a TLS connection made before the reload, but the ACL no longer grants it anything.
        muted = (
            live.disconnects > 0 or live.publish(topics.event(SITE, "att-1", "attendance.punch")) == "Not authorized"
        )
        assert muted, "a revoked certificate's open connection may still publish"
    crl = x509.load_pem_x509_crl((centre.layout.conf_dir / "crl.pem").read_bytes())
    entry = crl.get_revoked_certificate_by_serial_number(c.cert.serial if c.cert else 0)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise


def test_rotation_replaces_the_credentials_and_the_old_ones_stop_working(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    old_pw, old_cert = add(prov, "att-1"), add(prov, "att-2", "cert")
    centre = start_centre(prov, tmp_path, brokers)
    _, new_pw = prov.rotate(old_pw.username, "zhao.min")
    _, new_cert = prov.rotate(old_cert.username, "zhao.min")
    rerender(prov, centre)
    assert_refused(try_connect(centre.layout.tls_port, login(old_pw, tmp_path / "old")), "the old password")
    assert_refused(try_connect(centre.layout.mtls_port, login(old_cert, tmp_path / "old")), "the old certificate")
    assert try_connect(centre.layout.tls_port, login(new_pw, tmp_path / "new")) == "Success"
    assert try_connect(centre.layout.mtls_port, login(new_cert, tmp_path / "new")) == "Success"
    reasons = {r.reason for r in prov.registry.load().revocations}
    assert reasons == {"superseded"}


def test_provisioning_needs_a_named_approver_and_refuses_a_second_active_device_with_the_same_id(
    prov: Provisioner,
) -> None:
    for who in ("", "root", "Admin"):
        with pytest.raises(RegistryError, match="approved-by"):
            prov.provision_device(DeviceRequest(SITE, "att-1", "attendance", "password", who, "h"))
    add(prov, "att-1")
    with pytest.raises(RegistryError, match="rotate"):
        add(prov, "att-1")
    with pytest.raises(RegistryError, match="by"):
        prov.revoke("qingpu.att-1", "root", "lost")
    assert [e.action for e in prov.registry.load().audit] == ["provision"]


# -- a hall's broker bridged to the centre ----------------------------------------------------------------
def start_hall_and_centre(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker], bridge_auth: AuthKind = "password"
) -> tuple[ProvisionedBroker, ProvisionedBroker]:
    """Render the hall first (it creates the bridge account), then the centre, which then knows the bridge."""
    centre_layout = loopback_layout(tmp_path / "centre-conf")
    hall_layout = loopback_layout(tmp_path / "hall-conf")
    centre_port = centre_layout.mtls_port if bridge_auth == "cert" else centre_layout.tls_port
    hall_opts = HallOptions(SITE, "127.0.0.1", centre_port, bridge_auth, restart_timeout=(1, 1))
    prov.render_broker(hall_layout.conf_dir, hall_layout, HOSTS, hall_opts, approved_by=IT)
    prov.render_broker(centre_layout.conf_dir, centre_layout, HOSTS, approved_by=IT)
    centre = ProvisionedBroker(tmp_path / "centre", centre_layout)
    brokers.append(centre.start())
    hall = ProvisionedBroker(tmp_path / "hall", hall_layout)
    brokers.append(hall.start())
    wait_until(lambda: "as bridge-qingpu" in centre.log(), "the hall's bridge to log in to the centre")
    return hall, centre


@pytest.mark.parametrize("bridge_auth", ["password", "cert"])
def test_hall_bridge_carries_device_events_to_the_centre_and_commands_back(
    bridge_auth: AuthKind, prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    a, b = add(prov, "att-1"), add(prov, "att-2", "cert")
    hall, centre = start_hall_and_centre(prov, tmp_path, brokers, bridge_auth)
    assert "bridge-qingpu" not in (hall.layout.conf_dir / "hallfleet.passwd").read_text()
    with (
        session(centre.local_port, service(prov, CONSUMER_USER)) as consumer,
        session(centre.local_port, service(prov, API_USER)) as api,
        session(hall.layout.tls_port, login(a, tmp_path)) as dev_a,
        session(hall.layout.mtls_port, login(b, tmp_path)) as dev_b,
    ):
        consumer.subscribe("hall/v1/#")
        dev_a.subscribe(topics.cmd(SITE, "att-1"))
        evt = topics.event(SITE, "att-1", "attendance.punch")
        assert dev_a.publish(topics.event(SITE, "att-2", "attendance.punch")) == "Not authorized"  # hall ACL
        assert dev_a.publish(evt, b"punch") == "Success"
        assert dev_b.publish(topics.health(SITE, "att-2"), b"health") == "Success"
        wait_until(lambda: evt in consumer.topics() and topics.health(SITE, "att-2") in consumer.topics(), "bridged")
        assert api.publish(topics.cmd(SITE, "att-1"), b"reboot") == "Success"
        wait_until(lambda: dev_a.payloads(topics.cmd(SITE, "att-1")) == [b"reboot"], "the command through the bridge")
        time.sleep(QUIET_S)
        assert topics.event(SITE, "att-2", "attendance.punch") not in consumer.topics()


def test_a_hall_consumer_logs_in_at_its_hall_reads_its_site_and_writes_only_what_it_sends(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker], capsys: pytest.CaptureFixture[str]
) -> None:
    """GIVEN a hall broker rendered with --hall-consumer WHEN the hall consumer logs in on the hall's localhost
    listener THEN it reads its site's devices, sends restart_app commands, alerts and its lead/incident snapshots
    (which the bridge takes to the centre), but cannot confirm storage (the centre's word), touch another site,
    or log in at the centre; a device cannot pass for it (docs/hall-autonomy.md)."""
    a = add(prov, "kiosk-1")
    add(prov, "kiosk-9", site="wanzhou")
    centre_layout = loopback_layout(tmp_path / "centre-conf")
    hall_layout = loopback_layout(tmp_path / "hall-conf")

    def render(out: Path, *extra: str) -> None:
        argv = ["provision", "broker", "--dir", str(prov.directory), "--out", str(out), "--conf-dir", str(out)]
        argv += ["--hall", SITE, "--hall-consumer", "--approved-by", IT, "--host", "127.0.0.1", "--bind", "127.0.0.1"]
        argv += ["--centre-host", "127.0.0.1", "--centre-port", str(centre_layout.tls_port), *extra]
        argv += ["--tls-port", str(hall_layout.tls_port), "--mtls-port", str(hall_layout.mtls_port)]
        assert hallfleet_main([*argv, "--log-file", "none", "--no-persistence"]) == 0

    render(tmp_path / "as-in-production")
    assert f"created hall-consumer-{SITE}" in capsys.readouterr().out
    assert "listener 1883 localhost" in (tmp_path / "as-in-production" / "hallfleet.conf").read_text()
    from broker.mosquitto.local import free_port

    local = free_port()
    render(hall_layout.conf_dir, "--local-port", str(local))  # the account exists now: no second one
    assert "created" not in capsys.readouterr().out
    user = f"hall-consumer-{SITE}"
    password = (hall_layout.conf_dir / "credentials" / f"{user}.password").read_text().strip()
    assert password == prov.stored_password(user)
    prov.render_broker(centre_layout.conf_dir, centre_layout, HOSTS, approved_by=IT)
    assert user not in (centre_layout.conf_dir / "hallfleet.passwd").read_text()
    assert not (centre_layout.conf_dir / "credentials" / f"{user}.password").exists()
    hall = ProvisionedBroker(tmp_path / "hall", hall_layout)
    centre = ProvisionedBroker(tmp_path / "centre", centre_layout)
    brokers += [centre.start(), hall.start()]
    wait_until(lambda: f"as bridge-{SITE}" in centre.log(), "the hall's bridge to log in to the centre")
    hall_login = Login(user, password)
    assert try_connect(centre.local_port, hall_login) != "Success"  # a hall's service logs in at its hall only
    with (
        session(local, hall_login, client_id="hall-qingpu-1") as hc,
        session(centre.local_port, service(prov, CONSUMER_USER)) as centre_consumer,
        session(hall.layout.tls_port, login(a, tmp_path)) as kiosk,
    ):
        hc.subscribe(f"hall/v1/{SITE}/#")
        centre_consumer.subscribe("hall/v1/#")
        kiosk.subscribe(topics.cmd(SITE, "kiosk-1"))
        evt = topics.event(SITE, "kiosk-1", "kiosk.fault")
        assert kiosk.publish(evt, b"fault") == "Success"
        wait_until(lambda: evt in hc.topics(), "the hall consumer to read its device")
        assert hc.publish(topics.cmd(SITE, "kiosk-1"), b"restart_app") in ACCEPTED
        wait_until(lambda: kiosk.payloads(topics.cmd(SITE, "kiosk-1")) == [b"restart_app"], "the hall's command")
        assert hc.publish(f"hall/v1/{SITE}/alerts", b"page") in ACCEPTED
        lead = f"hall/v1/{SITE}/_hall/lead"
        assert hc.publish(lead, b'{"state":"online"}') in ACCEPTED
        wait_until(lambda: lead in centre_consumer.topics(), "the lead to cross the bridge to the centre")
        for forbidden in (
            f"hall/v1/{SITE}/kiosk-1/stored",  # only the centre confirms storage
            "hall/v1/wanzhou/kiosk-9/cmd",
            "hall/v1/wanzhou/_hall/lead",
            f"hall/v1/{SITE}/kiosk-1/evt/kiosk.fault",  # it does not speak for devices
        ):
            assert hc.publish(forbidden) == "Not authorized", forbidden
        assert kiosk.publish(lead, b'{"state":"offline"}') == "Not authorized"  # a device cannot pass for it


def test_revoking_a_hall_consumer_leaves_it_out_of_the_hall_render(prov: Provisioner, tmp_path: Path) -> None:
    """GIVEN a hall rendered with its hall consumer WHEN that account is revoked and the brokers re-rendered THEN
    its password and ACL are gone from the hall's files and the re-render says why (no approval asked)."""
    layout = loopback_layout(tmp_path / "hall-conf")
    prov.render_broker(
        layout.conf_dir, layout, HOSTS, HallOptions(SITE, "127.0.0.1", 8883, consumer=True), approved_by=IT
    )
    user = f"hall-consumer-{SITE}"
    assert f"user {user}" in (layout.conf_dir / "hallfleet.acl").read_text()
    prov.revoke(user, IT, "hall server replaced")
    written, skipped = prov.rerender_brokers()
    assert len(written) == 1 and any("hall consumer" in s for s in skipped), skipped
    assert user not in (layout.conf_dir / "hallfleet.acl").read_text()
    assert user not in (layout.conf_dir / "hallfleet.passwd").read_text()


def test_hall_bridge_queues_events_while_the_centre_is_down_and_delivers_them_after_it_restarts(
    prov: Provisioner, tmp_path: Path, brokers: list[ProvisionedBroker]
) -> None:
    a = add(prov, "att-1")
    hall, centre = start_hall_and_centre(prov, tmp_path, brokers)
    evt = topics.event(SITE, "att-1", "attendance.punch")
    n = 50
    # The consumer's persistent session keeps its subscription across the centre's restart.
    with (
        session(centre.local_port, service(prov, CONSUMER_USER), client_id="consumer-1", persistent=True) as consumer,
        session(hall.layout.tls_port, login(a, tmp_path)) as dev,
    ):
        consumer.subscribe(f"hall/v1/{SITE}/+/evt/#")
        assert dev.publish(evt, b"before") == "Success"
        wait_until(lambda: consumer.payloads(evt) == [b"before"], "the event before the outage")

        centre.stop()  # the WAN (or the centre) is down
        sent = [f"offline-{i}".encode() for i in range(n)]
        assert {dev.publish(evt, p) for p in sent} == {"Success"}, "the hall broker must take events offline"
        time.sleep(1.5)  # the bridge retries meanwhile (restart_timeout 1 s)
        assert consumer.payloads(evt) == [b"before"]

        centre.start()
        wait_until(lambda: set(sent) <= set(consumer.payloads(evt)), f"{n} queued events after the restart", 20)
        got = [p for p in consumer.payloads(evt) if p != b"before"]
        assert list(dict.fromkeys(got)) == sent, "queued events arrived out of order"


# -- the install bundle -----------------------------------------------------------------------------------
# A rating pad's hardware has no default: the window it faces and its keypad come from --hardware.
RATING_HARDWARE = """\
[rating]
window = "A12"

[rating.keypad]
type = "evdev"
device = "/dev/input/by-id/usb-keypad-event-kbd"

[rating.queue]
port = 8731
"""


def bundle(prov: Provisioner, tmp_path: Path, role: Role, auth: AuthKind, port: int = 0, tar: bool = False) -> Path:
    """Provision ``{role}-1`` and write its bundle (with a stand-in wheel); ``port`` 0: the production port."""
    port = port or (8884 if auth == "cert" else 8883)
    req = DeviceRequest(SITE, f"{role}-1", role, auth, IT, "127.0.0.1", port)
    account, secrets = prov.provision_device(req)
    wheel = write_file(tmp_path / "hallfleet-0.1.0-py3-none-any.whl", b"not really a wheel", 0o644)
    hardware = write_file(tmp_path / "rating.toml", RATING_HARDWARE, 0o644) if role == "rating" else None
    opts = BundleOptions(wheel=wheel, gallery_keys_dir=tmp_path / "gallery-keys", tar=tar, hardware=hardware)
    return write_bundle(tmp_path / "bundles", account, secrets, opts, port)


@pytest.mark.parametrize(("role", "auth"), [("attendance", "password"), ("kiosk", "cert"), ("rating", "password")])
def test_bundle_script_parses_its_toml_loads_as_agent_config_and_its_unit_loads_each_credential(
    prov: Provisioner, tmp_path: Path, role: Role, auth: AuthKind
) -> None:
    d = bundle(prov, tmp_path, role, auth)
    out = subprocess.run(["bash", "-n", str(d / "first-boot.sh")], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    cfg = load_settings(AgentConfig, d / "agent.toml")
    assert (cfg.site, cfg.device, cfg.client_id) == (SITE, f"{role}-1", f"{SITE}.{role}-1")
    assert cfg.mqtt.tls is not None and cfg.mqtt.port == (8884 if auth == "cert" else 8883)
    assert (cfg.mqtt.tls.cert_file is not None) == (auth == "cert")

    creds = sorted(p.name for p in (d / "credentials").iterdir())
    expected = {"password": ["mqtt-ca", "mqtt-password"], "cert": ["mqtt-ca", "mqtt-cert", "mqtt-key"]}[auth]
    assert creds == sorted(expected + ["sign-key"] + (["gallery-key"] if role == "attendance" else []))
    for p in (d / "credentials").iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    assert stat.S_IMODE((d / "credentials").stat().st_mode) == 0o700
    unit = (d / UNIT).read_text()
    assert sorted(re.findall(r"^LoadCredential=([^:]+):/etc/hallfleet/credentials/\1$", unit, re.M)) == creds
    # Every device may start its updater (its unit ships too); only a kiosk may restart an application unit.
    rules = (d / "50-hallfleet-agent.rules").read_text()
    assert 'unit === "hallfleet-update.service" && verb === "start"' in rules
    app_unit = 'var APP_UNIT = "kiosk-app.service";' if role == "kiosk" else 'var APP_UNIT = "";'
    assert app_unit in rules, rules
    assert "ExecStart=" in (d / "hallfleet-update.service").read_text()
    if role == "attendance":  # the centre keeps the same key to seal this terminal's gallery
        key = (tmp_path / "gallery-keys" / f"{SITE}.{role}-1.key").read_text()
        assert key == (d / "credentials" / "gallery-key").read_text()


def test_gallery_key_survives_a_rotation_but_not_a_replacement_after_revocation(
    prov: Provisioner, tmp_path: Path
) -> None:
    first = (bundle(prov, tmp_path, "attendance", "password") / "credentials" / "gallery-key").read_text()
    opts = BundleOptions(index_url="https://index.example/simple", gallery_keys_dir=tmp_path / "gallery-keys")
    account, secrets = prov.rotate(f"{SITE}.attendance-1", "zhao.min")
    rotated = write_bundle(tmp_path / "rotated", account, secrets, opts, 8883)
    assert (rotated / "credentials" / "gallery-key").read_text() == first, "the terminal's gallery would not open"
    prov.revoke(f"{SITE}.attendance-1", "zhao.min", "stolen", compromised=True)
    account, secrets = prov.provision_device(DeviceRequest(SITE, "attendance-1", "attendance", "password", IT, "h"))
    replaced = write_bundle(tmp_path / "replaced", account, secrets, opts, 8883)
    assert (replaced / "credentials" / "gallery-key").read_text() != first, "the thief's key still opens galleries"
    assert (tmp_path / "gallery-keys" / f"{SITE}.attendance-1.key").read_text() != first


def test_bundle_unit_passes_systemd_analyze_verify(prov: Provisioner, tmp_path: Path) -> None:
    d = bundle(prov, tmp_path, "attendance", "cert")
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of systemd: run scripts/setup"
    unit = tmp_path / UNIT
    unit.write_text((d / UNIT).read_text().replace("/opt/hallfleet/venv/bin/hallfleet", "/bin/true"))
    out = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def test_bundle_as_tarball_keeps_modes_and_is_private(prov: Provisioner, tmp_path: Path) -> None:
    path = bundle(prov, tmp_path, "kiosk", "password", tar=True)
    assert path.name == f"{SITE}.kiosk-1.tar.gz" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with tarfile.open(path) as tar:
        modes = {m.name: stat.S_IMODE(m.mode) for m in tar.getmembers()}
        assert all(m.uid == 0 for m in tar.getmembers())
    assert modes[f"{SITE}.kiosk-1/credentials/mqtt-password"] == 0o600
    assert modes[f"{SITE}.kiosk-1/first-boot.sh"] == 0o755


STUBS = {
    "systemctl": 'echo "systemctl $*" >> "$STUB_LOG"',
    "apt-get": 'echo "apt-get $*" >> "$STUB_LOG"',
    "dpkg-query": "echo installed",
    "useradd": 'echo "useradd $*" >> "$STUB_LOG"',
    # python3 -m venv DIR makes a venv whose python logs what pip is asked to install.
    "python3": 'mkdir -p "$3/bin"; printf "#!/bin/sh\\necho \\"pip \\$*\\" >> \\"$STUB_LOG\\"\\n" > "$3/bin/python"; '
    'chmod +x "$3/bin/python"',
}


def run_first_boot(d: Path, root: Path, stubs: Path, log: Path) -> subprocess.CompletedProcess[str]:
    stubs.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        write_file(stubs / name, f"#!/bin/sh\n{body}\n", 0o755)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "HALLFLEET_ROOT": str(root), "STUB_LOG": str(log)}
    return subprocess.run(["bash", str(d / "first-boot.sh")], capture_output=True, text=True, env=env, check=False)


def test_first_boot_installs_credentials_unit_and_agent_and_a_second_run_changes_nothing_but_old_secrets(
    prov: Provisioner, tmp_path: Path
) -> None:
    assert os.geteuid() == 0, "first-boot.sh installs files as root: run the tests as root (as CI does)"
    d = bundle(prov, tmp_path, "attendance", "password")
    root, log = tmp_path / "root", tmp_path / "stub.log"
    first = run_first_boot(d, root, tmp_path / "stubs", log)
    assert first.returncode == 0, first.stderr
    creds = root / "etc/hallfleet/credentials"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    assert sorted(p.name for p in creds.iterdir()) == ["gallery-key", "mqtt-ca", "mqtt-password", "sign-key"]
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 and p.stat().st_uid == 0 for p in creds.iterdir())
    assert (root / "etc/systemd/system" / UNIT).read_text() == (d / UNIT).read_text()
    assert (root / "etc/hallfleet/agent.toml").read_text() == (d / "agent.toml").read_text()
    calls = log.read_text()
    assert "wheels/hallfleet-0.1.0-py3-none-any.whl[face]" in calls and "face-recognition==1.3.0" in calls
    assert f"systemctl enable {UNIT}" in calls and f"systemctl restart {UNIT}" in calls
    assert calls.count("useradd") == 1

    (creds / "mqtt-cert").write_text("left from an older bundle")
    second = run_first_boot(d, root, tmp_path / "stubs", log)
    assert second.returncode == 0, second.stderr
    assert sorted(p.name for p in creds.iterdir()) == ["gallery-key", "mqtt-ca", "mqtt-password", "sign-key"]
    assert log.read_text().count(f"systemctl restart {UNIT}") == 2


def bundle_toml_for_this_host(d: Path, creds: Path, state: Path) -> Path:
    """The bundle's agent.toml with the systemd paths pointed at this test's directories."""
    text = (d / "agent.toml").read_text()
    text = text.replace(str(CREDENTIALS_RUN), str(creds)).replace(str(STATE_DIR), str(state))
    return write_file(d.parent / "agent-here.toml", text, 0o644)


@pytest.mark.parametrize("auth", ["password", "cert"])
def test_agent_installed_from_its_bundle_logs_in_to_the_generated_broker(
    auth: AuthKind,
    prov: Provisioner,
    tmp_path: Path,
    brokers: list[ProvisionedBroker],
    procs: list[Proc],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    centre_layout = loopback_layout(tmp_path / "centre-conf")
    d = bundle(prov, tmp_path, "none", auth, centre_layout.mtls_port if auth == "cert" else centre_layout.tls_port)
    prov.render_broker(centre_layout.conf_dir, centre_layout, HOSTS, approved_by=IT)
    centre = ProvisionedBroker(tmp_path / "centre", centre_layout)
    brokers.append(centre.start())
    creds = tmp_path / "run-credentials"
    shutil.copytree(d / "credentials", creds)
    cfg = bundle_toml_for_this_host(d, creds, tmp_path / "state")
    with session(centre.local_port, service(prov, CONSUMER_USER)) as consumer:
        consumer.subscribe(topics.status(SITE, "none-1"))
        monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))  # what LoadCredential= gives the service
        agent = Proc(f"agent-{auth}", ["agent", "--config", str(cfg)], tmp_path)
        procs.append(agent.start())
        monkeypatch.delenv("CREDENTIALS_DIRECTORY")
        wait_until(lambda: any(b"online" in p for p in consumer.payloads(topics.status(SITE, "none-1"))), "birth", 20)
    assert "refused" not in agent.log().lower()


# The RS-485 boards and the patrol handheld: their port, address and scanner come only from --hardware.
ACCESS_HARDWARE = {
    "door": '[door.controller]\ntype = "serial"\naddress = 3\nport = { path = "/dev/ttyUSB0", baud = 19200 }\n',
    "locker": '[locker]\nbank = "B"\n[locker.board]\ntype = "serial"\naddress = 2\ncompartments = 24\n'
    'port = { path = "/dev/serial/by-id/usb-FTDI_FT232R-if00-port0" }\n',
    "patrol": '[patrol.scanner]\ntype = "evdev"\ndevice = "/dev/input/by-id/usb-scanner-event-kbd"\n',
}
# Exactly what each unit may open (DevicePolicy=closed stays): the serial class and dialout, or input.
ACCESS = {
    "door": (["dialout"], ["char-ttyUSB rw"]),
    "locker": (["dialout"], ["char-ttyACM rw", "char-ttyUSB rw"]),
    "patrol": (["input"], ["char-input r"]),
}


def provision_cli(tmp_path: Path, role: str, hardware: str | None) -> list[str]:
    args = ["provision", "device", "--dir", str(tmp_path / "prov"), "--site", SITE, "--id", f"{role}-1"]
    args += ["--role", role, "--broker-host", "h", "--out", str(tmp_path / "bundles"), "--approved-by", IT]
    if hardware is not None:
        args += ["--hardware", str(write_file(tmp_path / f"{role}.toml", hardware, 0o644))]
    return args


def unit_access(unit: str) -> tuple[list[str], list[str]]:
    groups = re.findall(r"^SupplementaryGroups=(.*)$", unit, re.M)
    return [g for line in groups for g in line.split()], re.findall(r"^DeviceAllow=(.*)$", unit, re.M)


@pytest.mark.parametrize("role", ["door", "locker", "patrol"])
def test_door_locker_and_patrol_devices_are_provisioned_with_a_config_the_agent_accepts_and_their_devices_only(
    tmp_path: Path, role: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hallfleet_main(provision_cli(tmp_path, role, ACCESS_HARDWARE[role])) == 0
    d = tmp_path / "bundles" / f"{SITE}.{role}-1"
    capsys.readouterr()
    assert hallfleet_main(["config", "check", str(d / "agent.toml")]) == 0, capsys.readouterr()
    cfg = load_settings(AgentConfig, d / "agent.toml")
    assert cfg.role == role and getattr(cfg, role) is not None
    if role == "door":
        assert cfg.door is not None and cfg.door.controller.type == "serial"
        assert (cfg.door.controller.address, str(cfg.door.controller.port.path)) == (3, "/dev/ttyUSB0")
    unit = (d / UNIT).read_text()
    assert unit_access(unit) == ACCESS[role], unit
    assert "DevicePolicy=closed" in unit
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of systemd: run scripts/setup"
    here = tmp_path / UNIT
    here.write_text(unit.replace("/opt/hallfleet/venv/bin/hallfleet", "/bin/true"))
    out = subprocess.run([analyze, "verify", str(here)], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


@pytest.mark.parametrize(
    ("role", "hardware", "named"),
    [
        ("door", None, "--hardware"),
        ("door", '[door.controller]\ntype = "serial"\naddress = 3\n', "door.controller.serial.port"),
        ("locker", '[locker]\nbank = "B"\n', "locker.board"),
        ("patrol", "[patrol]\nofficer_timeout_min = 30\n", "patrol.scanner"),
        ("door", ACCESS_HARDWARE["locker"], "[door]"),
        ("door", '[door.controller]\ntype = "serial"\nport = { path = "/dev/rs485" }\n', "door.controller.port.path"),
    ],
)
def test_a_missing_or_unusable_hardware_section_is_refused_naming_the_field_before_anything_is_issued(
    tmp_path: Path, role: str, hardware: str | None, named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hallfleet_main(provision_cli(tmp_path, role, hardware)) == 1
    assert named in capsys.readouterr().err
    assert not (tmp_path / "prov" / "registry.json").exists(), "credentials were issued for a device refused"


def test_each_existing_role_is_granted_only_the_devices_its_hardware_uses(prov: Provisioner, tmp_path: Path) -> None:
    """A rating pad reads its keypad and nothing else; a sim device opens no device at all (it had every class)."""
    expected: dict[Role, tuple[list[str], list[str]]] = {
        "rating": (["input"], ["char-input r"]),
        "attendance": (["video"], ["char-video4linux rw"]),  # the default hardware: the camera only
        "kiosk": ([], []),  # no receipt printer configured by default
        "none": ([], []),
    }
    for role, access in expected.items():
        unit = (bundle(prov, tmp_path / role, role, "password") / UNIT).read_text()
        assert unit_access(unit) == access, (role, unit)


def test_every_agent_role_can_be_provisioned() -> None:
    agent_roles = set(get_args(AgentConfig.model_fields["role"].annotation))
    assert set(get_args(Role)) == agent_roles


# -- the CLI ------------------------------------------------------------------------------------------------
def test_cli_provisions_lists_revokes_and_renders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pdir, out = tmp_path / "prov", tmp_path / "bundles"
    wheel = write_file(tmp_path / "hallfleet-0.1.0-py3-none-any.whl", b"w", 0o644)
    hw = write_file(tmp_path / "rating.toml", RATING_HARDWARE, 0o644)
    dev = ["provision", "device", "--dir", str(pdir), "--site", SITE, "--id", "att-1", "--role", "rating"]
    dev += ["--broker-host", "h", "--out", str(out), "--wheel", str(wheel)]
    # Refused before anything is issued: a shared approver, a pad without its hardware section.
    assert hallfleet_main([*dev, "--hardware", str(hw), "--approved-by", "root"]) == 1
    assert "shared account" in capsys.readouterr().err
    assert hallfleet_main([*dev, "--approved-by", IT]) == 1
    assert "--hardware" in capsys.readouterr().err
    assert not (pdir / "registry.json").exists()
    assert hallfleet_main([*dev, "--hardware", str(hw), "--approved-by", IT]) == 0
    assert (out / f"{SITE}.att-1" / "first-boot.sh").exists()

    broker = ["provision", "broker", "--dir", str(pdir), "--out", str(tmp_path / "mq"), "--host", "mqtt.example"]
    assert hallfleet_main([*broker, "--approved-by", IT]) == 0
    assert "user qingpu.att-1" in (tmp_path / "mq" / "hallfleet.acl").read_text()
    revoke = ["provision", "revoke", f"{SITE}/att-1", "--dir", str(pdir), "--by", "zhao.min", "--reason", "lost"]
    assert hallfleet_main(revoke) == 0
    assert hallfleet_main(broker) == 0
    assert "qingpu.att-1" not in (tmp_path / "mq" / "hallfleet.acl").read_text()
    capsys.readouterr()
    assert hallfleet_main(["provision", "list", "--dir", str(pdir)]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"qingpu/att-1 +device rating password revoked: approved by wang.li", listing), listing


def test_sim_device_without_wheel_or_index_gets_a_credentials_only_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pdir, out = tmp_path / "prov", tmp_path / "bundles"
    dev = ["provision", "device", "--dir", str(pdir), "--site", SITE, "--id", "sim-1", "--role", "sim"]
    assert hallfleet_main([*dev, "--broker-host", "h", "--out", str(out), "--approved-by", IT]) == 0
    assert "credentials and config only" in capsys.readouterr().out
    d = out / f"{SITE}.sim-1"
    assert not (d / "wheels").exists()
    assert load_settings(AgentConfig, d / "agent.toml").role == "sim"

    root, log = tmp_path / "root", tmp_path / "stub.log"
    bare = run_first_boot(d, root, tmp_path / "stubs", log)
    assert bare.returncode == 1 and "credentials-only bundle" in bare.stderr, bare.stderr
    assert not (root / "etc/hallfleet/credentials").exists(), "nothing is installed for an agent that is not there"

    installed = root / "opt/hallfleet/venv/bin/hallfleet"
    write_file(installed, "#!/bin/sh\n", 0o755)
    done = run_first_boot(d, root, tmp_path / "stubs", log)
    assert done.returncode == 0, done.stderr
    assert "pip" not in log.read_text(), "a credentials-only bundle installs no package"
    assert (root / "etc/hallfleet/credentials/mqtt-password").exists()
    assert f"systemctl restart {UNIT}" in log.read_text()


def test_broker_options_render_a_conf_mosquitto_runs_as_is_on_the_chosen_ports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Listeners, bind address, TLS version, persistence, autosave, the service user and file ownership all come
    from options: the rendered conf is started by Mosquitto unchanged and a device logs in on the chosen port."""
    from broker.mosquitto.local import find_mosquitto, free_port

    pdir, conf = tmp_path / "prov", tmp_path / "etc-mosquitto"
    tls, mtls, local = free_port(), free_port(), free_port()
    prov = Provisioner(pdir)
    secrets = add(prov, "att-1")
    args = ["provision", "broker", "--dir", str(pdir), "--out", str(conf), "--conf-dir", str(conf)]
    args += ["--host", "127.0.0.1", "--approved-by", IT, "--bind", "127.0.0.1", "--tls-version", "tlsv1.3"]
    args += ["--tls-port", str(tls), "--mtls-port", str(mtls), "--local-port", str(local)]
    args += ["--persistence-dir", str(tmp_path / "state"), "--autosave-interval", "5", "--log-file", "none"]
    args += ["--user", "root", "--owner", "root", "--group", "root"]
    assert hallfleet_main([*args, "--group", "no-such-group-here"]) == 1
    assert "no-such-group-here" in capsys.readouterr().err and not (conf / "hallfleet.conf").exists()
    assert hallfleet_main(args) == 0
    assert "written in place" in capsys.readouterr().out
    text = (conf / "hallfleet.conf").read_text()
    for line in (f"listener {tls} 127.0.0.1", f"listener {mtls} 127.0.0.1", f"listener {local} localhost",
                 "tls_version tlsv1.3", "autosave_interval 5", "user root",
                 f"persistence_location {tmp_path / 'state'}/"):  # fmt: skip
        assert line in text.splitlines(), line
    assert "log_dest" not in text
    assert {p.stat().st_gid for p in conf.iterdir() if p.is_file()} == {0}

    (tmp_path / "state").mkdir()
    broker = subprocess.Popen([str(find_mosquitto()), "-c", str(conf / "hallfleet.conf")], stderr=subprocess.PIPE)
    try:
        wait_until(lambda: try_connect(tls, login(secrets, tmp_path)) == "Success", "a device on the chosen port")
        assert try_connect(mtls, login(secrets, tmp_path)) != "Success"  # no certificate: refused
    finally:
        broker.terminate()
        broker.wait(10)
    assert (tmp_path / "state" / "mosquitto.db").exists(), "persistence went where it was told"

    args_off = [*args[:-6], "--no-persistence"]
    assert hallfleet_main(args_off) == 0
    assert "persistence false" in (conf / "hallfleet.conf").read_text().splitlines()


def _centre_devices(store_url: str) -> dict[str, tuple[bool | None, str, str]]:
    """key -> (hours24, role, presence) as the centre's store has them."""
    import asyncio

    import sqlalchemy as sa

    from broker.store.db import Store
    from broker.store.schema import devices

    async def read() -> dict[str, tuple[bool | None, str, str]]:
        store = await Store.open(store_url)
        try:
            c = devices.c
            return {
                r.key: (r.hours24, r.role, r.presence)
                for r in await store.fetch(sa.select(c.key, c.hours24, c.role, c.presence))
            }
        finally:
            await store.close()

    return asyncio.run(read())


def test_the_registry_is_the_one_source_of_the_24_hour_status_and_the_centre_follows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    """GIVEN IT approving a kiosk as a 24-hour device before it ever connects WHEN provisioning writes the registry
    THEN the centre's store has the device (not heard from yet) with that status; a later change goes through the
    registry, audited, and the store follows; a store that lost it gets it back from `provision sync`; a store that
    cannot be reached leaves the registry saved and says how to push again."""
    pdir, out, centre = tmp_path / "prov", tmp_path / "bundles", tmp_path / "centre.toml"
    centre.write_text(f'[store]\nurl = "{store_url}"\n')
    dev = ["provision", "device", "--dir", str(pdir), "--site", SITE, "--role", "sim", "--broker-host", "h"]
    dev += ["--out", str(out), "--approved-by", IT]
    assert hallfleet_main([*dev, "--id", "kiosk-3", "--hours24", "--config", str(centre)]) == 0
    assert "qingpu/kiosk-3" in capsys.readouterr().out
    assert Provisioner(pdir).registry.load().require("qingpu.kiosk-3").hours24 is True
    assert _centre_devices(store_url) == {"qingpu/kiosk-3": (True, "sim", "registered")}, "registered ahead, not heard"

    # Without --config the registry has it and the command says how the centre learns it.
    assert hallfleet_main([*dev, "--id", "kiosk-4", "--no-hours24"]) == 0
    assert "provision sync --config" in capsys.readouterr().out
    assert "qingpu/kiosk-4" not in _centre_devices(store_url)

    change = ["provision", "hours24", f"{SITE}/kiosk-3", "off", "--dir", str(pdir), "--by", "zhao.min"]
    assert hallfleet_main([*change, "--config", str(centre)]) == 0
    fleet = Provisioner(pdir).registry.load()
    assert fleet.require("qingpu.kiosk-3").hours24 is False
    assert [(e.action, e.username, e.by) for e in fleet.audit if e.action == "hours24"] == [
        ("hours24", "qingpu.kiosk-3", "zhao.min")
    ]
    assert _centre_devices(store_url)["qingpu/kiosk-3"][0] is False

    sync = ["provision", "sync", "--dir", str(pdir), "--by", IT, "--config", str(centre)]
    capsys.readouterr()
    assert hallfleet_main(sync) == 0
    assert "1 处更新 changed" in capsys.readouterr().out, "kiosk-4 reached the centre"
    assert _centre_devices(store_url)["qingpu/kiosk-4"] == (False, "sim", "registered")
    assert hallfleet_main(sync) == 0
    assert "0 处更新 changed" in capsys.readouterr().out, "nothing left to push"

    unreachable = tmp_path / "down.toml"
    unreachable.write_text(f'[store]\nurl = "sqlite+aiosqlite:///{tmp_path}/no/such/dir/store.db"\n')
    assert hallfleet_main([*change[:3], "on", *change[4:], "--config", str(unreachable)]) == 1
    err = capsys.readouterr().err
    assert "the registry is saved" in err and "provision sync --config" in err, err
    assert Provisioner(pdir).registry.load().require("qingpu.kiosk-3").hours24 is True, "the registry decides"


def test_provision_sync_gives_a_hall_consumers_store_its_own_sites_24_hour_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], store_url: str
) -> None:
    """GIVEN 24-hour kiosks registered at two sites WHEN `provision sync --config` names a hall consumer's TOML
    (docs/hall-autonomy.md: the same store schema) THEN the hall's store gets its own site's status, not the other's:
    the hall's SLA clock reads the registry as the centre's does, never a name pattern."""
    pdir, out, hall = tmp_path / "prov", tmp_path / "bundles", tmp_path / "hall-consumer.toml"
    hall.write_text(f'[store]\nurl = "{store_url}"\n\n[hall]\nsite = "{SITE}"\n')
    dev = ["provision", "device", "--dir", str(pdir), "--role", "sim", "--broker-host", "h", "--out", str(out)]
    for site in (SITE, "wanzhou"):
        assert hallfleet_main([*dev, "--approved-by", IT, "--site", site, "--id", "kiosk-24h-1", "--hours24"]) == 0
    assert hallfleet_main(["provision", "sync", "--dir", str(pdir), "--by", IT, "--config", str(hall)]) == 0
    assert "1 处更新 changed" in capsys.readouterr().out
    assert _centre_devices(store_url) == {f"{SITE}/kiosk-24h-1": (True, "sim", "registered")}
