"""Proxy clocking at the centre (broker/attendance/proxy_clocking.py, clocking_jobs.py) on both store backends:
each pattern is flagged with its reason in Chinese, honest sequences are not, a scan is idempotent and tells
window management once, and a reviewer's verdict feeds the attendance record per site policy."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest
import sqlalchemy as sa

from broker.alerts.routing import AlertsConfig, RouteConfig, Router
from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.attendance.clocking_jobs import ClockingScan
from broker.attendance.clocking_report import clocking_table
from broker.attendance.exceptions import file_exception
from broker.attendance.labels import labels
from broker.attendance.model import Punch, Verdict
from broker.attendance.proxy_clocking import ClockingFlagError, detect, flags_between, review
from broker.attendance.proxy_policy import ProxyClockingPolicy
from broker.attendance.reports import text_row, write_xlsx
from broker.attendance.roster import StaffMember, import_roster
from broker.attendance.service import staff_days
from broker.config import ConsumerConfig, StoreConfig
from broker.reports.sla import month_bounds
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import audit_log, clocking_flags, events, notifications
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE
from runtime.settings import MqttConfig

SITE = "qp"
TUE = date(2026, 11, 24)  # default calendar: Mon-Fri 09:00-12:00, 13:30-17:30
ROUTE = RouteConfig(device_classes=["attendance"], steps=["proxy_suspect"], roles=["window_management"])
ALERTS = AlertsConfig.model_validate(
    {
        "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
        "recipients": {"wm": {"role": "window_management", "channel": "hook"}},
        "routes": [r.model_dump() for r in [*AlertsConfig().routes, ROUTE]],
    }
)


def sites(**policy: Any) -> Sites:
    return Sites({SITE: SiteConfig(name="青浦", proxy_clocking=ProxyClockingPolicy(**policy))})


def at(h: int, m: int = 0, s: float = 0, day: date = TUE) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, tzinfo=HALL_ZONE) + timedelta(seconds=s)


def event(kind: str, when: datetime, device: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": SITE, "device": device, "id": uuid7(), "type": kind, "seq": int(when.timestamp() * 1000),
        "boot_id": "b", "ts": when, "clock_synced": True, "replayed": False, "received_at": when,
        "data": json.dumps(data),
    }  # fmt: skip


def punch(when: datetime, staff: str, device: str = "att-1", method: str = "face") -> dict[str, Any]:
    return event("attendance.punch", when, device, {"staff_id": staff, "method": method})


def refusal(when: datetime, staff: str, device: str = "att-1") -> dict[str, Any]:
    data = {"method": "face", "reason": "not_live", "staff_id": staff, "detail": "no blink"}
    return event("attendance.punch_rejected", when, device, data)


async def insert(store: Store, *rows: dict[str, Any]) -> list[str]:
    async with store.engine.begin() as conn:
        await conn.execute(events.insert(), list(rows))
    return [r["id"] for r in rows]


async def flagged(store: Store) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in await store.fetch(sa.select(clocking_flags)):
        out.setdefault(r.event_id, set()).add(r.pattern)
    return out


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    try:
        yield s
    finally:
        await s.close()


async def test_each_pattern_is_flagged_with_its_reason_and_honest_punches_are_not(store: Store) -> None:
    """GIVEN a morning's punches at three terminals THEN: three colleagues punched 4 s apart at one terminal are a
    chain (a queue 20 s apart is not); one person at two terminals 40 s apart is too fast (not between the two
    that stand side by side); a fingerprint punch two minutes after a not_live refusal for that person is
    flagged (a face punch after it, or a fingerprint punch with no refusal, is not); a punch inside approved
    leave is flagged (one after the leave ends is not)."""
    cfg = sites(same_place=[["att-1", "att-3"]])
    await import_roster(store, [StaffMember(SITE, "S11", "张三", "区税务局", "W1", "A", date(2026, 1, 1))],
                        by="it", at=at(7))  # fmt: skip
    await file_exception(store, cfg, SITE, "S11", "leave", at(9), at(12), by="wm", at=at(7), reason="病假")
    chain = await insert(store, *(punch(at(8, 50, 4 * i), s) for i, s in enumerate(["S1", "S2", "S3"])))
    queue = await insert(store, *(punch(at(8, 52, 20 * i), s, "att-2") for i, s in enumerate(["S4", "S5", "S6"])))
    fast = await insert(store, punch(at(9), "S7", "att-1"), punch(at(9, 0, 40), "S7", "att-2"))
    side = await insert(store, punch(at(9, 5), "S8", "att-1"), punch(at(9, 5, 30), "S8", "att-3"))
    await insert(store, refusal(at(9, 10), "S9"), refusal(at(9, 10, 30), "S9"), refusal(at(9, 9), "S10"))
    fallback = await insert(store, punch(at(9, 12), "S9", method="fingerprint"))
    honest = await insert(store, punch(at(9, 12, 30), "S10"), punch(at(9, 13), "S12", method="qr"))
    leave = await insert(store, punch(at(10), "S11", "att-2"), punch(at(13), "S11", "att-2"))

    new = await ClockingScan(store, cfg, Router(ALERTS)).scan(SITE, at(14))

    found = await flagged(store)
    assert {e: found[e] for e in chain} == {e: {"chain"} for e in chain}
    assert {e: found[e] for e in fast} == {e: {"too_fast"} for e in fast}
    assert found[fallback[0]] == {"after_refusal"} and found[leave[0]] == {"on_leave"}
    assert not set(found) & {*queue, *side, *honest, leave[1]}, found
    details = {r.pattern: r.detail for r in await store.fetch(sa.select(clocking_flags))}
    assert "连续为 3 人打卡" in details["chain"] and "40 秒后又在终端 att-2 打卡" in details["too_fast"]
    assert "2 次活体检测未通过" in details["after_refusal"] and "以指纹打卡" in details["after_refusal"]
    assert "请假" in details["on_leave"]
    assert len(new) == 7 and "09:10:00 起" in details["after_refusal"]  # hall time, not UTC
    [notice] = await store.fetch(sa.select(notifications).where(notifications.c.step == "proxy_suspect"))
    assert "疑似代打卡" in notice.subject + notice.body


async def test_a_punch_on_a_day_of_leave_is_flagged_before_the_leave_begins(store: Store) -> None:
    """GIVEN S1 on leave for the whole Tuesday, filed as two pieces covering both sessions (09:00-12:00, 13:30-17:30),
    and S2 on leave for the morning only WHEN S1 is punched at 08:50, the usual sign-in time before the leave's first
    minute, and at 17:40 THEN both punches are flagged on_leave, saying the whole day was leave (before, only a punch
    inside the leave was: the 08:50 sign-in a colleague makes for someone away passed). S2's 08:50 and 13:20 punches
    are not flagged (part of the day was hers to work), nor S1's punch on Wednesday, after the leave."""
    cfg = sites()
    names = [("S1", "张三"), ("S2", "李四")]
    members = [StaffMember(SITE, staff, name, "区税务局", "W1", "A", date(2026, 1, 1)) for staff, name in names]
    await import_roster(store, members, by="it", at=at(7))
    for start, end in [(at(9), at(12)), (at(13, 30), at(17, 30))]:
        await file_exception(store, cfg, SITE, "S1", "leave", start, end, by="wm", at=at(7), reason="病假")
    await file_exception(store, cfg, SITE, "S2", "leave", at(9), at(12), by="wm", at=at(7), reason="事假")
    away = await insert(store, punch(at(8, 50), "S1"), punch(at(17, 40), "S1", "att-2"))
    honest = await insert(store, punch(at(8, 50, 30), "S2", "att-2"), punch(at(13, 20), "S2"))
    wednesday = await insert(store, punch(at(8, 50, day=TUE + timedelta(days=1)), "S1"))

    await ClockingScan(store, cfg, Router(ALERTS)).scan(SITE, at(18, day=TUE + timedelta(days=1)))

    found = await flagged(store)
    assert {e: found.get(e) for e in away} == {e: {"on_leave"} for e in away}, found
    assert not set(found) & {*honest, *wednesday}, found
    rows = await store.fetch(sa.select(clocking_flags).order_by(clocking_flags.c.punched_at))
    detail = rows[0].detail
    assert detail == "11-24 全天请假 (登记人 wm), 当天 08:50 打卡", detail


