"""The demo's two halls and their day: which devices each hall has, how their agents are configured (every
one on simulated hardware: fingerprint and QR twins, the simulated USB receipt printer, the simulated
keypad), the roster, and the small script the demo plays on them in real time:

- staff punch in over the first minutes, by QR code or fingerprint (two of them never do);
- kiosks print tickets; one roll in Qingpu starts short, runs low (a restock task) and is changed later;
- the kiosk application of one 24-hour kiosk in Wanzhou stops answering its health probe (an incident with
  its SLA clock; the agent's self-healing and the centre's restart_app fail to cure it) and comes back;
- the demo plays each window's queue system (service start and end) and the citizens at the rating pads;
  the first citizen at one Qingpu window presses 1 (非常不满意), so a negative-rating follow-up opens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

import sqlalchemy as sa

import broker.attendance
from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.roles.attendance import AttendanceConfig, FingerEnrol
from agent.roles.kiosk import KioskConfig, SimulatedReceiptConfig
from agent.roles.rating import RatingConfig, ServiceCall
from agent.roles.usage import LogUsageConfig
from agent.selfheal import AppWatchConfig
from broker.attendance.reports import exception_details, monthly_by_unit
from broker.attendance.reports import write_xlsx as write_attendance_xlsx
from broker.attendance.roster import StaffMember
from broker.attendance.service import load_period
from broker.config import ConsumerConfig
from broker.ratings.report import build_report as build_rating_report
from broker.ratings.report import write_xlsx as write_ratings_xlsx
from broker.reports.export import write_xlsx as write_sla_xlsx
from broker.reports.sla import build_sla_report, month_bounds
from broker.rules.incidents import kind_label
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import dead_letters, devices, events, incidents, notifications, rating_followups, tasks
from drivers.qr.validators import staff_map_line
from protocol.clock import HALL_ZONE
from protocol.settings import MqttConfig

log = logging.getLogger(__name__)

EXAMPLES = Path(broker.attendance.__file__).parent / "examples"
Role = Literal["attendance", "kiosk", "rating"]
Part = Literal["", "short_roll", "app_fails", "negative"]
KEYS = {f"KEY_{n}": f"rate_{n}" for n in range(1, 6)} | {"KEY_F4": "service_start", "KEY_F5": "service_end"}
NAMES = ("王丽", "张伟", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄强", "周婷", "吴刚",
         "徐芳", "孙涛", "马超", "朱琳", "胡军", "郭霞", "何平", "高洁", "林峰", "罗兰")  # fmt: skip
UNITS = ("市场监管局", "人社局", "公安局", "税务局", "医保局", "不动产登记中心")
LEVELS = (5, 5, 5, 5, 5, 5, 4, 4, 3)  # what citizens press here; the one 1 is scripted
TICKET_LINE = "ticket issued"


@dataclass(frozen=True, slots=True)
class Hall:
    site: str
    short: str  # 青浦
    qr_prefix: str  # the region's code format (invented: the real apps' formats are site configuration)
    region: str
    id_prefix: str  # first 6 digits of the staff's (invented) ID numbers


HALLS = (
    Hall("qingpu", "青浦", "SSM1", "shanghai", "310118"),
    Hall("wanzhou", "万州", "YKM1", "chongqing", "500101"),
)
APP_FAIL_AT_S, APP_BACK_AT_S, REFILL_AT_S = 12.0, 240.0, 180.0


@dataclass(frozen=True, slots=True)
class Device:
    hall: Hall
    name: str
    role: Role
    index: int  # within its role in the hall
    window: str = ""
    part: Part = ""  # its part in the script


@dataclass(slots=True)
class Timing:
    """What the script waits for; shortened under test by nothing but the --rate flag."""

    services_per_min: float = 2.0
    punch_span_s: float = 90.0
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self.started

    async def until(self, at_s: float) -> None:
        await asyncio.sleep(max(0.0, at_s - self.elapsed()))


def load_sites() -> dict[str, Any]:
    """The example site configs shipped with the attendance rules: calendar, policies, names."""
    sites: dict[str, Any] = {}
    for hall in HALLS:
        with (EXAMPLES / f"{hall.site}.toml").open("rb") as f:
            sites |= tomllib.load(f)["sites"]
    return sites


def plan(per_hall: int) -> list[Device]:
    """About a tenth attendance terminals, three tenths kiosks (half of them 24-hour), the rest rating pads."""
    out: list[Device] = []
    n_att = max(1, round(per_hall * 0.1))
    n_kiosk = max(2, round(per_hall * 0.3))
    n_pad = max(1, per_hall - n_att - n_kiosk)
    for hall in HALLS:
        out += [Device(hall, f"att-entrance-{i + 1}", "attendance", i) for i in range(n_att)]
        half = (n_kiosk + 1) // 2
        for i in range(n_kiosk):
            name = f"kiosk-24h-{i + 1}" if i < half else f"kiosk-{i + 1 - half}"
            # Qingpu's last kiosk gets a short roll; Wanzhou's first (24-hour) one loses its application.
            part: Part = "short_roll" if hall.site == "qingpu" and i == n_kiosk - 1 else ""
            part = "app_fails" if hall.site == "wanzhou" and i == 0 else part
            out.append(Device(hall, name, "kiosk", i, part=part))
        for i in range(n_pad):  # the first citizen at Qingpu's first window rates 1
            part = "negative" if hall.site == "qingpu" and i == 0 else ""
            out.append(Device(hall, f"pad-w{i + 1:02d}", "rating", i, f"W{i + 1:02d}", part))
    return out


def staff_of(hall: Hall, devices: list[Device], today: date) -> list[StaffMember]:
    """One member of staff per window, and two more who serve the back office."""
    windows = [d.window for d in devices if d.hall == hall and d.role == "rating"] + ["", ""]
    return [
        StaffMember(
            site=hall.site,
            staff_id=f"S{i + 1:04d}",
            name=NAMES[(i + (hall == HALLS[1]) * 7) % len(NAMES)],
            unit=UNITS[i % len(UNITS)],
            window=window,
            post="",
            start_date=today - timedelta(days=90),
        )
        for i, window in enumerate(windows)
    ]


def personal_id(hall: Hall, staff_id: str) -> str:
    return f"{hall.id_prefix}1985{int(staff_id[1:]) % 12 + 1:02d}01{int(staff_id[1:]):03d}X"


def write_attendance_files(workdir: Path, hall: Hall, members: list[StaffMember]) -> tuple[Path, Path]:
    """The terminal's salt and staff map (ID-number digests -> staff ids), as provisioning writes them."""
    folder = workdir / "attendance" / hall.site
    folder.mkdir(parents=True, exist_ok=True)
    salt = f"demo-salt-{hall.site}".encode()
    (folder / "salt").write_bytes(salt)
    lines = [staff_map_line(salt, personal_id(hall, m.staff_id), m.staff_id) for m in members]
    (folder / "staff.map").write_text("\n".join(lines) + "\n")
    return folder / "salt", folder / "staff.map"


