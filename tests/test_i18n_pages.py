"""Every dashboard page in Chinese and in English, with data that has every device kind, presence, incident kind
and state, severity, consumable and its states, command and its states, event type and attendance verdict the
pages show (tests/support/fleet_seed.py, 400 devices, plus a roster and punches for a hall that went live this
week): no template asks for a word the language lacks, no raw enum value is left on the zh page, and no Chinese
enum word on the en page. The monthly chart of that hall judges nothing before its go-live and shows today's
provisional verdicts (在岗 / 未到岗) as in progress, not as absences."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.responses import HTMLResponse

from broker.alerts.acklinks import sign_ack
from broker.alerts.routing import AlertsConfig, Router
from broker.api import pages
from broker.api.app import create_app
from broker.api.auth import add_user
from broker.api.config import ApiConfig
from broker.api.fleet_words import ENUMS, FLEET_EN, FLEET_ZH
from broker.api.hall_words import HALL_EN, HALL_ZH
from broker.api.i18n import EN, ZH
from broker.api.queue_words import QUEUE_EN, QUEUE_ZH
from broker.attendance.labels import VERDICT_ZH
from broker.attendance.model import Verdict
from broker.attendance.roster import StaffMember, import_roster
from broker.config import ConsumerConfig, StoreConfig
from broker.queueing.jobs import QueueJobs
from broker.rules.devices import Registered, register_devices
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import events, incidents
from hallfleet.demo_scenario import load_sites
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE
from runtime.settings import MqttConfig
from tests.support.fleet_seed import FOCUS, INCIDENT_KINDS, seed_fleet
from tests.support.hall import ManualClock
from tests.support.hall_duties import add_alarm, add_device, add_event, devices_of, netcheck

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # Monday 7 December, 10:00 in the halls
GO_LIVE = date(2026, 12, 3)  # Thursday: qingpu went live this week
PASSWORD = "correct horse battery"
ACK_SECRET = b"ack-links-secret-of-32-bytes-or-more"
MISSING = "⟦missing word: {}⟧"
PAGES = (
    "/",
    "/?pp=2",
    "/?page=2&state=offline",
    "/?state=registered",
    f"/devices/{FOCUS}",
    "/devices/qingpu/kiosk-new",
    "/devices/qingpu/attendance-0002",
    "/incidents",
    "/consumables",
    "/consumables?page=2",
    "/attendance?site=qingpu&day=2026-12-07",
    "/ratings",
    "/users",
    "/access",
    "/access?site=qingpu",
    "/duties?site=qingpu&day=2026-12-07",
    "/queue?site=qingpu",
)
# Raw values a page must never print on the zh page (each has a word in fleet_words, i18n or the rules).
RAW = (
    {v for table in ENUMS.values() for v in table if v}
    | {"online", "stale", "offline", "shutdown", "unknown", "registered", "open", "recovering", "closed"}
    | {"critical", "major", "minor", "info", "queued", "delivered", "running", "succeeded", "failed", "rejected"}
    | {k for k, _ in INCIDENT_KINDS}
    | {"thermal_paper", "toner:black", "a4_paper:tray-1", "a4_paper:tray-2", "waste", "hall_outage"}
    | {v.value for v in Verdict}
    # the access and duties pages' states and verdicts (broker/api/hall_words.py)
    | {"open", "closed", "locked", "unlocked", "ok", "unreachable", "failed", "missing", "pending", "late"}
    | {"left_on", "not_on", "not_off", "unclean", "done", "missed", "gateway", "dns", "centre", "extranet"}
    | {"door_forced", "locker_overdue", "locker_door_fault", "held_open", "forced"}
    # the queue page's wait classes, pad states and alert states (broker/api/queue_words.py)
    | {"general", "complex", "special", "idle", "serving", "awaiting", "paused", "please_wait", "told"}
)
# Daily duties of qingpu on the test day (10:00): one round done, one missed, one to come; departments' machines.
DUTIES = {
    "patrol": {"rounds": [{"name": "早班", "start": "08:00", "end": "09:00"},
                          {"name": "上午", "start": "09:00", "end": "09:30"},
                          {"name": "下午", "start": "13:40", "end": "14:40"}]},
    "power": {"departments": {"税务": ["tax-*"], "社保": ["social-*"]}, "on_by": "09:00"},
}  # fmt: skip

# qingpu's queue (排队叫号): one service of each class of QP 000:368, windows 03 and 05 (see _queue).
QUEUEING = {
    "services": {
        "A": {"name": "社保综合", "windows": ["03"]},
        "B": {"wait_class": "complex", "windows": ["05"]},
        "C": {"wait_class": "special"},
    }
}


class Words(dict[str, str]):
    """The page's words, marking any key a template asks for that the language does not have."""

    def __missing__(self, key: str) -> str:
        return MISSING.format(key)