async def test_a_scan_is_idempotent_and_a_reviewed_flag_stays_reviewed(store: Store) -> None:
    """GIVEN a chain flagged and one of its punches reviewed WHEN the same days are scanned again THEN nothing new
    is raised, no second notice goes out, and the review stands; a bad verdict or an unknown id is refused."""
    cfg = sites()
    ids = await insert(store, *(punch(at(8, 50, 3 * i), s) for i, s in enumerate(["S1", "S2", "S3"])))
    scan = ClockingScan(store, cfg, Router(ALERTS))
    assert len(await scan.scan(SITE, at(14))) == 3
    rows = await review(store, ids[0][:20], "honest", by="wm", at=at(15), note="排队, 已看录像")
    assert [r.verdict for r in rows] == ["honest"]
    assert await scan.scan(SITE, at(16)) == []
    assert len(await store.fetch(sa.select(notifications).where(notifications.c.step == "proxy_suspect"))) == 1
    [row] = await store.fetch(sa.select(clocking_flags).where(clocking_flags.c.event_id == ids[0]))
    assert (row.verdict, row.reviewed_by) == ("honest", "wm")
    [logged] = await store.fetch(sa.select(audit_log).where(audit_log.c.action == "clocking.review"))
    assert logged.actor == "wm"
    with pytest.raises(ClockingFlagError, match="proxy"):
        await review(store, ids[1], "maybe", by="wm", at=at(15))  # type: ignore[arg-type]
    with pytest.raises(ClockingFlagError, match="no flagged punch"):
        await review(store, "nope", "proxy", by="wm", at=at(15))