def agent_config(d: Device, workdir: Path, mqtt: MqttConfig, health_base: str) -> AgentConfig:
    common: dict[str, Any] = {
        "site": d.hall.site,
        "device": d.name,
        "role": d.role,
        "heartbeat_s": 5,
        "mqtt": mqtt,
        "outbox": OutboxConfig(path=workdir / "agents" / f"{d.hall.site}-{d.name}.db"),
        "clock_sync_file": Path("/"),  # the demo's clock is the host's, taken as synchronised
    }
    if d.role == "attendance":
        folder = workdir / "attendance" / d.hall.site
        salt, staff_map = folder / "salt", folder / "staff.map"
        common["attendance"] = AttendanceConfig.model_validate(
            {
                "fingerprint": {"type": "sim"},
                "qr": {"type": "sim"},
                "qr_validator": {
                    "type": "pattern",
                    "region": d.hall.region,
                    "pattern": rf"{d.hall.qr_prefix}:(?P<id>\d{{17}}[\dX]):(?P<ts>\d{{10}})",
                    "staff_map": str(staff_map),
                    "salt_file": str(salt),
                },
                "fingerprint_poll_s": 0.2,
            }
        )
    elif d.role == "kiosk":
        short = d.part == "short_roll"
        usage_log = workdir / "kiosks" / f"{d.hall.site}-{d.name}.log"
        usage_log.parent.mkdir(parents=True, exist_ok=True)
        usage_log.touch()
        common["kiosk"] = KioskConfig(
            receipt=SimulatedReceiptConfig(paper_mm=2_150 if short else 50_000),
            usage=LogUsageConfig(path=usage_log, patterns={"tickets": TICKET_LINE}),
            poll_s=1,
            debounce_s=2,
            snapshot_s=60,
        )
        if d.part == "app_fails":
            common["app"] = AppWatchConfig(
                name="自助服务程序",
                health_url=f"{health_base}/health/{d.hall.site}/{d.name}",
                command=[sys.executable, "-c", "import time; time.sleep(86400)"],
                probe_interval_s=2,
                failures_before_restart=2,
                restart_backoff_initial_s=5,
                restart_backoff_max_s=60,
                max_restarts=3,
                recovery_timeout_s=6,
            )
    else:
        common["rating"] = RatingConfig.model_validate({"window": d.window, "keypad": {"type": "sim", "keys": KEYS}})
    return AgentConfig(**common)