class VisibleText(HTMLParser):
    """Text a person reads: no tags, attributes, scripts, styles, or <code> (raw device payloads on purpose)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        self.skip += tag in ("script", "style", "code")

    def handle_endtag(self, tag: str) -> None:
        self.skip -= tag in ("script", "style", "code")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def visible_tokens(html: str) -> set[str]:
    p = VisibleText()
    p.feed(html)
    return set(re.split(r"[\s,;()（）:：·/=<>\[\]{}\"'，。|+]+", " ".join(p.parts))) | set(" ".join(p.parts).split())


@dataclass(frozen=True)
class Dashboard:
    client: httpx.AsyncClient
    app: FastAPI
    store: Store


@pytest.fixture
def client(dashboard: Dashboard) -> httpx.AsyncClient:
    return dashboard.client


@pytest.fixture
async def dashboard(sqlite_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Dashboard]:
    store = await Store.open(sqlite_url)
    await seed_fleet(store, NOW, per_hall=20, per_device_events=2)
    await _attendance(store)
    await _registered(store)
    await add_user(store, "admin", PASSWORD, "it_admin", ("*",), NOW)
    await add_user(store, "tech.qp", PASSWORD, "technician", ("qingpu",), NOW)
    (tmp_path / "ack-secret").write_bytes(ACK_SECRET)
    alerts = AlertsConfig(ack_base_url="https://hallfleet.test/ack", ack_secret_file=tmp_path / "ack-secret")
    sites = load_sites()
    sites["qingpu"]["go_live"] = GO_LIVE.isoformat()
    sites["qingpu"]["duties"] = DUTIES
    sites["qingpu"]["queueing"] = QUEUEING
    centre = ConsumerConfig(instance="i18n", mqtt=MqttConfig(host="127.0.0.1", port=1),
                            store=StoreConfig(url=sqlite_url), sites=sites, alerts=alerts)  # fmt: skip
    await _duties(store, Sites(centre.sites))
    await _queue(store, Sites(centre.sites))
    app = create_app(ApiConfig(centre=centre, cookie_secure=False), store, None, ManualClock(NOW))
    real_words = pages.words
    monkeypatch.setattr(pages, "words", lambda lang: Words(real_words(lang)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hall") as c:
        r = await c.post("/api/login", json={"username": "admin", "password": PASSWORD})
        c.headers["Authorization"] = f"Bearer {r.json()['token']}"
        yield Dashboard(c, app, store)
    await store.close()


async def _registered(store: Store) -> None:
    """A kiosk IT provisioned (24-hour) that never connected: presence 'registered' (broker/rules/devices.py)."""
    async with store.engine.begin() as conn:
        await register_devices(conn, [Registered("qingpu", "kiosk-new", "kiosk", True)], by="it.li", at=NOW)


async def _attendance(store: Store) -> None:
    """Two staff since November: 王芳 punches every day since go-live and signed in today; 李强 never."""
    await import_roster(store, [
        StaffMember("qingpu", "S1", "王芳", "综合窗口", "W1", "A", date(2026, 11, 1)),
        StaffMember("qingpu", "S2", "李强", "税务", "W2", "A", date(2026, 11, 1)),
    ], by="test", at=NOW)  # fmt: skip
    stamps = [datetime(2026, 12, d, h, m, tzinfo=HALL_ZONE) for d in (3, 4) for h, m in ((8, 20), (17, 40))]
    stamps.append(datetime(2026, 12, 7, 8, 20, tzinfo=HALL_ZONE))
    rows = [
        {"site": "qingpu", "device": "attendance-0002", "id": str(uuid7()), "type": "attendance.punch",
         "seq": n, "boot_id": "b", "ts": at, "clock_synced": True, "replayed": False, "received_at": at,
         "data": json.dumps({"staff_id": "S1", "method": "face"})}
        for n, at in enumerate(stamps, 1)
    ]  # fmt: skip
    async with store.engine.begin() as conn:
        await conn.execute(events.insert(), rows)
        # The seeded year of outages may have taken qingpu's terminals down on those days (excused as device
        # faults): this hall's terminals worked this month.
        await conn.execute(incidents.delete().where(incidents.c.site == "qingpu", incidents.c.state == "closed"))


async def _duties(store: Store, sites: Sites) -> None:
    """qingpu's 24-hour area (a forced door, a locker with an item held 5 days and a lock fault) and its duties:
    one kiosk's check passed, one failed, the rest did not run; one tax machine on, one social machine never."""
    site, day_start = "qingpu", NOW - timedelta(hours=10)
    extra = (("door-24h", "door"), ("locker-a", "locker"), ("tax-1", "sim"), ("social-1", "sim"))
    for device, role in (*extra, ("patrol-1", "patrol")):
        await add_device(store, site, device, role, NOW - timedelta(days=30))
    await add_event(store, site, "door-24h", "door.state", NOW - timedelta(minutes=5),
                    {"door": "main", "controller": "ok", "contact": "open", "lock": "locked"})  # fmt: skip
    await add_alarm(store, sites, site, "door-24h", NOW - timedelta(minutes=5),
                    {"door": "main", "alarm": "forced", "since": (NOW - timedelta(minutes=5)).isoformat()})  # fmt: skip
    boxes = [{"no": 1, "door": "closed", "occupied": True, "occupied_since": (NOW - timedelta(days=5)).isoformat()},
             {"no": 2, "door": "fault", "occupied": False}, {"no": 3, "door": "closed", "occupied": False}]  # fmt: skip
    await add_event(store, site, "locker-a", "locker.bank", NOW, {"bank": "A", "board": "ok", "compartments": boxes})
    kiosks = await devices_of(store, site, "kiosk")
    await add_event(store, site, kiosks[0], "duty.netcheck", day_start + timedelta(hours=8), netcheck(True))
    await add_event(store, site, kiosks[1], "duty.netcheck", day_start + timedelta(hours=8),
                    netcheck(False, ("centre",)))  # fmt: skip
    await add_event(store, site, "tax-1", "device.health", day_start + timedelta(hours=8, minutes=30),
                    {"uptime_s": 60, "outbox_depth": 0, "outbox_dropped": 0, "clock_synced": True, "interval_s": 60},
                    boot_id="morning")  # fmt: skip
    points = await devices_of(store, site, "rating", "kiosk")
    for i, point in enumerate(points):  # the early round covers every point; the 09:00 round only one
        scan = {"officer": "S1", "point": point, "finding": "issue" if i == 0 else "ok"}
        await add_event(store, site, "patrol-1", "patrol.scan", day_start + timedelta(hours=8, minutes=i), scan)
    await add_event(store, site, "patrol-1", "patrol.scan", day_start + timedelta(hours=9, minutes=5),
                    {"officer": "S1", "point": points[0]})  # fmt: skip