@pytest.mark.parametrize(("confirmed", "verdict"), [("not_counted", Verdict.MISSING_IN), ("noted", Verdict.ON_TIME)])
async def test_a_confirmed_proxy_punch_feeds_the_record_per_site_policy(
    store: Store, confirmed: str, verdict: Verdict
) -> None:
    """GIVEN S1's face refused as not live, then a fingerprint sign-in two minutes later (flagged after_refusal) and
    an honest sign-out WHEN a reviewer confirms the sign-in as proxy clocking THEN with the default policy the
    day is judged without it (未签到: 非正常考勤 unless evidence is filed), and with "noted" it still counts.
    Before the review the flag changes nothing."""
    cfg = sites(confirmed=confirmed)
    await import_roster(store, [StaffMember(SITE, "S1", "张三", "区税务局", "W1", "A", date(2026, 1, 1))],
                        by="it", at=at(7))  # fmt: skip
    await insert(store, refusal(at(8, 50), "S1"))
    [sign_in] = await insert(store, punch(at(8, 52), "S1", method="fingerprint"))
    await insert(store, punch(at(17, 40), "S1", "att-2"))
    await ClockingScan(store, cfg, Router(ALERTS)).scan(SITE, at(18))
    [before] = await staff_days(store, cfg, SITE, TUE, TUE, now=at(20))
    assert before.verdict == Verdict.ON_TIME
    await review(store, sign_in, "proxy", by="wm", at=at(19), note="监控显示本人未到")
    [after] = await staff_days(store, cfg, SITE, TUE, TUE, now=at(20))
    assert after.verdict == verdict, after
    left_out = [n for n in after.notes if n.startswith("经核查确认为代打卡, 不计")]
    assert left_out == (["经核查确认为代打卡, 不计: 08:52 指纹"] if confirmed != "noted" else []), after.notes