# -- the script ----------------------------------------------------------------------------------------
class Scenario:
    def __init__(self, fleet: list[tuple[Device, Agent]], staff: dict[str, list[StaffMember]], timing: Timing) -> None:
        self.fleet = fleet
        self.staff = staff
        self.timing = timing
        self.health: dict[str, bool] = {}  # path -> healthy, for the demo's kiosk-application probe
        self.say: Callable[[str], None] = print

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            for hall in HALLS:
                tg.create_task(self._punches(hall), name=f"punches-{hall.site}")
            for d, agent in self.fleet:
                if d.role == "kiosk":
                    tg.create_task(self._kiosk(d, agent), name=f"kiosk-{d.hall.site}-{d.name}")
                elif d.role == "rating":
                    tg.create_task(self._window(d, agent), name=f"window-{d.hall.site}-{d.name}")
            tg.create_task(self._app_outage(), name="app-outage")

    # -- attendance --------------------------------------------------------------------------------
    async def _punches(self, hall: Hall) -> None:
        terminals = [(d, a) for d, a in self.fleet if d.hall == hall and d.role == "attendance"]
        members = self.staff[hall.site]
        rng = random.Random(hall.site)
        absent = {m.staff_id for m in members[-2:]} if len(members) > 4 else set()
        fingers = [m for i, m in enumerate(members) if i % 3 == 1 and m.staff_id not in absent][:3]
        for m in fingers:  # enrolled at every terminal of the hall, as the centre does
            for _, agent in terminals:
                await self._enrol(agent, m.staff_id)
        order = [m for m in members if m.staff_id not in absent]
        rng.shuffle(order)
        for k, m in enumerate(order):
            await self.timing.until(5 + k * self.timing.punch_span_s / max(1, len(order)))
            _, agent = terminals[k % len(terminals)]
            role = agent.attendance
            assert role is not None
            if m in fingers and role.finger_sim is not None:
                role.finger_sim.press(f"{m.staff_id}-right-index", 1)
            elif role.qr_sim is not None:
                role.qr_sim.type(f"{hall.qr_prefix}:{personal_id(hall, m.staff_id)}:{int(datetime.now().timestamp())}")

    async def _enrol(self, agent: Agent, staff_id: str) -> None:
        """The window management section enrols a finger at the terminal (the fingerprint_enrol command)."""
        role = agent.attendance
        assert role is not None and role.finger_sim is not None
        spec = agent.commands.registry.get("fingerprint_enrol")
        assert spec is not None
        task = asyncio.ensure_future(spec.handler(agent, FingerEnrol(staff_id=staff_id)))
        await asyncio.sleep(0.2)
        role.finger_sim.press(f"{staff_id}-right-index", 2)
        try:
            await asyncio.wait_for(task, 30)
        except Exception as exc:  # the demo goes on with QR codes for this person
            log.warning("fingerprint enrolment of %s failed: %s", staff_id, exc)

    # -- kiosks --------------------------------------------------------------------------------------
    async def _kiosk(self, d: Device, agent: Agent) -> None:
        role = agent.kiosk
        assert role is not None and role.receipt_sim is not None
        short = d.part == "short_roll"
        period = 3.0 if short else 6.0 + 2 * d.index
        usage = agent.cfg.kiosk.usage if agent.cfg.kiosk is not None else None
        usage_log = usage.path if isinstance(usage, LogUsageConfig) else None
        n, refilled = 0, False
        while True:
            await asyncio.sleep(period * random.uniform(0.7, 1.3))
            if short and not refilled and self.timing.elapsed() >= REFILL_AT_S:
                role.receipt_sim.refill(50_000)
                refilled = True
                self.say(f"现场: {d.hall.short} {d.name} 已更换热敏纸")
            n += 1
            try:
                await role.print_receipt([f"{d.hall.short}区政务服务中心", f"取号 A{n:03d}", "请留意叫号屏", ""])
            except Exception as exc:  # out of paper, or the printer unplugged: the role reports it
                log.info("%s/%s: receipt not printed: %s", d.hall.site, d.name, exc)
                continue
            if usage_log is not None:
                with usage_log.open("a") as f:
                    f.write(f"{datetime.now().isoformat()} {TICKET_LINE} A{n:03d}\n")

    async def _app_outage(self) -> None:
        target = next(((d, a) for d, a in self.fleet if d.part == "app_fails"), None)
        if target is None:
            return
        d, _ = target
        path = f"/health/{d.hall.site}/{d.name}"
        self.health[path] = True
        await self.timing.until(APP_FAIL_AT_S)
        self.health[path] = False
        self.say(f"剧情: {d.hall.short} {d.name} 的自助服务程序停止响应 (健康检查失败)")
        await self.timing.until(APP_BACK_AT_S)
        self.health[path] = True
        self.say(f"剧情: {d.hall.short} {d.name} 的自助服务程序恢复")

    # -- windows: the queue system and the citizens ------------------------------------------------------
    async def _window(self, d: Device, agent: Agent) -> None:
        role = agent.rating
        assert role is not None and role.keypad_sim is not None
        staff = next((m.staff_id for m in self.staff[d.hall.site] if m.window == d.window), None)
        rng = random.Random(f"{d.hall.site}{d.name}")
        cycle = 60.0 / self.timing.services_per_min
        await asyncio.sleep(2 + rng.uniform(0, min(cycle, 8)))
        n = 0
        while True:
            n += 1
            ticket = f"{d.window}-{n:03d}"
            await role.service(ServiceCall(action="start", service_id=ticket, staff_id=staff))
            await asyncio.sleep(cycle * rng.uniform(0.3, 0.6))
            await role.service(ServiceCall(action="end", service_id=ticket))
            await asyncio.sleep(rng.uniform(1.5, 4))
            scripted = d.part == "negative" and n == 1
            if scripted or rng.random() < 0.9:  # some citizens walk away without rating
                level = 1 if scripted else rng.choice(LEVELS)
                role.keypad_sim.press(f"KEY_{level}")
                if scripted:
                    self.say(f"剧情: {d.hall.short} {d.window} 窗口收到差评 (1 分)")
            await asyncio.sleep(cycle * rng.uniform(0.4, 0.8))


