"""The REST API against a real store (SQLite and PostgreSQL), a real Mosquitto and an in-process consumer:
logins and sessions, roles scoped to sites, validation, pagination, acknowledgements, commands that really
leave for the device, signed acknowledgement links and the Prometheus gauges."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import paho.mqtt.client as paho
import pytest
import sqlalchemy as sa

from broker.alerts.routing import AlertsConfig, Router, sign_ack
from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.commands import centre_link, current_user
from broker.config import ConsumerConfig, StoreConfig
from broker.mosquitto.local import LocalMosquitto
from broker.ratings.jobs import RatingJobs
from broker.rules.devices import Registered, register_devices
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import audit_log, events, incident_timeline, incidents, notifications
from config.base import ConfigError
from protocol import topics
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE
from runtime.settings import MqttConfig
from runtime.transport import AsyncMqtt
from tests.conftest import RunningConsumer
from tests.support.apps import free_port
from tests.support.hall import Device, ManualClock, wait_until
from tests.support.procs import Proc

PASSWORD = "correct horse battery"
ACK_SECRET = b"ack-links-secret-of-32-bytes-or-more"


@dataclass
class Api:
    client: httpx.AsyncClient
    consumer: RunningConsumer
    mosquitto: LocalMosquitto
    secret: bytes
    clock: ManualClock
    app: Any

    def device(self, key: str, role: str = "kiosk") -> Device:
        site, device = key.split("/")
        return Device(self.mosquitto.port, site, device, self.clock, role=role)

    async def login(self, name: str) -> dict[str, str]:
        r = await self.client.post("/api/login", json={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}

    async def presence(self, key: str) -> str | None:
        from broker.api.queries import device_row

        row = await device_row(self.consumer.store, key)
        return None if row is None else str(row.presence)

    async def incident(self, key: str) -> Any:
        rows = await self.consumer.store.fetch(sa.select(incidents).where(incidents.c.key == key))
        return rows[0] if rows else None


async def _births(api: Api, *keys: str) -> None:
    for key in keys:
        await asyncio.to_thread(api.device(key).birth)
    for key in keys:
        await wait_until(lambda k=key: _is(api, k, "online"), 10, f"{key} online")


async def _register_24_hour(api: Api, key: str) -> None:
    """IT registers the kiosk as a 24-hour device (devices.hours24, as `hallfleet provision sync` writes it)."""
    site, device = key.split("/")
    async with api.consumer.store.engine.begin() as conn:
        await register_devices(conn, [Registered(site, device, "kiosk", True)], by="wang.li", at=api.clock.now())


async def _is(api: Api, key: str, state: str) -> bool:
    return await api.presence(key) == state


async def _offline(api: Api, key: str) -> Any:
    await asyncio.to_thread(api.device(key).will)
    return await wait_until(lambda: api.incident(key), 10, f"an incident for {key}")


@pytest.fixture
async def api(consumer: RunningConsumer, mosquitto: LocalMosquitto, tmp_path: Path) -> AsyncIterator[Api]:
    secret_file = tmp_path / "ack-secret"
    secret_file.write_text(ACK_SECRET.decode())
    centre = ConsumerConfig(
        instance="api-test",
        mqtt=MqttConfig(host=mosquitto.host, port=mosquitto.port),
        store=StoreConfig(url="sqlite+aiosqlite:///unused"),
        alerts=AlertsConfig(ack_base_url="https://hallfleet.test/ack", ack_secret_file=secret_file),
    )
    cfg = ApiConfig(centre=centre, cookie_secure=False, stream_poll_s=0.2)
    link = AsyncMqtt(centre_link(centre.mqtt, "api-test"))
    await link.connect()
    now = datetime.now(UTC)
    store = consumer.store
    await add_user(store, "admin", PASSWORD, "it_admin", ("*",), now)
    await add_user(store, "tech.qp", PASSWORD, "technician", ("qp",), now)
    await add_user(store, "tech.wz", PASSWORD, "technician", ("wz",), now)
    await add_user(store, "wm.qp", PASSWORD, "window_management", ("qp",), now)
    await add_user(store, "viewer", PASSWORD, "readonly", ("*",), now)
    app = create_app(cfg, store, link)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hallfleet.test") as client:
        yield Api(client, consumer, mosquitto, ACK_SECRET, ManualClock(now), app)
    await link.disconnect()


async def test_without_a_session_the_api_answers_401_and_pages_send_to_the_login(api: Api) -> None:
    r = await api.client.get("/api/devices")
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    r = await api.client.get("/api/devices", headers={"Authorization": "Bearer not-a-session"})
    assert r.status_code == 401
    r = await api.client.get("/incidents", headers={"Accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/incidents"
    r = await api.client.post("/api/login", json={"username": "tech.qp", "password": "wrong password"})
    assert r.status_code == 401
    r = await api.client.post("/api/login", json={"username": "nobody", "password": PASSWORD})
    assert r.status_code == 401


async def test_login_sets_an_httponly_cookie_that_works_like_the_bearer_token_until_logout(api: Api) -> None:
    r = await api.client.post("/login", content=f"username=tech.qp&password={PASSWORD}&next=/incidents")
    assert r.status_code == 303 and r.headers["location"] == "/incidents"
    cookie = r.headers["set-cookie"]
    assert "hallfleet_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert (await api.client.get("/api/devices")).status_code == 200  # the client keeps the cookie
    page = await api.client.get("/incidents")
    assert page.status_code == 200 and "tech.qp" in page.text and "故障" in page.text
    forged = await api.client.post("/api/incidents/x/ack", headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403, "a cookie-borne write from another site is refused"
    assert (await api.client.post("/logout")).status_code == 303
    api.client.cookies.clear()
    token_headers = await api.login("tech.qp")
    assert (await api.client.get("/api/devices", headers=token_headers)).status_code == 200
    await api.client.post("/api/logout", headers=token_headers)
    assert (await api.client.get("/api/devices", headers=token_headers)).status_code == 401


async def test_repeated_wrong_passwords_lock_the_name_out(api: Api) -> None:
    for _ in range(5):
        r = await api.client.post("/api/login", json={"username": "viewer", "password": "guess guess"})
        assert r.status_code == 401
    r = await api.client.post("/api/login", json={"username": "viewer", "password": PASSWORD})
    assert r.status_code == 429


async def test_a_technician_of_one_site_gets_404_on_another_sites_device_incident_and_command(api: Api) -> None:
    await _births(api, "qp/kiosk-24h-1", "wz/kiosk-1")
    wz_incident = await _offline(api, "wz/kiosk-1")
    qp = await api.login("tech.qp")
    r = await api.client.get("/api/devices", headers=qp)
    assert [d["key"] for d in r.json()["items"]] == ["qp/kiosk-24h-1"], "only their own site is listed"
    assert (await api.client.get("/api/devices?site=wz", headers=qp)).status_code == 403
    # One thing named by id: another site's is "not found", exactly as one that does not exist.
    other = await api.client.get("/api/devices/wz/kiosk-1/presence", headers=qp)
    missing = await api.client.get("/api/devices/wz/kiosk-9/presence", headers=qp)
    assert other.status_code == missing.status_code == 404
    assert other.json()["detail"].replace("kiosk-1", "X") == missing.json()["detail"].replace("kiosk-9", "X")
    assert (await api.client.get(f"/api/incidents/{wz_incident.id}", headers=qp)).status_code == 404
    assert (await api.client.post(f"/api/incidents/{wz_incident.id}/ack", headers=qp)).status_code == 404
    body = {"device": "wz/kiosk-1", "name": "restart_app", "reason": "try"}
    assert (await api.client.post("/api/commands", json=body, headers=qp)).status_code == 403
    open_ones = (await api.client.get("/api/incidents?state=open", headers=qp)).json()
    assert open_ones["total"] == 0, "another site's incident is not even counted"
    wz = await api.login("tech.wz")
    r = await api.client.get(f"/api/incidents/{wz_incident.id}", headers=wz)
    assert r.status_code == 200 and r.json()["key"] == "wz/kiosk-1"
    viewer = await api.login("viewer")
    assert (await api.client.post("/api/commands", json=body, headers=viewer)).status_code == 403, "readonly"
    assert (await api.client.get("/api/attendance/qp/2026-11-23", headers=qp)).status_code == 403


async def test_validation_errors_are_422_and_name_the_field(api: Api) -> None:
    h = await api.login("admin")
    r = await api.client.get("/api/devices?size=0", headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["size"]
    r = await api.client.get("/api/devices?page=x", headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["page"]
    r = await api.client.post("/api/commands", json={"device": "qp/kiosk-1", "name": "restart_app"}, headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["reason"]
    r = await api.client.post(
        "/api/commands", json={"device": "no-slash", "name": "restart_app", "reason": "x"}, headers=h
    )
    assert r.status_code == 422 and r.json()["fields"] == ["device"]
    r = await api.client.get("/api/reports/attendance/qp/2026-13.xlsx", headers=h)
    assert r.status_code == 422 and r.json()["fields"] == ["month"]


async def test_pages_of_devices_add_up_to_the_total(api: Api) -> None:
    keys = [f"qp/kiosk-{i}" for i in range(5)]
    await _births(api, *keys)
    h = await api.login("admin")
    seen: list[str] = []
    for page in (1, 2, 3):
        body = (await api.client.get(f"/api/devices?page={page}&size=2", headers=h)).json()
        assert body["total"] == 5 and body["page"] == page and body["size"] == 2
        seen += [d["key"] for d in body["items"]]
    assert seen == sorted(keys)
    assert (await api.client.get("/api/devices?page=4&size=2", headers=h)).json()["items"] == []
    presence = (await api.client.get("/api/devices/qp/kiosk-0/presence", headers=h)).json()
    assert presence["device"]["presence"] == "online" and presence["history"][0]["state"] == "online"
    assert presence["availability"] == 1.0


async def test_an_acknowledgement_is_audited_and_on_the_timeline(api: Api) -> None:
    await _register_24_hour(api, "qp/kiosk-24h-1")
    await _births(api, "qp/kiosk-24h-1")
    incident = await _offline(api, "qp/kiosk-24h-1")
    h = await api.login("tech.qp")
    listed = (await api.client.get("/api/incidents?state=open", headers=h)).json()
    assert listed["total"] == 1
    assert (await api.client.get("/api/incidents?state=closed", headers=h)).json()["total"] == 0
    assert (await api.client.get("/api/incidents?state=all", headers=h)).json()["total"] == 1
    sla = listed["items"][0]["sla"]
    assert sla["counts_wall_clock"] is True and sla["breached"] is False and 0 <= sla["elapsed_s"] < 60
    r = await api.client.post(f"/api/incidents/{incident.id}/ack", headers=h)
    assert r.status_code == 200 and r.json()["acked_by"] == "tech.qp"
    store = api.consumer.store
    audit = await store.fetch(sa.select(audit_log).where(audit_log.c.action == "incident.ack"))
    assert [(a.actor, a.target) for a in audit] == [("tech.qp", "qp/kiosk-24h-1")]
    detail = (await api.client.get(f"/api/incidents/{incident.id}", headers=h)).json()
    assert any(e["entry"] == "ack" and e["actor"] == "tech.qp" for e in detail["timeline"])
    page = (await api.client.get("/api/audit?device=qp/kiosk-24h-1", headers=h)).json()
    assert page["total"] >= 1 and page["items"][0]["action"] == "incident.ack"
    timeline = await store.fetch(sa.select(incident_timeline).where(incident_timeline.c.entry == "ack"))
    assert len(timeline) == 1


async def test_a_command_from_the_api_reaches_the_device_topic_and_its_acks_show(api: Api) -> None:
    await _births(api, "qp/kiosk-24h-1")
    received: list[paho.MQTTMessage] = []
    device_side = AsyncMqtt(centre_link(MqttConfig(host=api.mosquitto.host, port=api.mosquitto.port), "dev"))
    device_side.on_message = received.append
    await device_side.connect()
    try:
        await device_side.subscribe([(topics.cmd("qp", "kiosk-24h-1"), 1)])
        h = await api.login("tech.qp")
        body = {"device": "qp/kiosk-24h-1", "name": "restart_app", "args": {}, "reason": "界面卡死"}
        r = await api.client.post("/api/commands", json=body, headers=h)
        assert r.status_code == 201, r.text
        cmd = r.json()
        assert cmd["state"] == "queued" and cmd["issuer"] == "tech.qp"
        await wait_until(lambda: _async(bool(received)), 10, "the command on the device's cmd topic")
        sent = json.loads(received[0].payload)
        assert sent["id"] == cmd["id"] and sent["name"] == "restart_app" and sent["reason"] == "界面卡死"
    finally:
        await device_side.disconnect()
    dev = api.device("qp/kiosk-24h-1")
    for state in ("delivered", "running", "succeeded"):
        ack = {"command_id": cmd["id"], "name": "restart_app", "state": state}
        await asyncio.to_thread(
            dev.event, "command.ack", ack | ({"result": {"healthy": True}} if state == "succeeded" else {})
        )

    async def done() -> Any:
        got = (await api.client.get(f"/api/commands/{cmd['id']}", headers=h)).json()
        return got if got["state"] == "succeeded" else None

    final = await wait_until(done, 10, "the command to succeed")
    assert final["result"] == {"healthy": True}
    audit = (await api.client.get("/api/audit?device=qp/kiosk-24h-1", headers=h)).json()["items"]
    issued = [a for a in audit if a["action"] == "command.issue"]
    assert issued and issued[0]["actor"] == "tech.qp" and issued[0]["reason"] == "界面卡死"
    wz = await api.login("tech.wz")
    assert (await api.client.get(f"/api/commands/{cmd['id']}", headers=wz)).status_code == 404, "not theirs"


async def _async(value: Any) -> Any:
    return value


async def test_the_signed_ack_link_confirms_before_acknowledging_and_a_forged_one_does_nothing(api: Api) -> None:
    await _births(api, "qp/kiosk-24h-1")
    incident = await _offline(api, "qp/kiosk-24h-1")
    token = sign_ack(api.secret, incident.id, datetime.now(UTC) + timedelta(hours=1))
    page = await api.client.get(f"/ack/{token}")
    assert page.status_code == 200 and "qp/kiosk-24h-1" in page.text and 'id="ack-submit"' in page.text
    assert (await api.incident("qp/kiosk-24h-1")).acked_at is None, "opening the link alone acknowledges nothing"
    forged = sign_ack(b"another secret of thirty-two bytes", incident.id, datetime.now(UTC) + timedelta(hours=1))
    for bad in (forged, f"{incident.id}.AAAAAAAAAAAAAAAAAAAA", "garbage"):
        assert (await api.client.post(f"/ack/{bad}")).status_code == 404
    assert (await api.incident("qp/kiosk-24h-1")).acked_at is None
    done = await api.client.post(f"/ack/{token}")
    assert done.status_code == 200 and 'id="ack-done"' in done.text
    row = await api.incident("qp/kiosk-24h-1")
    assert row.acked_at is not None and row.acked_by == "ack-link"
    assert done.headers["referrer-policy"] == "same-origin"


async def test_metrics_count_devices_incidents_and_undelivered_notifications(api: Api) -> None:
    await _births(api, "qp/kiosk-24h-1", "qp/kiosk-2")
    await _offline(api, "qp/kiosk-24h-1")
    text = (await api.client.get("/metrics")).text
    assert 'hallfleet_devices{presence="online",site="qp"} 1.0' in text
    assert 'hallfleet_devices{presence="offline",site="qp"} 1.0' in text
    assert 'hallfleet_incidents_open{severity="critical",site="qp"} 1.0' in text
    assert 'hallfleet_notifications{state="failed"} 0.0' in text
    assert "# TYPE hallfleet_dead_letters gauge" in text


async def test_attendance_day_and_monthly_workbook_for_window_management(api: Api) -> None:
    h = await api.login("wm.qp")
    r = await api.client.get("/api/attendance/qp/2026-11-23", headers=h)
    assert r.status_code == 200 and r.json() == []
    r = await api.client.get("/api/reports/attendance/qp/2026-11.xlsx", headers=h)
    assert r.status_code == 200 and r.content[:2] == b"PK"
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert (await api.client.get("/api/reports/attendance/wz/2026-11.xlsx", headers=h)).status_code == 403


async def test_hallfleet_user_add_creates_a_user_who_can_log_in(api: Api, tmp_path: Path) -> None:
    from hallfleet.cli import main

    url = str(api.consumer.store.engine.url.render_as_string(hide_password=False))
    (tmp_path / "consumer.toml").write_text(f'[store]\nurl = "{url}"\n')
    cfg = tmp_path / "api.toml"
    cfg.write_text('centre_config = "consumer.toml"\nport = 8099\n')
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    rc = await asyncio.to_thread(
        main,
        [
            "user",
            "add",
            "li.na",
            "--role",
            "technician",
            "--sites",
            "qp",
            "--password-file",
            str(pw),
            "--config",
            str(cfg),
        ],
    )
    assert rc == 0
    r = await api.client.post("/api/login", json={"username": "li.na", "password": "a long enough password"})
    assert r.status_code == 200 and r.json()["sites"] == ["qp"] and r.json()["role"] == "technician"
    again = await asyncio.to_thread(
        main, ["user", "add", "li.na", "--role", "technician", "--password-file", str(pw), "--config", str(cfg)]
    )
    assert again == 1
    audit = await api.consumer.store.fetch(
        sa.select(audit_log).where(audit_log.c.target == "user:li.na", ~audit_log.c.action.startswith("auth."))
    )
    assert [(a.action, a.actor) for a in audit] == [("user.add", current_user())], "the CLI's writes are audited too"


async def test_every_page_renders_for_the_roles_that_may_see_it(api: Api) -> None:
    await _births(api, "qp/kiosk-24h-1")
    login = f"username=wm.qp&password={PASSWORD.replace(' ', '+')}&next=/"
    assert (await api.client.post("/login", content=login)).status_code == 303
    html = {"Accept": "text/html"}
    devices = await api.client.get("/", headers=html)
    assert devices.status_code == 200 and 'id="dev-qp--kiosk-24h-1"' in devices.text and "在线" in devices.text
    assert "<svg" in devices.text and "<script nonce=" in devices.text and "src=" not in devices.text
    assert "script-src 'nonce-" in devices.headers["content-security-policy"]
    attendance = await api.client.get("/attendance?site=qp&day=2026-11-23", headers=html)
    assert attendance.status_code == 200 and "/api/reports/attendance/qp/2026-11.xlsx" in attendance.text
    assert (await api.client.get("/attendance?site=wz", headers=html)).status_code == 403
    ratings = await api.client.get("/ratings", headers=html)
    assert ratings.status_code == 200 and 'id="tally"' in ratings.text and 'href="/ratings"' in ratings.text
    assert (await api.client.get("/ratings?site=wz", headers=html)).status_code == 403
    assert (await api.client.get("/users", headers=html)).status_code == 403, "users are the IT section's"
    assert 'href="/users"' not in ratings.text
    assert 'href="/consumables"' not in ratings.text, "no link to a page the role may not see"
    english = await api.client.get("/?lang=en", headers=html)
    assert "online" in english.text and "lang=en" in english.headers["set-cookie"]
    assert "Devices" in (await api.client.get("/", headers=html)).text, "the language is remembered"
    await api.client.post("/logout")
    api.client.cookies.clear()
    login = f"username=viewer&password={PASSWORD.replace(' ', '+')}&next=/consumables"
    assert (await api.client.post("/login", content=login)).status_code == 303
    assert (await api.client.get("/consumables", headers=html)).status_code == 200
    assert (await api.client.get("/attendance", headers=html)).status_code == 403, "readonly sees no staff data"
    assert (await api.client.get("/ratings", headers=html)).status_code == 403, "nor ratings of staff"


async def test_consumer_metrics_helper_exposes_its_ingest_counters(api: Api) -> None:
    from broker.api.metrics import serve_consumer_metrics

    await _births(api, "qp/kiosk-24h-1")
    port = free_port()
    server, thread = serve_consumer_metrics(api.consumer.consumer, port)
    try:
        async with httpx.AsyncClient() as plain:
            text = (await plain.get(f"http://127.0.0.1:{port}/metrics")).text
    finally:
        server.shutdown()
        thread.join(5)
    received = next(line for line in text.splitlines() if line.startswith("hallfleet_consumer_received_total"))
    assert float(received.split()[-1]) >= 1
    assert "hallfleet_broker_dropped" in text


async def test_hallfleet_api_says_ready_to_systemd_and_serves_with_its_own_mqtt_link(
    mosquitto: LocalMosquitto, sqlite_url: str, tmp_path: Path, procs: list[Proc], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    (tmp_path / "consumer.toml").write_text(
        f'[store]\nurl = "{sqlite_url}"\n[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n'
    )
    (tmp_path / "api.toml").write_text(f'centre_config = "consumer.toml"\nport = {port}\n')
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify.sock"))
        sock.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
        api = Proc("api", ["api", "--config", str(tmp_path / "api.toml")], tmp_path)
        procs.append(api.start())
        ready = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 1024), 60)
        assert ready == b"READY=1", api.log()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as plain:
        health = await wait_until(lambda: _health(plain), 10, "the API's MQTT link")
        assert health == {"store": "ok", "mqtt": "connected"}
        assert (await plain.get("/api/devices")).status_code == 401
        assert (await plain.get("/openapi.json")).status_code == 401, "the schema is for people who log in"
        store = await Store.open(sqlite_url)
        await add_user(store, "it.chen", PASSWORD, "it_admin", ("*",), datetime.now(UTC))
        await store.close()
        token = (await plain.post("/api/login", json={"username": "it.chen", "password": PASSWORD})).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        schema = (await plain.get("/openapi.json", headers=headers)).json()
        assert schema["paths"]["/api/commands"]["post"] and schema["paths"]["/api/ratings/followups/{event_id}/reply"]
        docs = await plain.get("/docs", headers=headers)
        assert docs.status_code == 200 and "/openapi.json" in docs.text
        assert (await plain.get("/metrics")).status_code == 200, "a scraper on this host, not through a proxy"
        proxied = await plain.get("/metrics", headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 403, "what the TLS proxy forwards is refused without a token"
        async with plain.stream("GET", "/events/stream", headers=headers) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            # Stopping with a live page open still ends promptly and cleanly.
            assert await asyncio.to_thread(api.terminate, 15) == 0, api.log()


async def _health(client: httpx.AsyncClient) -> Any:
    body = (await client.get("/healthz")).json()
    return body if body["mqtt"] == "connected" else None


# -- ratings and their follow-ups ------------------------------------------------------------------------
def _rating_event(site: str, window: str, level: int, at: datetime, service: str | None = "T1") -> dict[str, Any]:
    data = {"window": window, "staff_id": f"S-{window}", "service_id": service, "level": level, "delay_s": 8.0}
    return {
        "site": site, "device": f"pad-{window.lower()}", "id": uuid7(), "type": "rating.submitted",
        "seq": int(at.timestamp() * 1000), "boot_id": "b", "ts": at, "clock_synced": True, "replayed": False,
        "received_at": at, "data": json.dumps(data),
    }  # fmt: skip


async def _ratings(api: Api) -> dict[str, str]:
    """Six ratings now: qp W1 5/5/1, qp W2 4/2, wz W1 1; the rating jobs open their follow-ups. Returns the
    event ids of the negative ones by name."""
    now = datetime.now(UTC)
    rows = [
        _rating_event("qp", "W1", 5, now - timedelta(seconds=50)),
        _rating_event("qp", "W1", 5, now - timedelta(seconds=40)),
        _rating_event("qp", "W1", 1, now - timedelta(seconds=30)),
        _rating_event("qp", "W2", 4, now - timedelta(seconds=20)),
        _rating_event("qp", "W2", 2, now - timedelta(seconds=10), service=None),
        _rating_event("wz", "W1", 1, now - timedelta(seconds=5)),
    ]
    store = api.consumer.store
    async with store.engine.begin() as conn:
        await conn.execute(events.insert(), rows)
    opened, _ = await RatingJobs(store, Sites({}), Router(AlertsConfig())).scan_ratings(now)
    assert len(opened) == 3
    return {"qp_w1": rows[2]["id"], "qp_w2": rows[4]["id"], "wz": rows[5]["id"]}


async def test_ratings_are_listed_by_site_window_and_level_in_pages(api: Api) -> None:
    ids = await _ratings(api)
    wm = await api.login("wm.qp")
    body = (await api.client.get("/api/ratings", headers=wm)).json()
    assert body["total"] == 5 and {r["site"] for r in body["items"]} == {"qp"}, "another site's are not counted"
    w1 = (await api.client.get("/api/ratings?window=W1", headers=wm)).json()
    assert w1["total"] == 3 and sorted(r["level"] for r in w1["items"]) == [1, 5, 5]
    bad = (await api.client.get("/api/ratings?level=1", headers=wm)).json()["items"]
    assert [(r["event_id"], r["negative"], r["followup"], r["level_label"]) for r in bad] == [
        (ids["qp_w1"], True, "reply", "非常不满意")
    ]
    seen = []
    for page in (1, 2, 3):
        got = (await api.client.get(f"/api/ratings?page={page}&size=2", headers=wm)).json()
        assert got["total"] == 5 and got["page"] == page
        seen += [r["event_id"] for r in got["items"]]
    assert len(seen) == len(set(seen)) == 5
    assert (await api.client.get("/api/ratings?site=wz", headers=wm)).status_code == 403
    tech = await api.login("tech.qp")
    assert (await api.client.get("/api/ratings", headers=tech)).status_code == 403, "ratings name staff"
    for query, field in (("level=6", "level"), ("day=2026-02-30", "day"), ("window=", "window"), ("size=0", "size")):
        r = await api.client.get(f"/api/ratings?{query}", headers=wm)
        assert r.status_code == 422 and r.json()["fields"] == [field], query
    yesterday = (datetime.now(HALL_ZONE).date() - timedelta(days=1)).isoformat()
    assert (await api.client.get(f"/api/ratings?day={yesterday}", headers=wm)).json()["total"] == 0


async def test_a_followup_is_answered_and_rectified_once_by_its_sites_window_management(api: Api) -> None:
    ids = await _ratings(api)
    await add_user(api.consumer.store, "wm.wz", PASSWORD, "window_management", ("wz",), datetime.now(UTC))
    wm, other, tech = await api.login("wm.qp"), await api.login("wm.wz"), await api.login("tech.qp")
    listed = (await api.client.get("/api/ratings/followups", headers=wm)).json()
    assert listed["total"] == 2 and {f["event_id"] for f in listed["items"]} == {ids["qp_w1"], ids["qp_w2"]}
    real = next(f for f in listed["items"] if f["event_id"] == ids["qp_w1"])
    assert real["state"] == "reply" and real["real_name"] and real["reply_due"] and not real["overdue"]
    anonymous = next(f for f in listed["items"] if f["event_id"] == ids["qp_w2"])
    assert anonymous["state"] == "classify" and anonymous["reply_due"] is None

    url = f"/api/ratings/followups/{ids['qp_w1']}"
    answer = {"text": "已电话回访, 致歉并说明材料要求", "objective": True}
    assert (await api.client.post(f"{url}/reply", json=answer, headers=other)).status_code == 404, "another site"
    assert (await api.client.post(f"{url}/reply", json=answer, headers=tech)).status_code == 403, "technician"
    wz_url = f"/api/ratings/followups/{ids['wz']}/reply"
    assert (await api.client.post(wz_url, json=answer, headers=wm)).status_code == 404, "another site's"
    for body, field in (({"text": "   "}, "text"), ({}, "text"), ({"text": "x", "objective": "maybe"}, "objective")):
        r = await api.client.post(f"{url}/reply", json=body, headers=wm)
        assert r.status_code == 422 and r.json()["fields"] == [field], body
    r = await api.client.post(f"{url}/reply", json={"text": "ok", "by": "someone else"}, headers=wm)
    assert r.status_code == 422 and r.json()["fields"] == ["by"]
    assert (await api.client.post("/api/ratings/followups/nope/reply", json=answer, headers=wm)).status_code == 404

    done = await api.client.post(f"{url}/reply", json=answer, headers=wm)
    assert done.status_code == 200, done.text
    got = done.json()
    assert got["replied_by"] == "wm.qp" and got["objective"] is True and got["state"] == "rectify"
    assert got["rectify_due"] is not None
    again = await api.client.post(f"{url}/reply", json=answer, headers=wm)
    assert again.status_code == 409 and "answered already" in again.json()["detail"]
    fixed = await api.client.post(f"{url}/rectify", json={"text": "窗口增设材料清单"}, headers=wm)
    assert fixed.status_code == 200 and fixed.json()["state"] == "done" and fixed.json()["rectified_by"] == "wm.qp"
    assert (await api.client.post(f"{url}/rectify", json={"text": "x"}, headers=wm)).status_code == 409
    assert (await api.client.get("/api/ratings/followups?state=done", headers=wm)).json()["total"] == 1
    assert (await api.client.get("/api/ratings/followups?state=soon", headers=wm)).json()["fields"] == ["state"]
    audit = await api.consumer.store.fetch(sa.select(audit_log).where(audit_log.c.action.like("rating.%")))
    assert sorted((a.action, a.actor, a.target) for a in audit) == [
        ("rating.classify", "wm.qp", "qp/pad-w1"),
        ("rating.rectify", "wm.qp", "qp/pad-w1"),
        ("rating.reply", "wm.qp", "qp/pad-w1"),
    ]


async def test_the_ratings_page_shows_the_days_windows_and_answers_a_followup(api: Api) -> None:
    ids = await _ratings(api)
    login = f"username=wm.qp&password={PASSWORD.replace(' ', '+')}&next=/ratings"
    assert (await api.client.post("/login", content=login)).status_code == 303
    page = await api.client.get("/ratings", headers={"Accept": "text/html"})
    assert page.status_code == 200 and f'id="fu-{ids["qp_w1"]}"' in page.text and "待回复" in page.text
    assert "66.7%" in page.text and "50.0%" in page.text, "W1: 2 of 3 satisfied; W2: 1 of 2"
    form = f"text={quote('已回访')}&objective=no"
    r = await api.client.post(f"/ratings/followups/{ids['qp_w1']}/reply", content=form)
    assert r.status_code == 303 and f"saved={ids['qp_w1']}" in r.headers["location"]
    after = await api.client.get(r.headers["location"], headers={"Accept": "text/html"})
    assert "已回访" in after.text and 'id="saved"' in after.text
    empty = await api.client.post(f"/ratings/followups/{ids['qp_w2']}/rectify", content="text=")
    assert empty.status_code == 422
    assert (await api.client.get("/ratings?site=wz", headers={"Accept": "text/html"})).status_code == 403


# -- on-site dispatch ------------------------------------------------------------------------------------
async def test_a_dispatch_is_opened_by_the_sites_technician_once_then_moves_on_site(api: Api) -> None:
    await _births(api, "qp/kiosk-24h-1")
    incident = await _offline(api, "qp/kiosk-24h-1")
    url = f"/api/incidents/{incident.id}/dispatch"
    for name, refused in (("tech.wz", 404), ("viewer", 403), ("wm.qp", 403)):  # 404: not their site's
        r = await api.client.post(url, json={"note": "请上门"}, headers=await api.login(name))
        assert r.status_code == refused, name
    hook = {"type": "webhook", "url": "http://127.0.0.1:9/hook"}
    alerts = {"channels": {"hook": hook}, "recipients": {"ops": {"role": "technician", "channel": "hook"}}}
    api.app.state.router = Router(AlertsConfig.model_validate(alerts))
    h = await api.login("tech.qp")
    for body, field in (({"state": "gone"}, "state"), ({"note": "x" * 1001}, "note"), ({"who": 1}, "who")):
        r = await api.client.post(url, json=body, headers=h)
        assert r.status_code == 422 and r.json()["fields"] == [field], body
    assert (await api.client.post("/api/incidents/nope/dispatch", headers=h)).status_code == 404
    opened = await api.client.post(url, json={"note": "打印机卡纸, 请上门"}, headers=h)
    assert opened.status_code == 200, opened.text
    d = opened.json()
    assert d["state"] == "open" and d["incident_id"] == incident.id and d["key"] == "qp/kiosk-24h-1"
    assert datetime.fromisoformat(d["due_at"]) > datetime.fromisoformat(d["opened_at"])
    pages = await api.consumer.store.fetch(sa.select(notifications).where(notifications.c.step == "dispatch"))
    assert [(p.recipient, p.ref) for p in pages] == [("ops", f"incident:{incident.id}")], "the technicians are paged"
    assert "tech.qp 派单" in pages[0].body and "打印机卡纸" in pages[0].body
    twice = await api.client.post(url, headers=h)
    assert twice.status_code == 409 and "dispatched already" in twice.json()["detail"]
    arrived = await api.client.post(url, json={"state": "on_site"}, headers=h)
    assert arrived.json()["state"] == "on_site" and arrived.json()["technician"] == "tech.qp"
    detail = (await api.client.get(f"/api/incidents/{incident.id}", headers=h)).json()
    assert any("派单上门" in e["text"] and e["actor"] == "tech.qp" for e in detail["timeline"])
    audit = (await api.client.get("/api/audit?device=qp/kiosk-24h-1", headers=h)).json()["items"]
    assert [a["action"] for a in audit if a["action"].startswith("dispatch.")] == ["dispatch.on_site", "dispatch.open"]
    assert all(a["actor"] == "tech.qp" for a in audit if a["action"].startswith("dispatch."))


# -- users ---------------------------------------------------------------------------------------------
async def test_the_it_admin_creates_resets_and_disables_users_and_nobody_else_may(api: Api) -> None:
    admin = await api.login("admin")
    tech = await api.login("tech.qp")
    new = {"username": "zhao.lei", "password": "a long password 1", "role": "technician", "sites": ["qp"]}
    assert (await api.client.get("/api/users", headers=tech)).status_code == 403
    assert (await api.client.post("/api/users", json=new, headers=tech)).status_code == 403
    assert (await api.client.post("/api/users/tech.wz/disable", headers=tech)).status_code == 403
    assert (await api.client.post("/api/users/tech.wz/password", headers=tech)).status_code == 403
    for change, field in (
        ({"role": "boss"}, "role"),
        ({"password": "short"}, "password"),
        ({"sites": []}, "sites"),
        ({"sites": ["q p"]}, "sites.0"),
        ({"username": "bad name"}, "username"),
    ):
        r = await api.client.post("/api/users", json=new | change, headers=admin)
        assert r.status_code == 422 and r.json()["fields"] == [field], change
    created = await api.client.post("/api/users", json=new, headers=admin)
    assert created.status_code == 201 and created.json()["sites"] == ["qp"] and created.json()["role"] == "technician"
    assert (await api.client.post("/api/users", json=new, headers=admin)).status_code == 409
    page = (await api.client.get("/api/users?size=2&page=1", headers=admin)).json()
    assert page["total"] == 6 and len(page["items"]) == 2
    theirs = await api.client.post("/api/login", json={"username": "zhao.lei", "password": new["password"]})
    old = {"Authorization": f"Bearer {theirs.json()['token']}"}
    reset = await api.client.post("/api/users/zhao.lei/password", headers=admin)
    generated = reset.json()["password"]
    assert reset.status_code == 200 and len(generated) >= 12
    assert (await api.client.get("/api/devices", headers=old)).status_code == 401, "a reset ends their sessions"
    r = await api.client.post("/api/login", json={"username": "zhao.lei", "password": generated})
    assert r.status_code == 200
    assert (await api.client.post("/api/users/admin/disable", headers=admin)).status_code == 409, "not oneself"
    disabled = await api.client.post("/api/users/zhao.lei/disable", headers=admin)
    assert disabled.status_code == 200 and disabled.json()["disabled_at"] is not None
    r = await api.client.post("/api/login", json={"username": "zhao.lei", "password": generated})
    assert r.status_code == 401
    assert (await api.client.post("/api/users/nobody/disable", headers=admin)).status_code == 404
    audit = await api.consumer.store.fetch(sa.select(audit_log).where(audit_log.c.action.like("user.%")))
    assert sorted((a.action, a.actor, a.target) for a in audit) == [
        ("user.add", "admin", "user:zhao.lei"),
        ("user.disable", "admin", "user:zhao.lei"),
        ("user.passwd", "admin", "user:zhao.lei"),
    ]
    listed = (await api.client.get("/api/audit?size=100", headers=tech)).json()["items"]
    assert not [a for a in listed if a["target"].startswith("user:")], "a site's technician sees no user rows"


async def test_a_scoped_admin_grants_only_their_own_sites(api: Api) -> None:
    await add_user(api.consumer.store, "admin.qp", PASSWORD, "it_admin", ("qp",), datetime.now(UTC))
    h = await api.login("admin.qp")
    new = {"username": "sun.yu", "password": "a long password 2", "role": "readonly", "sites": ["wz"]}
    assert (await api.client.post("/api/users", json=new, headers=h)).status_code == 403
    assert (await api.client.post("/api/users", json=new | {"sites": ["*"]}, headers=h)).status_code == 403
    assert (await api.client.post("/api/users", json=new | {"sites": ["qp"]}, headers=h)).status_code == 201
    assert (await api.client.post("/api/users/tech.wz/disable", headers=h)).status_code == 404, "not theirs"
    names = [u["username"] for u in (await api.client.get("/api/users", headers=h)).json()["items"]]
    assert names == ["admin.qp", "sun.yu", "tech.qp", "wm.qp"]


async def test_metrics_with_a_token_file_want_that_bearer_token(api: Api, tmp_path: Path) -> None:
    token_file = tmp_path / "metrics-token"
    token_file.write_text("a-scrape-token-of-some-length\n")
    cfg = ApiConfig(cookie_secure=False, metrics_token_file=token_file)
    app = create_app(cfg, api.consumer.store, None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        assert (await client.get("/metrics")).status_code == 401, "loopback is not enough once a token is set"
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer a-scrape-token-of-some-lengtX"})
        assert wrong.status_code == 401
        ok = await client.get("/metrics", headers={"Authorization": "Bearer a-scrape-token-of-some-length"})
        assert ok.status_code == 200 and "hallfleet_notifications" in ok.text
    token_file.write_text("short")
    with pytest.raises(ConfigError, match="metrics_token_file"):
        create_app(cfg, api.consumer.store, None)


async def test_a_suspected_proxy_rating_is_reviewed_by_its_sites_window_management(api: Api) -> None:
    now = datetime.now(UTC)
    paused = _rating_event("qp", "W4", 5, now - timedelta(seconds=3))
    paused["data"] = json.dumps(json.loads(paused["data"]) | {"pad_state": "paused"})
    async with api.consumer.store.engine.begin() as conn:
        await conn.execute(events.insert(), [paused])
    _, flagged = await RatingJobs(api.consumer.store, Sites({}), Router(AlertsConfig())).scan_ratings(now)
    assert [f.pattern for f in flagged] == ["paused"]
    await add_user(api.consumer.store, "wm.wz", PASSWORD, "window_management", ("wz",), now)
    wm, other = await api.login("wm.qp"), await api.login("wm.wz")
    listed = (await api.client.get("/api/ratings?window=W4", headers=wm)).json()["items"]
    assert [r["flags"] for r in listed] == [["paused"]]
    flags = (await api.client.get("/api/ratings/flags", headers=wm)).json()
    assert flags["total"] == 1 and flags["items"][0]["detail"] and flags["items"][0]["verdict"] is None
    assert (await api.client.get("/api/ratings/flags", headers=other)).json()["total"] == 0
    url = f"/api/ratings/flags/{paused['id']}/review"
    assert (await api.client.post(url, json={"verdict": "proxy"}, headers=other)).status_code == 404
    r = await api.client.post(url, json={"verdict": "maybe"}, headers=wm)
    assert r.status_code == 422 and r.json()["fields"] == ["verdict"]
    assert (
        await api.client.post("/api/ratings/flags/nope/review", json={"verdict": "proxy"}, headers=wm)
    ).status_code == 404
    done = await api.client.post(url, json={"verdict": "proxy", "note": "监控确认为工作人员代评"}, headers=wm)
    assert done.status_code == 200 and [(f["verdict"], f["reviewed_by"]) for f in done.json()] == [("proxy", "wm.qp")]
    assert (await api.client.get("/api/ratings/flags", headers=wm)).json()["total"] == 0, "reviewed: off the list"
    audit = await api.consumer.store.fetch(sa.select(audit_log).where(audit_log.c.action == "rating.review"))
    assert [(a.actor, a.target, a.reason) for a in audit] == [("wm.qp", "qp/pad-w4", "监控确认为工作人员代评")]