async def test_the_monthly_report_lists_each_flag_with_its_review(store: Store, tmp_path: Path) -> None:
    """GIVEN a flag confirmed as proxy clocking and one not reviewed THEN the month's sheet 疑似代打卡核查 lists both in
    time order, in the hall's words, the confirmed one highlighted."""
    cfg = sites()
    members = [StaffMember(SITE, "S1", "张三", "区税务局", "W1", "A", date(2026, 1, 1))]
    await insert(store, refusal(at(8, 50), "S1"))
    [confirmed] = await insert(store, punch(at(8, 52), "S1", method="fingerprint"))
    await insert(store, *(punch(at(9, 0, 3 * i), s, "att-2") for i, s in enumerate(["S2", "S3", "S4"])))
    await ClockingScan(store, cfg, Router(ALERTS)).scan(SITE, at(18))
    await review(store, confirmed, "proxy", by="wm", at=at(19))
    start, end = month_bounds("2026-11", HALL_ZONE)
    async with store.engine.connect() as conn:
        flags = await flags_between(conn, SITE, start, end)
    table = clocking_table(flags, members, "2026-11", zone=HALL_ZONE, site_name="青浦")
    w = labels("zh-CN")
    lines = [text_row(table, r, w) for r in table.rows]
    assert [r.flag for r in table.rows] == [True, False, False, False]
    assert lines[0][:9] == ["2026-11-24 08:52", "2026-11-24", "区税务局", "W1", "S1", "张三", "att-1", "指纹",
                            "人脸活体未通过后改用其他方式打卡"]  # fmt: skip
    assert lines[0][-1] == "属实代打卡" and {line[-1] for line in lines[1:]} == {"待核查"}
    write_xlsx([table], tmp_path / "m.xlsx")
    assert openpyxl.load_workbook(tmp_path / "m.xlsx").sheetnames == ["疑似代打卡核查"]


def test_two_colleagues_are_no_chain_and_a_disabled_policy_flags_nothing() -> None:
    """chain_count 3: two different people 2 s apart are a pair at the door, not a chain; the same person twice
    is one person. enabled=false: nothing at all."""

    def p(i: int, staff: str, s: float) -> Punch:
        return Punch(f"e{i}", staff, at(8, 50, s), "face", "att-1")

    pair = [p(0, "S1", 0), p(1, "S2", 2), p(2, "S2", 4)]
    assert detect(pair, [], {}, ProxyClockingPolicy(), HALL_ZONE) == []
    chain = [*pair, p(3, "S3", 6)]
    assert {f.pattern for f in detect(chain, [], {}, ProxyClockingPolicy(), HALL_ZONE)} == {"chain"}
    assert detect(chain, [], {}, ProxyClockingPolicy(enabled=False), HALL_ZONE) == []


# -- the API and the dashboard ---------------------------------------------------------------------------
PASSWORD = "correct horse battery"