# -- what the demo shows ---------------------------------------------------------------------------------
ZONE = HALL_ZONE
PRESENCE_ZH = {"online": "在线", "offline": "离线", "stale": "无心跳", "shutdown": "已关机", "unknown": "未知"}


Report = Callable[[Store, Sites, str, str, datetime, Path], Awaitable[None]]


class Counted(Protocol):
    received: int


async def show(store: Store, stop: asyncio.Event, sink: Counted, timing: Timing, every_s: float) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        await summary(store, sink, timing)


async def _by_site(store: Store, query: sa.Select[Any]) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in await store.fetch(query)}


async def summary(store: Store, sink: Counted, timing: Timing) -> None:
    """One block: the time (real, not accelerated), then per hall devices online, open incidents, punches,
    ratings, follow-ups and restock tasks; the open incidents with their SLA time; alerts sent and received."""
    e, i, n = events.c, incidents.c, notifications.c
    count = sa.func.count()
    online = await _by_site(
        store, sa.select(devices.c.site, count).where(devices.c.presence == "online").group_by(devices.c.site)
    )
    known = await _by_site(store, sa.select(devices.c.site, count).group_by(devices.c.site))
    punches = await _by_site(store, sa.select(e.site, count).where(e.type == "attendance.punch").group_by(e.site))
    ratings = await _by_site(store, sa.select(e.site, count).where(e.type == "rating.submitted").group_by(e.site))
    followups = await _by_site(store, sa.select(rating_followups.c.site, count).group_by(rating_followups.c.site))
    restock = await _by_site(
        store,
        sa.select(tasks.c.site, count).where(tasks.c.kind == "restock", tasks.c.state == "open").group_by(tasks.c.site),
    )
    open_rows = await store.fetch(
        sa.select(i.site, i.device, i.kind, i.severity, i.state, i.detected_at, i.step)
        .where(i.state != "closed")
        .order_by(i.detected_at)
    )
    sent = await store.scalar(sa.select(count).select_from(notifications).where(n.state == "sent"))
    dead = await store.scalar(sa.select(count).select_from(dead_letters))
    now = datetime.now(UTC)
    print(f"\n[{now.astimezone(ZONE):%H:%M:%S} 北京时间, 实时运行 (未加速), 已运行 {timing.elapsed():.0f} 秒]")
    for hall in HALLS:
        s = hall.site
        opened = sum(1 for r in open_rows if r.site == s)
        print(
            f"  {hall.short}: 在线 {online.get(s, 0)}/{known.get(s, 0)} 台, 未结事件 {opened},"
            f" 打卡 {punches.get(s, 0)}, 评价 {ratings.get(s, 0)} (差评跟踪 {followups.get(s, 0)}),"
            f" 补货任务 {restock.get(s, 0)}"
        )
    for r in open_rows:
        minutes = (now - r.detected_at).total_seconds() / 60
        state = "恢复验证中" if r.state == "recovering" else "处理中"
        print(f"    事件 {r.site}/{r.device} {kind_label(r.kind)} [{r.severity}] {state}, SLA 已计 {minutes:.1f} 分钟")
    print(f"  告警已发送 {sent} 条 (接收端收到 {sink.received}); 死信 dead letters: {dead}")