async def _queue(store: Store, sites: Sites) -> None:
    """qingpu's morning queue: A001 served at 03, A002 waiting 40 minutes (一般: late) while 03's pad shows 暂停服务
    since 09:20, B001 being served at 05 (its pad 办理中), C001 given
    up after 70 minutes (特殊: 60, late); folded by the centre's queue job."""
    site = "qingpu"

    def step(kind: str, minutes: int, ticket: str, service: str, **extra: Any) -> tuple[datetime, dict[str, Any]]:
        when = NOW - timedelta(minutes=minutes)
        return when, {"ticket": ticket, "service": service, "at": when.isoformat(), **extra}

    for kind, minutes, ticket, service, extra in (
        ("issued", 60, "A001", "A", {}), ("called", 55, "A001", "A", {"window": "03"}),
        ("served", 45, "A001", "A", {"window": "03"}), ("issued", 40, "A002", "A", {}),
        ("issued", 30, "B001", "B", {}), ("called", 10, "B001", "B", {"window": "05"}),
        ("issued", 80, "C001", "C", {}), ("abandoned", 10, "C001", "C", {"reason": "cancelled"}),
    ):  # fmt: skip
        when, data = step(kind, minutes, ticket, service, **extra)
        await add_event(store, site, "queue-1", f"queue.ticket_{kind}", when, data)
    for window, state, minutes in (("03", "paused", 40), ("05", "serving", 10)):
        data = {"window": window, "state": state, "staff_id": "S1", "service_id": None}
        await add_event(store, site, f"pad-{window}", "rating.pad_state", NOW - timedelta(minutes=minutes), data)
    await QueueJobs(store, sites, Router(AlertsConfig())).fold(NOW)