@pytest.fixture
async def client(store: Store, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    centre = ConsumerConfig(
        instance="clocking-test", mqtt=MqttConfig(host="127.0.0.1", port=1), store=StoreConfig(url="sqlite://"),
        sites={SITE: SiteConfig(name="青浦"), "wz": SiteConfig(name="万州")},
    )  # fmt: skip
    now = datetime.now(UTC)
    for name, role, site in [("wm.qp", "window_management", "qp"), ("wm.wz", "window_management", "wz"),
                             ("tech.qp", "technician", "qp")]:  # fmt: skip
        await add_user(store, name, PASSWORD, role, (site,), now)
    app = create_app(ApiConfig(centre=centre, cookie_secure=False), store, None)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hallfleet.test") as c:
        yield c


async def login(client: httpx.AsyncClient, name: str) -> dict[str, str]:
    r = await client.post("/api/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def test_flags_show_on_the_attendance_page_and_its_window_management_reviews_them(
    store: Store, client: httpx.AsyncClient
) -> None:
    """GIVEN a chain flagged at qp THEN qp's window management sees it in the API and on the attendance page with
    the review buttons, and confirms one punch from the page's form (audited, off the list); another site's
    window management sees none and gets 404 on the review; a technician may read but not review."""
    ids = await insert(store, *(punch(at(8, 50, 3 * i), s) for i, s in enumerate(["S1", "S2", "S3"])))
    await ClockingScan(store, sites(), Router(ALERTS)).scan(SITE, at(14))
    wm, other, tech = await login(client, "wm.qp"), await login(client, "wm.wz"), await login(client, "tech.qp")
    listed = (await client.get("/api/attendance/clocking-flags", headers=wm)).json()
    assert listed["total"] == 3 and {f["pattern"] for f in listed["items"]} == {"chain"}
    assert (await client.get("/api/attendance/clocking-flags", headers=other)).json()["total"] == 0
    page = await client.get(f"/attendance?site={SITE}&day={TUE}", headers=wm)
    assert page.status_code == 200 and "疑似代打卡待核查" in page.text and "属实代打卡" in page.text
    assert f"/attendance/clocking-flags/{ids[0]}/review" in page.text
    url = f"/api/attendance/clocking-flags/{ids[0]}/review"
    assert (await client.post(url, json={"verdict": "proxy"}, headers=other)).status_code == 404
    assert (await client.post(url, json={"verdict": "proxy"}, headers=tech)).status_code == 403
    r = await client.post(url, json={"verdict": "maybe"}, headers=wm)
    assert r.status_code == 422
    form = await client.post(f"/attendance/clocking-flags/{ids[0]}/review", data={"verdict": "proxy"}, headers=wm)
    assert form.status_code == 303 and form.headers["location"] == f"/attendance?site={SITE}&day={TUE}"
    assert (await client.get("/api/attendance/clocking-flags", headers=wm)).json()["total"] == 2
    [logged] = await store.fetch(sa.select(audit_log).where(audit_log.c.action == "clocking.review"))
    assert (logged.actor, logged.target) == ("wm.qp", f"{SITE}/att-1")


async def test_the_dashboards_monthly_workbook_is_the_one_the_cli_writes(
    store: Store, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """GIVEN a chain flagged at qp in November WHEN window management downloads the month's workbook from the
    dashboard THEN it holds the same sheets as `hallfleet attendance month` writes (the 疑似代打卡核查 sheet with the
    three flags and the summary with the chain heads): the download had lost the proxy-clocking sheet."""
    import asyncio
    import io

    from hallfleet.cli import main

    await insert(store, *(punch(at(8, 50, 3 * i), s) for i, s in enumerate(["S1", "S2", "S3"])))
    await ClockingScan(store, sites(), Router(ALERTS)).scan(SITE, at(14))
    wm = await login(client, "wm.qp")
    r = await client.get(f"/api/reports/attendance/{SITE}/2026-11.xlsx", headers=wm)
    assert r.status_code == 200, r.text
    book = openpyxl.load_workbook(io.BytesIO(r.content))
    assert "疑似代打卡核查" in book.sheetnames and "汇总" in book.sheetnames, book.sheetnames
    flagged = [row for row in book["疑似代打卡核查"].iter_rows(values_only=True) if "S2" in map(str, row)]
    assert flagged, list(book["疑似代打卡核查"].iter_rows(values_only=True))
    config, out = tmp_path / "centre.toml", tmp_path / "cli.xlsx"
    url = store.engine.url.render_as_string(hide_password=False)
    config.write_text(f'[store]\nurl = "{url}"\n[sites.{SITE}]\nname = "青浦"\n', encoding="utf-8")
    argv = ["attendance", "month", SITE, "2026-11", "--out", str(out), "--config", str(config)]
    assert await asyncio.to_thread(main, argv) == 0
    assert openpyxl.load_workbook(out).sheetnames == book.sheetnames