async def presence_lines(store: Store) -> list[str]:
    rows = await store.fetch(
        sa.select(devices.c.site, devices.c.presence, sa.func.count()).group_by(devices.c.site, devices.c.presence)
    )
    return [f"  {r[0]:8} {PRESENCE_ZH.get(r[1], r[1])} ({r[1]}): {r[2]} 台" for r in rows]


async def write_reports(store: Store, cfg: ConsumerConfig, folder: Path) -> list[Path]:
    """This month's reports so far, per hall: kiosk SLA, attendance (月度考勤通报 with the details), ratings."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    sites = Sites(cfg.sites)
    now = datetime.now(UTC)
    month = f"{now.astimezone(ZONE):%Y-%m}"
    written: list[Path] = []
    for hall in HALLS:
        s = hall.site
        jobs: list[tuple[str, Report]] = [
            (f"{s}-kiosk-sla-{month}.xlsx", _sla),
            (f"{s}-attendance-{month}.xlsx", _attendance),
            (f"{s}-ratings-{month}.xlsx", _ratings),
        ]
        for name, job in jobs:
            try:
                await job(store, sites, s, month, now, folder / name)
            except Exception as exc:  # one report failing must not cost the others
                print(f"报告 {name} 未能生成: {exc}")
                log.exception("report %s", name)
                continue
            written.append(folder / name)
    print(f"报告 reports: {len(written)} 份 in {folder}: " + ", ".join(p.name for p in written))
    return written


async def _sla(store: Store, sites: Sites, site: str, month: str, now: datetime, path: Path) -> None:
    write_sla_xlsx(await build_sla_report(store, sites, site, month, now=now), path, "zh-CN")


async def _attendance(store: Store, sites: Sites, site: str, month: str, now: datetime, path: Path) -> None:
    start, end = month_bounds(month, sites[site].site_calendar.zone)
    first, last = start.date(), end.date() - timedelta(days=1)
    p = await load_period(store, sites, site, first, last, now=now)
    monthly = monthly_by_unit(p.days, p.members, sites[site].attendance.monthly, month, site_name=p.site_name)
    details = exception_details(p.days, p.members, first, last, faults=p.faults, zone=p.zone, site_name=p.site_name)
    write_attendance_xlsx([monthly, replace(details, period=month)], path, "zh-CN")


async def _ratings(store: Store, sites: Sites, site: str, month: str, now: datetime, path: Path) -> None:
    write_ratings_xlsx(await build_rating_report(store, sites, site, month, now=now), path)