def test_both_languages_have_the_same_words() -> None:
    assert set(HALL_ZH) == set(HALL_EN)
    assert set(QUEUE_ZH) == set(QUEUE_EN)
    assert set(ZH) == set(EN)
    assert set(FLEET_ZH) == set(FLEET_EN)
    assert set(VERDICT_ZH) == set(Verdict), "every verdict, the provisional ones too, has its Chinese word"


def _in_words(path: str, lang: str, html: str) -> None:
    """No word missing from the language, no raw value on the zh page, no Chinese enum word on the en page."""
    cjk = re.compile(r"[\u4e00-\u9fff]")
    zh_enum_words = {names[0] for table in ENUMS.values() for names in table.values() if cjk.search(names[0])}
    assert "⟦missing word" not in html, f"{path} ({lang}): {re.findall(r'⟦missing word: [^⟧]*⟧', html)}"
    assert "<built-in method" not in html, f"{path}: a word named like a dict method (t.clear, t.items)"
    tokens = visible_tokens(html)
    if lang == "zh-CN":
        raw = sorted(RAW & tokens)
        assert not raw, f"{path}: raw values on the Chinese page: {raw}"
    else:
        leaked = sorted(w for w in zh_enum_words if w in tokens)
        assert not leaked, f"{path}: Chinese words on the English page: {leaked}"


def _with_lang(path: str, lang: str) -> str:
    return f"{path}{'&' if '?' in path else '?'}lang={lang}"


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
async def test_every_page_has_every_word_in_its_language(client: httpx.AsyncClient, lang: str) -> None:
    for path in PAGES:
        r = await client.get(_with_lang(path, lang))
        assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
        _in_words(path, lang, r.text)


async def _ack_links(d: Dashboard) -> dict[str, str]:
    """Signed links to an open incident, to a closed one, and an expired link (as a pager sends them)."""
    i = incidents.c
    open_id = await d.store.scalar(sa.select(i.id).where(i.state == "open").order_by(i.id).limit(1))
    closed_id = await d.store.scalar(sa.select(i.id).where(i.state == "closed").order_by(i.id).limit(1))
    # The app checks expiry by its own clock (NOW); the signature's by the real one: both are in the future.
    later, earlier = NOW + timedelta(days=3650), NOW - timedelta(hours=1)
    return {
        "open": f"/ack/{sign_ack(ACK_SECRET, str(open_id), later)}",
        "closed": f"/ack/{sign_ack(ACK_SECRET, str(closed_id), later)}",
        "expired": f"/ack/{sign_ack(ACK_SECRET, str(open_id), earlier)}",
    }


def _html_pages() -> list[APIRoute]:
    """Every HTML page of every router in broker/api (a module added later included), from the routers
    themselves: the app's own route list is FastAPI's private wrapping of them."""
    found = []
    for file in sorted(Path(pages.__file__).parent.glob("*.py")):
        module = importlib.import_module(f"broker.api.{file.stem}")
        for router in (v for v in vars(module).values() if isinstance(v, APIRouter)):
            found += [r for r in router.routes if isinstance(r, APIRoute) and "GET" in (r.methods or ())]
    return [r for r in found if r.response_class is HTMLResponse]


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
async def test_the_pages_outside_a_login_and_the_refusals_have_every_word_too(
    dashboard: Dashboard, lang: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The login page, a pager's acknowledgement link (open, closed, expired), a page the role may not see
    (403) and the store-down page (503): each in words, and together with PAGES every HTML page the app has."""
    links = await _ack_links(dashboard)
    anonymous = httpx.AsyncClient(transport=httpx.ASGITransport(app=dashboard.app), base_url="http://hall")
    async with anonymous:
        seen: dict[str, str] = {}
        for path in ("/login", "/login?next=/incidents", *links.values()):
            r = await anonymous.get(_with_lang(path, lang), headers={"accept": "text/html"})
            assert r.status_code in (200, 409, 410), f"{path}: {r.status_code} {r.text[:300]}"
            seen[path] = r.text
        assert {p: seen[p].count('id="ack-submit"') for p in links.values()} == {
            links["open"]: 1,
            links["closed"]: 0,
            links["expired"]: 0,
        }, "only the open incident's link offers the button"
        failed = await anonymous.post(
            _with_lang("/login", lang),
            data={"username": "admin", "password": "wrong"},
            headers={"origin": "http://hall", "accept": "text/html"},
        )
        assert failed.status_code in (401, 422), failed.text[:300]
        seen["/login (failed)"] = failed.text
        r = await anonymous.post("/api/login", json={"username": "tech.qp", "password": PASSWORD})
        tech = {"Authorization": f"Bearer {r.json()['token']}", "accept": "text/html"}
        forbidden = await anonymous.get(_with_lang("/users", lang), headers=tech)
        assert forbidden.status_code == 403, forbidden.text[:300]
        seen["/users (technician)"] = forbidden.text

        async def unreachable(*_: object, **__: object) -> object:
            raise OSError("Connection refused")  # what asyncpg raises for a cluster that is down

        monkeypatch.setattr(dashboard.store, "fetch", unreachable)
        down = await anonymous.get(_with_lang("/", lang), headers=tech)
        assert down.status_code == 503 and 'id="store-down"' in down.text, down.text[:300]
        seen["/ (store down)"] = down.text
    for path, html in seen.items():
        _in_words(path, lang, html)
    covered = [p.split("?")[0] for p in (*PAGES, *seen)]
    pages_found = _html_pages()
    assert len(pages_found) >= 12, [r.path for r in pages_found]
    for route in pages_found:
        assert any(route.path_regex.match(p) for p in covered), f"{route.path} is in neither language test"


async def test_the_pages_show_every_kind_state_and_reason_in_chinese(client: httpx.AsyncClient) -> None:
    """The data does reach the pages: the check above is not passing on empty tables."""
    html = (await client.get("/incidents")).text + (await client.get("/?pp=2")).text
    for word in ("停机", "离线", "停止服务", "部分功能不可用", "现场报障", "大厅整体故障", "A4打印机 卡纸",
                 "小票打印机 缺纸", "应用 健康检查失败", "耗材: 热敏纸"):  # fmt: skip
        assert word in html, word
    # The rules' summaries in words: the functions a kiosk lost, the presence and why, a consumable's state.
    for word in ("受影响: 取号、打印、查询", "离线: 连接中断", "失联: 心跳超时", "已用完"):
        assert word in html, word
    assert "kiosk.state=" not in html and "will (connection lost)" not in html
    overview = (await client.get("/")).text
    for word in ("24小时自助终端", "考勤终端", "好差评评价器", "模拟设备", "在线", "离线", "失联"):
        assert word in overview, word
    registered = (await client.get("/?state=registered")).text + (await client.get("/devices/qingpu/kiosk-new")).text
    assert "kiosk-new" in registered and "已登记未上线" in registered
    device = (await client.get(f"/devices/{FOCUS}")).text
    for word in ("运行状况", "使用量", "命令回执", "成功", "已过期", "打印机恢复", "估算", "设备上报", "°C"):
        assert word in device, word
    consumables = (await client.get("/consumables?site=qingpu")).text
    for word in ("卡纸", "将满", "已满", "未知", "将尽", "已用完", "废粉盒"):
        assert word in consumables, word
    registered_en = (await client.get("/devices/qingpu/kiosk-new?lang=en")).text  # the language sticks: last
    assert "registered, never connected" in registered_en


async def test_the_month_chart_of_a_hall_live_this_week_judges_only_days_since(client: httpx.AsyncClient) -> None:
    html = (await client.get("/attendance?site=qingpu&day=2026-12-07")).text
    bars = set(re.findall(r'data-unit="([^"]+)" data-kind="([a-z_]+)" data-count="(\d+)"', html))
    assert bars == {
        ("综合窗口", "normal", "2"),
        ("综合窗口", "provisional", "1"),  # 在岗: signed in this morning
        ("税务", "absent", "2"),  # Thursday and Friday; nothing before the go-live on the 3rd
        ("税务", "provisional", "1"),  # 未到岗: the day is not over
    }
    assert "进行中" in html
    before = (await client.get("/attendance?site=qingpu&day=2026-12-02")).text
    assert 'data-kind="absent"' not in before, "a day before the go-live is not judged"


async def test_the_access_and_duties_pages_show_the_hall_in_chinese(client: httpx.AsyncClient) -> None:
    """The data reaches both pages, in words: not passing on empty tables."""
    access = (await client.get("/access?site=qingpu")).text
    for word in ("门被强行打开 main", "开", "已锁", "正常", "超期未取的物品 (上限 72 小时)", "120.0"):
        assert word in access, word
    duties = (await client.get("/duties?site=qingpu&day=2026-12-07")).text
    for word in ("通过", "未通过", "未执行", "中心", "按时开机", "未开机", "已完成", "未完成", "进行中", "税务", "S1"):
        assert word in duties, word
    assert 'data-round="上午" data-verdict="missed"' in duties


async def test_the_queue_page_shows_the_hall_in_chinese(client: httpx.AsyncClient) -> None:
    """The data reaches the queue page, in words: classes, pad states, the combined alert, the figures."""
    html = (await client.get("/queue?site=qingpu")).text
    for word in ("一般", "复杂", "特殊", "暂停服务", "办理中", "A002 已等 40 分钟", "已通知窗口管理", "B001 (自 09:50)",
                 "0.0% (0/1)", "66.7% (2/3)", "本月 2026-12"):  # fmt: skip
        assert word in html, word


def test_today_is_a_working_day_in_qingpu() -> None:
    from broker.sites import Sites

    sites = Sites(ConsumerConfig(sites=load_sites()).sites)
    assert sites["qingpu"].site_calendar.is_working_day((NOW + timedelta(hours=8)).date())
