"""The demo's two halls and their working day: which devices each hall has, how their agents are configured
(every one on simulated hardware: fingerprint and QR twins, the simulated USB receipt printer, the simulated
IPP A4 printer, the simulated keypad), the roster, and the day the demo plays on them in hall time
(hallfleet/scenarios/demo-day.toml):

- staff sign in at the entrance (two late, one absent per hall) and sign out in the evening;
- kiosks print tickets at each hour's rate; one roll starts short, runs low (a restock task) and is changed;
- the kiosks named in [kiosks.a4] have an A4 printer (drivers/ipp/sim.py, one server for all of them, polled by
  the kiosk over IPP as a real printer is): citizens print on it, its toner runs down and the centre forecasts
  the day it runs out;
- one kiosk application stops answering and comes back after the centre's restart_app (within the SLA),
  another stays down through the warning and the breach (an on-site dispatch) until it is fixed on site;
- the demo plays each window's queue system (service start and end) in opening hours and the citizens at
  the rating pads; one scripted 1 (非常不满意) opens a negative-rating follow-up;
- the departmental machines of [power] (WZ 002:491): on from the morning, shut down by their department at
  their time, or registered and never switched on (hallfleet/demo_hall.py has the rest of the hall).

Time: agents, consumer and API share one ScaledClock; the script waits for hall times through ``DemoDay``,
so every timestamp, SLA step and verdict is the hall's. Durations the agents measure on the clock (debounce,
snapshots, self-healing backoff, the pad's rating prompt) are hall seconds too; their sleeps are real, so the
demo sets those in hall seconds here (``agent_config``). The clock stands at the day's start until the devices are
up and the fingers enrolled (``HeldClock``, ``Scenario.prepare``): a slow start costs none of the morning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import tomllib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from time import monotonic
from typing import Annotated, Any, Literal, Protocol

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import broker.attendance
from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.netcheck import NetCheckConfig
from agent.roles.attendance import AttendanceConfig, AttendanceRole, Feedback
from agent.roles.kiosk import KioskConfig, SimulatedReceiptConfig
from agent.roles.rating import RatingConfig, ServiceCall
from agent.roles.usage import LogUsageConfig
from agent.selfheal import AppWatchConfig
from broker.attendance.labels import VERDICT_ZH
from broker.attendance.model import PROVISIONAL, Verdict
from broker.attendance.month_report import month_workbook
from broker.attendance.reports import daily_exceptions
from broker.attendance.reports import write_xlsx as write_attendance_xlsx
from broker.attendance.roster import StaffMember
from broker.attendance.service import load_period, staff_days
from broker.config import ConsumerConfig
from broker.ratings.report import build_report as build_rating_report
from broker.ratings.report import write_xlsx as write_ratings_xlsx
from broker.reports.export import write_xlsx as write_sla_xlsx
from broker.reports.sla import build_sla_report
from broker.rules.actions import dispatch_update
from broker.rules.consumables import consumable_label
from broker.rules.incidents import OUTAGE_KINDS, kind_label
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import (
    commands,
    consumable_levels,
    dead_letters,
    devices,
    dispatches,
    events,
    incidents,
    notifications,
    rating_followups,
    tasks,
)
from config.base import ConfigError
from drivers.ipp.client import A4PrinterConfig, print_job
from drivers.ipp.raster import a4_pages
from drivers.ipp.sim import TONER, SimulatedA4Printer, SimulatedIppServer
from drivers.qr.keyboard import SimulatedScanner
from drivers.qr.validators import staff_map_line
from drivers.queue.sim import SimQueueSystem
from hallfleet import demo_hall as hd
from hallfleet.fingers import enrol_on_twin
from runtime.clock import HALL_ZONE, ScaledClock
from runtime.settings import MqttConfig

log = logging.getLogger(__name__)

EXAMPLES = Path(broker.attendance.__file__).parent / "examples"
SCENARIO = Path(__file__).parent / "scenarios" / "demo-day.toml"
ZONE = HALL_ZONE
Role = Literal["attendance", "kiosk", "rating", "queue", "door", "locker", "patrol", "none"]
KEYS = {f"KEY_{n}": f"rate_{n}" for n in range(1, 6)} | {"KEY_F4": "service_start", "KEY_F5": "service_end"}
NAMES = ("王丽", "张伟", "李娜", "刘洋", "陈静", "杨磊", "赵敏", "黄强", "周婷", "吴刚",
         "徐芳", "孙涛", "马超", "朱琳", "胡军", "郭霞", "何平", "高洁", "林峰", "罗兰")  # fmt: skip
UNITS = ("市场监管局", "人社局", "公安局", "税务局", "医保局", "不动产登记中心")
TICKET_LINE = "ticket issued"
HEARTBEAT_REAL_S = 5.0  # each agent's health interval in real time, whatever the speed
# A person waits this long (real seconds) for the terminal's answer before trying the next way: the finger loop
# pauses a second after each punch, and a busy machine adds to it.
ANSWER_REAL_S = 10.0
QR_TRIES = 2  # a refused or unanswered QR code is shown again, freshly made
# A QR code is fresh this long in real time at any speed (production's 120 s are 0.2 real s at 600x, less than
# a busy machine takes from the scanner's keystrokes to the check, and the code was refused as expired).
QR_FRESH_REAL_S = 10.0
LATE_TOLD_MIN = 10  # a punch the terminal takes this many hall minutes after the script's time is told


# -- the scenario file ------------------------------------------------------------------------------------
class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


Span = Annotated[list[time], Field(min_length=2, max_length=2)]


class DayPart(_Part):
    start: time = Field(description="Hall time the demo's day starts at (--day-start overrides)")
    end: time = Field(description="Hall time it ends at: the attendance day is judged and the reports written")

    @model_validator(mode="after")
    def _ordered(self) -> DayPart:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class HallPart(_Part):
    arrive: Span = Field(description="The punctual sign in spread over [first, last]")
    late: list[time] = Field(default_factory=list, description="One late sign-in at each of these times")
    absent: int = Field(default=0, ge=0, description="How many on the roster never come")
    leave: Span = Field(description="Everybody who came signs out spread over [first, last]")


class ShortRoll(_Part):
    hall: str
    kiosk: str
    paper_mm: float = Field(gt=0, description="What is left on the roll at the start of the day")
    changed_at: time = Field(description="When site staff change it")


class AppFailure(_Part):
    hall: str
    kiosk: str
    at: time = Field(description="When the application stops answering its health probe")
    until: Literal["restart"] | time = Field(
        description='"restart": it answers again once the centre\'s restart_app runs; or the hall time it comes back'
    )


class A4Part(_Part):
    kiosks: list[str] = Field(min_length=1, description="Kiosks with an A4 printer, by name, in every hall")
    pages_per_hour: dict[Annotated[int, Field(ge=0, le=23)], Annotated[float, Field(ge=0, le=600)]] = Field(
        description="A4 pages printed an hour at each of them, by the hour of the day (hall time)"
    )
    pages_per_job: Annotated[list[Annotated[int, Field(ge=1, le=50)]], Field(min_length=2, max_length=2)] = Field(
        default=[1, 4], description="A job prints [fewest, most] pages, evenly"
    )
    toner_pct: float = Field(default=30, gt=0, le=100, description="Toner left at the start of the day")
    toner_pages: float = Field(default=1500, gt=0, description="Pages a full cartridge prints")
    sheets: int = Field(default=500, ge=0, le=500, description="A4 sheets in the main tray (it holds 500)")


class KiosksPart(_Part):
    tickets_per_hour: dict[Annotated[int, Field(ge=0, le=23)], Annotated[float, Field(ge=0, le=600)]]
    short_roll: ShortRoll | None = None
    app_failures: list[AppFailure] = Field(default_factory=list)
    a4: A4Part | None = Field(default=None, description="A4 printers (IPP) at some kiosks")


class Negative(_Part):
    hall: str
    window: str
    at: time = Field(description="The first service ending after this is rated 1")


class RatingsPart(_Part):
    services_per_hour: float = Field(gt=0, le=60, description="At each window, in the hall's opening hours")
    levels: list[Annotated[int, Field(ge=1, le=5)]] = Field(min_length=1)
    walk_away: float = Field(default=0.1, ge=0, lt=1)
    negative: list[Negative] = Field(default_factory=list)


class DayScenario(_Part):
    day: DayPart
    halls: dict[str, HallPart]
    kiosks: KiosksPart
    ratings: RatingsPart
    queue: hd.QueuePart = Field(default_factory=hd.QueuePart, description="Tickets at the hall's queue system")
    access: hd.AccessPart = Field(default_factory=hd.AccessPart, description="The 24-hour area's door and lockers")
    patrol: hd.PatrolPart = Field(default_factory=hd.PatrolPart, description="The duty officers' patrol rounds")
    power: hd.PowerPart = Field(default_factory=hd.PowerPart, description="Departmental machines' power-on/off")


def load_scenario(path: Path = SCENARIO) -> DayScenario:
    """Read and validate the scenario; a bad file is a ConfigError naming the field."""
    try:
        with path.open("rb") as f:
            return DayScenario.model_validate(tomllib.load(f))
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"invalid demo scenario ({path}):\n" + "\n".join(lines)) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read demo scenario {path}: {exc}") from None


def check_scenario(scenario: DayScenario, devices: list[Device]) -> None:
    """Every hall, kiosk and window the scenario names exists in this demo (--devices decides how many)."""
    sites = {h.site for h in HALLS}
    names = {(d.hall.site, d.name) for d in devices if d.role == "kiosk"}
    windows = {(d.hall.site, d.window) for d in devices if d.role == "rating"}
    bad: list[str] = [f"halls.{s}: no such demo hall (qingpu, wanzhou)" for s in scenario.halls if s not in sites]
    bad += [f"halls: {s} is missing" for s in sites if s not in scenario.halls]
    named: list[tuple[str, ShortRoll | AppFailure]] = [
        (f"kiosks.app_failures.{i}", f) for i, f in enumerate(scenario.kiosks.app_failures)
    ]
    if scenario.kiosks.short_roll is not None:
        named.append(("kiosks.short_roll", scenario.kiosks.short_roll))
    bad += [f"{w}.kiosk: no kiosk {k.kiosk!r} in {k.hall}" for w, k in named if (k.hall, k.kiosk) not in names]
    a4 = scenario.kiosks.a4.kiosks if scenario.kiosks.a4 is not None else []
    bad += [f"kiosks.a4.kiosks: no kiosk {k!r} in {s}" for k in a4 for s in sorted(sites) if (s, k) not in names]
    bad += [
        f"ratings.negative.{i}.window: no window {n.window!r} in {n.hall}"
        for i, n in enumerate(scenario.ratings.negative)
        if (n.hall, n.window) not in windows
    ]
    bad += _check_hall_parts(scenario, sites, windows)
    if bad:
        raise ConfigError("invalid demo scenario:\n" + "\n".join(f"  {b}" for b in bad))


def _check_hall_parts(scenario: DayScenario, sites: set[str], windows: set[tuple[str, str]]) -> list[str]:
    """The queue, access and patrol parts name demo halls and windows that exist."""
    q = scenario.queue
    named = [(f"queue.long_wait.{i}", x.hall, x.window) for i, x in enumerate(q.long_wait)]
    named += [(f"queue.paused.{i}", x.hall, x.window) for i, x in enumerate(q.paused)]
    bad = [f"{w}.window: no window {win!r} in {h}" for w, h, win in named if (h, win) not in windows]
    halls = [("access.held_open", s) for s in scenario.access.held_open]
    halls += [("access.left", s) for s in scenario.access.left] + [("patrol.missed", s) for s in scenario.patrol.missed]
    halls += [("power.machines", s) for s in scenario.power.machines]
    return bad + [f"{w}: no such demo hall {s!r}" for w, s in halls if s not in sites]


# -- the halls and their devices ----------------------------------------------------------------------------
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


@dataclass(frozen=True, slots=True)
class Device:
    hall: Hall
    name: str
    role: Role
    index: int  # within its role in the hall
    window: str = ""
    hours24: bool = False  # in the 24-hour area: IT registers it so (register_24_hour), its name does not say it


def load_sites() -> dict[str, Any]:
    """The example site configs shipped with the attendance rules: calendar, policies, names."""
    sites: dict[str, Any] = {}
    for hall in HALLS:
        with (EXAMPLES / f"{hall.site}.toml").open("rb") as f:
            sites |= tomllib.load(f)["sites"]
    return sites


def working_day(sites: Sites, on_or_before: date) -> date:
    """The latest day on or before ``on_or_before`` on which both halls work (a Sunday plays the Friday)."""
    day = on_or_before
    while not all(sites[h.site].site_calendar.is_working_day(day) for h in HALLS):
        day -= timedelta(days=1)
    return day


def plan(per_hall: int, power: hd.PowerPart | None = None) -> list[Device]:
    """About a tenth attendance terminals, three tenths kiosks (half of them 24-hour), the rest rating pads; and
    each hall's queue, 24-hour area and patrol devices (hall_devices), and the departmental machines ``power``
    switches on today (an agent with no role: heartbeats, boot and shutdown)."""
    out: list[Device] = []
    n_att = max(1, round(per_hall * 0.1))
    n_kiosk = max(2, round(per_hall * 0.3))
    n_pad = max(1, per_hall - n_att - n_kiosk)
    for hall in HALLS:
        out += [Device(hall, f"att-entrance-{i + 1}", "attendance", i) for i in range(n_att)]
        half = (n_kiosk + 1) // 2
        for i in range(n_kiosk):
            name = f"kiosk-24h-{i + 1}" if i < half else f"kiosk-{i + 1 - half}"
            out.append(Device(hall, name, "kiosk", i, hours24=i < half))
        out += [Device(hall, f"pad-w{i + 1:02d}", "rating", i, f"W{i + 1:02d}") for i in range(n_pad)]
        out += hall_devices(hall)
        switched_on = power.switched_on(hall.site) if power is not None else []
        out += [Device(hall, name, "none", i) for i, name in enumerate(switched_on)]
    return out


def hall_devices(hall: Hall) -> list[Device]:
    """Whatever --devices says, each hall has one of these (issue 23): the queue system's ticket dispenser and
    call display, the 24-hour area's door controller and locker bank, the duty officer's patrol handheld."""
    return [
        Device(hall, "queue-disp-1", "queue", 0),
        Device(hall, "queue-display-1", "queue", 1),
        Device(hall, "door-24h-1", "door", 0, hours24=True),
        Device(hall, "locker-24h-1", "locker", 0, hours24=True),
        Device(hall, "patrol-1", "patrol", 0),
    ]


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


def has_a4(d: Device, scenario: DayScenario) -> bool:
    return d.role == "kiosk" and scenario.kiosks.a4 is not None and d.name in scenario.kiosks.a4.kiosks


def a4_name(d: Device) -> str:
    """The kiosk's printer on the simulated IPP server: ipp://host:port/ipp/print/<site>-<kiosk>."""
    return f"{d.hall.site}-{d.name}"


def add_a4_printers(server: SimulatedIppServer, devices: list[Device], scenario: DayScenario) -> None:
    """One simulated A4 printer per kiosk that has one, as the scenario loads it at the start of the day."""
    part = scenario.kiosks.a4
    for d in devices:
        if part is not None and has_a4(d, scenario):
            printer = SimulatedA4Printer(
                toner_pct=part.toner_pct, toner_pages=part.toner_pages, sheets=part.sheets, tray_capacity=500
            )
            server.add(a4_name(d), printer)


def agent_config(
    d: Device,
    workdir: Path,
    mqtt: MqttConfig,
    health_base: str,
    speed: float,
    scenario: DayScenario,
    printers: SimulatedIppServer | None = None,
    queues: dict[str, SimQueueSystem] | None = None,
    netcheck: NetCheckConfig | None = None,
) -> AgentConfig:
    """Durations the agent measures on its clock are hall seconds: ``speed`` of them pass each real second.
    ``printers``: the running server of the A4 printers (add_a4_printers), for the kiosks that have one;
    ``queues``: each hall's running queue system (its pads then take their services from it); ``netcheck``: the
    kiosks' daily network check."""
    common: dict[str, Any] = {
        "site": d.hall.site,
        "device": d.name,
        "role": d.role,
        "heartbeat_s": min(3600.0, HEARTBEAT_REAL_S * speed),  # the agent waits it in real time (real_seconds)
        "mqtt": mqtt,
        # Re-send unconfirmed events after two real minutes, as in production, not after a second.
        "outbox": OutboxConfig(path=workdir / "agents" / f"{d.hall.site}-{d.name}.db", confirm_timeout_s=120 * speed),
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
                    "max_age_s": min(86_400.0, max(120.0, QR_FRESH_REAL_S * speed)),
                },
                "fingerprint_poll_s": 0.2,
                # The sensor's rest after a punch is real time: a second is ten hall minutes at 600x, and the next
                # person in the queue was judged late for it. The twin's press is read once, so none is needed.
                "fingerprint_lift_s": 0.2,
            }
        )
    elif d.role == "none":
        pass  # a departmental machine: the agent's heartbeats, its boot id and its clean shutdown are all it says
    elif d.role in ("queue", "door", "locker", "patrol"):
        common[d.role] = _hall_device_section(d, queues)
    elif d.role == "kiosk":
        common["netcheck"] = netcheck
        roll = scenario.kiosks.short_roll
        short = roll is not None and (roll.hall, roll.kiosk) == (d.hall.site, d.name)
        usage_log = workdir / "kiosks" / f"{d.hall.site}-{d.name}.log"
        usage_log.parent.mkdir(parents=True, exist_ok=True)
        usage_log.touch()
        common["kiosk"] = KioskConfig(
            receipt=SimulatedReceiptConfig(paper_mm=roll.paper_mm if roll is not None and short else 50_000),
            a4=A4PrinterConfig(url=printers.url(a4_name(d))) if printers is not None and has_a4(d, scenario) else None,
            usage=LogUsageConfig(path=usage_log, patterns={"tickets": TICKET_LINE}),
            poll_s=1,  # real seconds (a sleep)
            debounce_s=60,  # hall seconds: half a real second at 120x
            snapshot_s=3600,  # an hour of hall time
        )
        if any((f.hall, f.kiosk) == (d.hall.site, d.name) for f in scenario.kiosks.app_failures):
            common["app"] = AppWatchConfig(
                name="自助服务程序",
                health_url=f"{health_base}/health/{d.hall.site}/{d.name}",
                command=[sys.executable, "-c", "import time; time.sleep(86400)"],
                probe_interval_s=0.5,  # real seconds (a sleep)
                failures_before_restart=2,
                restart_backoff_initial_s=60,  # hall seconds from here on
                restart_backoff_max_s=600,
                max_restarts=2,
                restart_window_s=3600,
                recovery_timeout_s=240,
            )
    else:
        # The prompt waits five hall minutes, not one: at high speeds a busy machine delivers the citizen's press
        # a few real tenths of a second late, and a press after the prompt is a rating without its service.
        rating: dict[str, Any] = {"window": d.window, "keypad": {"type": "sim", "keys": KEYS}, "await_s": 300}
        if queues is not None:  # the queue system starts and ends services at the pad, naming the ticket
            rating["queue"] = {"port": 0}
            rating["staff_id"] = window_staff_id(d)
        common["rating"] = RatingConfig.model_validate(rating)
    return AgentConfig(**common)


def _hall_device_section(d: Device, queues: dict[str, SimQueueSystem] | None) -> dict[str, Any]:
    if d.role == "queue":
        if queues is None:
            raise ConfigError(f"{d.hall.site}/{d.name}: a queue device needs the hall's queue system")
        return hd.queue_section(d, queues)
    return {"door": hd.door_section, "locker": hd.locker_section, "patrol": hd.patrol_section}[d.role]()


def window_staff_id(d: Device) -> str:
    """Who serves at the window: staff_of gives window W<n> the n-th member of staff (S<n>)."""
    return f"S{d.index + 1:04d}"


Day = date  # DemoDay's field is called date


# -- hall time ----------------------------------------------------------------------------------------
@dataclass
class HeldClock(ScaledClock):
    """A ScaledClock that stands at ``start`` until ``release()``, then runs from there: the demo's devices start
    and its fingers are enrolled on it, so none of that takes the morning. Started at once, a busy machine's slow
    start had the first staff arrive at a terminal not yet up, and punctual people were judged late."""

    held: bool = True

    def now(self) -> datetime:
        return self.start if self.held else ScaledClock.now(self)

    def monotonic(self) -> float:
        return 0.0 if self.held else ScaledClock.monotonic(self)

    def release(self) -> None:
        self._t0 = monotonic()
        self.held = False


@dataclass(slots=True)
class DemoDay:
    """The demo's date and its day in hall time, on the clock everything shares (the demo's is a HeldClock; the
    fleet simulator's runs from the start)."""

    clock: ScaledClock
    date: Day
    start: datetime
    end: datetime

    @classmethod
    def of(cls, day: Day, start: time, end: time, speed: float) -> DemoDay:
        begin = datetime.combine(day, start, ZONE)
        return cls(HeldClock(begin, speed), day, begin, datetime.combine(day, end, ZONE))

    def begin(self) -> None:
        """Hall time runs from ``start`` from now on, on the clock the agents, consumer and API already share."""
        if isinstance(self.clock, HeldClock):
            self.clock.release()

    @property
    def speed(self) -> float:
        return self.clock.speed

    def now(self) -> datetime:
        return self.clock.now().astimezone(ZONE)

    def at(self, t: time) -> datetime:
        return datetime.combine(self.date, t, ZONE)

    def progress(self) -> float:
        return min(1.0, max(0.0, (self.now() - self.start) / (self.end - self.start)))

    def over(self) -> bool:
        return self.now() >= self.end

    async def until(self, when: datetime) -> None:
        await asyncio.sleep(max(0.0, (when - self.clock.now()).total_seconds() / self.speed))

    async def sleep(self, hall_s: float) -> None:
        await asyncio.sleep(hall_s / self.speed)

    def spread(self, span: list[time], n: int, rng: random.Random) -> list[datetime]:
        """``n`` times over the span, in order, each a little off the even grid."""
        first, last = self.at(span[0]), self.at(span[1])
        step = (last - first) / max(1, n)
        return sorted(first + step * (k + rng.uniform(0.1, 0.9)) for k in range(n))


# -- the script ----------------------------------------------------------------------------------------
class Scenario:
    def __init__(
        self,
        scenario: DayScenario,
        day: DemoDay,
        sites: Sites,
        staff: dict[str, list[StaffMember]],
        store: Store,
    ) -> None:
        self.scenario = scenario
        self.day = day
        self.sites = sites
        self.staff = staff
        self.store = store
        self.fleet: list[tuple[Device, Agent]] = []
        self.health: dict[str, bool] = {}  # path -> healthy, for the demo's kiosk-application probe
        self.say: Callable[[str], None] = print
        self.expected: dict[str, dict[str, list[str]]] = {}  # site -> late/absent staff ids, for the summary
        self.printers: SimulatedIppServer | None = None  # the A4 printers' server, when the day has any
        self.queues: dict[str, SimQueueSystem] = {}  # each hall's queue system (its twin), when the day has them
        self.halls: dict[str, hd.HallPlay] = {}
        self.fingers: dict[str, set[tuple[int, str]]] = {}  # site -> (terminal index, staff id) enrolled there
        self.switched_off: set[Agent] = set()  # departmental machines their department shut down

    def tell(self, text: str) -> None:
        self.say(f"  剧情 {self.day.now():%H:%M}: {text}")

    async def run(self) -> None:
        self.halls = {
            s: hd.HallPlay(self.day, next(h for h in HALLS if h.site == s), q, self.scenario, self.tell)
            for s, q in self.queues.items()
        }
        async with asyncio.TaskGroup() as tg:
            for hall in HALLS:
                tg.create_task(self._attendance(hall), name=f"attendance-{hall.site}")
            for d, agent in self.fleet:
                play = self.halls.get(d.hall.site)
                if play is not None and d.role in ("door", "locker", "patrol"):
                    tg.create_task(self._hall_device(play, d, agent), name=f"{d.role}-{d.hall.site}-{d.name}")
            for d, agent in self.fleet:
                if d.role == "kiosk":
                    tg.create_task(self._kiosk(d, agent), name=f"kiosk-{d.hall.site}-{d.name}")
                    if agent.cfg.kiosk is not None and agent.cfg.kiosk.a4 is not None:
                        tg.create_task(self._a4(d, agent.cfg.kiosk.a4), name=f"a4-{d.hall.site}-{d.name}")
                elif d.role == "rating":
                    tg.create_task(self._window(d, agent), name=f"window-{d.hall.site}-{d.name}")
            for failure in self.scenario.kiosks.app_failures:
                tg.create_task(self._app_failure(failure), name=f"app-{failure.hall}-{failure.kiosk}")
            for site, machines in self.scenario.power.machines.items():
                for name in machines:
                    tg.create_task(self._department_machine(site, name), name=f"power-{site}-{name}")

    async def _department_machine(self, site: str, name: str) -> None:
        """WZ 002:491: the department switches its machine off at its time, or never switched it on today."""
        play, power = self.halls.get(site), self.sites[site].duties.power
        if play is None:
            return
        department = power.department_of(name) or ""
        agent = next((a for d, a in self.fleet if (d.hall.site, d.name) == (site, name)), None)
        if agent is None:
            await play.never_on(name, department, time.fromisoformat(power.on_by))
            return
        if await play.switch_off(name, department, agent):
            self.switched_off.add(agent)  # its outbox waits for no confirmation any more (wait_quiet)

    async def _hall_device(self, play: hd.HallPlay, d: Device, agent: Agent) -> None:
        if d.role == "door":
            await play.door(agent)
        elif d.role == "locker":
            await play.lockers(agent)
        else:
            points = [x.name for x in self.fleet_devices() if x.hall == d.hall and x.role in ("rating", "kiosk")]
            await play.patrol(agent, self.sites[d.hall.site].duties.patrol.rounds, points)

    def fleet_devices(self) -> list[Device]:
        return [d for d, _ in self.fleet]

    # -- before the day ------------------------------------------------------------------------------
    async def prepare(self, within_s: float = 60.0) -> None:
        """Run before hall time does (its clock stands at the day's start): every device started and seen online by
        the centre, and each hall's punctual staff enrolled at its terminals, so the first arrivals meet ready
        terminals however long a busy machine takes to start them."""
        await asyncio.wait_for(asyncio.gather(*(a.started.wait() for _, a in self.fleet)), within_s)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._online(within_s))
            for hall in HALLS:
                tg.create_task(self._enrol_hall(hall), name=f"enrol-{hall.site}")

    async def _online(self, within_s: float) -> None:
        """Until the centre has every device online (bounded: a warning, and the day goes on)."""
        query = sa.select(sa.func.count()).select_from(devices).where(devices.c.presence == "online")
        deadline = asyncio.get_running_loop().time() + within_s
        while (await self.store.scalar(query) or 0) < len(self.fleet):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("not every device online after %g s; the day starts anyway", within_s)
                return
            await asyncio.sleep(0.1)

    async def _enrol_hall(self, hall: Hall) -> None:
        """The punctual staff's fingers, enrolled at every terminal of the hall as the centre does; where an
        enrolment fails, that person punches there by QR code."""
        punctual = self._cast(hall)[3]
        self.fingers[hall.site] = {
            (t, m.staff_id)
            for m in punctual[:3]
            for t, (_, agent) in enumerate(self._terminals(hall))
            if await self._enrol(agent, m.staff_id)
        }

    def _terminals(self, hall: Hall) -> list[tuple[Device, Agent]]:
        return [(d, a) for d, a in self.fleet if d.hall == hall and d.role == "attendance"]

    def _cast(self, hall: Hall) -> tuple[random.Random, list[StaffMember], list[StaffMember], list[StaffMember]]:
        """Who is absent, who late and who punctual (the same at every call), and the random source that spreads
        their times, as the shuffle left it."""
        part = self.scenario.halls[hall.site]
        rng = random.Random(hall.site)
        order = list(self.staff[hall.site])
        rng.shuffle(order)
        late_at = part.absent + len(part.late)
        return rng, order[: part.absent], order[part.absent : late_at], order[late_at:]

    # -- attendance --------------------------------------------------------------------------------
    async def _attendance(self, hall: Hall) -> None:
        part = self.scenario.halls[hall.site]
        terminals = self._terminals(hall)
        rng, absent, late, punctual = self._cast(hall)
        self.expected[hall.site] = {"late": [m.staff_id for m in late], "absent": [m.staff_id for m in absent]}
        fingers = self.fingers.get(hall.site, set())  # prepare() enrolled them
        came = punctual + late
        ins = list(zip(self.day.spread(part.arrive, len(punctual), rng), punctual, strict=True))
        ins += [(self.day.at(t), m) for t, m in zip(part.late, late, strict=False)]
        outs = list(zip(self.day.spread(part.leave, len(came), rng), came, strict=True))
        plays = sorted([(t, m, "签到") for t, m in ins] + [(t, m, "签退") for t, m in outs], key=lambda x: x[0])
        # What finish() waits for at the day's end: every punch planned either taken by a terminal (and as many
        # stored by the centre) or told as not taken.
        made: list[str] = []
        failed: list[str] = []
        self.expected[hall.site] |= {"planned": [m.staff_id for _, m, _ in plays], "punched": made, "failed": failed}
        noted = max([t for t, _ in ins], default=self.day.start) + timedelta(minutes=5)
        for k, (at, m, what) in enumerate(plays):
            if absent and at >= noted:
                await self.day.until(noted)
                self._absent(hall, absent)
                absent = []
            await self.day.until(at)
            t = k % len(terminals)
            role = terminals[t][1].attendance
            assert role is not None
            taken = await self._punch(hall, role, m, (t, m.staff_id) in fingers, what)
            (made if taken else failed).append(m.staff_id)
            if taken and self.day.now() - at > timedelta(minutes=LATE_TOLD_MIN):
                self.tell(f"{hall.short} {m.name} ({m.staff_id}) {what}: 剧本 {hm(at)}, 终端 {hm(self.day.now())} 受理")
            if m in late and what == "签到":
                self.tell(f"{hall.short} {m.name} ({m.staff_id}) 迟到签到")
        self._absent(hall, absent)

    async def _punch(self, hall: Hall, role: AttendanceRole, m: StaffMember, finger: bool, what: str) -> bool:
        """One person at the terminal until it answers: by finger where enrolled, else (or when the finger is not
        taken: the terminal answers an unmatched finger with 未识别) by QR code, a fresh code each try. Only what the
        terminal took counts as punched: a press it did not take used to count, and the person was judged absent
        without a word. A person no way worked for is told loudly."""
        for way in ["finger"] * finger + ["qr"] * QR_TRIES:
            answer = role.output.expect(lambda fb: _answers(fb, m.staff_id))
            try:
                if way == "finger":
                    assert role.finger_sim is not None
                    role.finger_sim.press(f"{m.staff_id}-right-index", 1)
                else:
                    stamp = int(self.day.clock.now().timestamp())
                    (await _scanner(role)).type(f"{hall.qr_prefix}:{personal_id(hall, m.staff_id)}:{stamp}")
                fb: Feedback | None = await asyncio.wait_for(answer, ANSWER_REAL_S)
            except TimeoutError:
                fb = None
            finally:
                answer.cancel()
            if fb is not None and fb.ok:
                return True
            said = fb.text if fb is not None else "no answer"
            log.warning("%s/%s %s by %s not taken: %s", hall.site, m.staff_id, what, way, said)
        self.tell(f"{hall.short} {m.name} ({m.staff_id}) {what}失败: 终端未接受打卡 (指纹/二维码均未成功)")
        log.error("%s: %s's %s not taken by the terminal in any way; the day's verdict will be wrong", hall.site,
                  m.staff_id, what)  # fmt: skip
        return False

    def _absent(self, hall: Hall, members: list[StaffMember]) -> None:
        for m in members:
            self.tell(f"{hall.short} {m.name} ({m.staff_id}) 今天没有来, 也没有请假")

    async def _enrol(self, agent: Agent, staff_id: str) -> bool:
        """The window management section enrols a finger at the terminal (the fingerprint_enrol command, the person
        pressing when the screen asks: hallfleet/fingers.py); it counts once the command acked a page that the
        twin's library holds for this finger."""
        role = agent.attendance
        assert role is not None and role.finger_sim is not None
        finger = f"{staff_id}-right-index"
        try:
            page = await enrol_on_twin(agent, staff_id, finger)
        except Exception as exc:  # the demo goes on with QR codes for this person at this terminal
            log.warning("fingerprint enrolment of %s failed: %s", staff_id, exc or type(exc).__name__)
            return False
        return role.finger_sim.library.get(page) == finger

    # -- kiosks --------------------------------------------------------------------------------------
    async def _kiosk(self, d: Device, agent: Agent) -> None:
        role = agent.kiosk
        assert role is not None and role.receipt_sim is not None
        usage = agent.cfg.kiosk.usage if agent.cfg.kiosk is not None else None
        usage_log = usage.path if isinstance(usage, LogUsageConfig) else None
        rng = random.Random(f"{d.hall.site}{d.name}")
        n = 0
        roll = self.scenario.kiosks.short_roll
        change_at = self.day.at(roll.changed_at) if roll and (roll.hall, roll.kiosk) == (d.hall.site, d.name) else None
        while not self.day.over():
            rate = self.scenario.kiosks.tickets_per_hour.get(self.day.now().hour, 0.0)
            gap = 600.0 if rate <= 0 else rng.expovariate(rate / 3600)
            if change_at is not None:  # staff change the roll on time (here, between two prints)
                gap = min(gap, max(0.0, (change_at - self.day.clock.now()).total_seconds()))
            await self.day.sleep(gap)
            if change_at is not None and self.day.clock.now() >= change_at:
                role.receipt_sim.refill(50_000)
                change_at = None
                self.tell(f"{d.hall.short} {d.name} 已更换热敏纸")
                continue
            if rate <= 0:
                continue
            n += 1
            try:
                await role.print_receipt([f"{d.hall.short}区政务服务中心", f"取号 A{n:03d}", "请留意叫号屏", ""])
            except Exception as exc:  # out of paper, or the printer unplugged: the role reports it
                log.info("%s/%s: receipt not printed: %s", d.hall.site, d.name, exc)
                continue
            if usage_log is not None:
                with usage_log.open("a") as f:
                    f.write(f"{self.day.now().isoformat()} {TICKET_LINE} A{n:03d}\n")

    async def _a4(self, d: Device, printer: A4PrinterConfig) -> None:
        """Citizens print forms and certificates at the kiosk: jobs at each hour's rate, over IPP as the kiosk
        application sends them; the toner runs down with the pages (the twin counts them)."""
        part = self.scenario.kiosks.a4
        assert part is not None
        rng = random.Random(f"a4{d.hall.site}{d.name}")
        fewest, most = part.pages_per_job
        low_told = False
        while not self.day.over():
            jobs_per_hour = part.pages_per_hour.get(self.day.now().hour, 0.0) / ((fewest + most) / 2)
            await self.day.sleep(600.0 if jobs_per_hour <= 0 else rng.expovariate(jobs_per_hour / 3600))
            if jobs_per_hour <= 0 or self.day.over():
                continue
            job = await print_job(printer, a4_pages(rng.randint(fewest, most)), job_name="办事材料")
            if not job.accepted or job.state != "completed":
                log.info("%s/%s: A4 job not printed: %s", d.hall.site, d.name, job.error or job.state)
            toner = self.printers.printer(a4_name(d)).supply(TONER) if self.printers else None
            if toner is not None and toner < 15 and not low_told:
                low_told = True
                self.tell(f"{d.hall.short} {d.name} A4 打印机硒鼓余量 {toner}% (设备上报)")

    async def _app_failure(self, failure: AppFailure) -> None:
        path = f"/health/{failure.hall}/{failure.kiosk}"
        short = next(h.short for h in HALLS if h.site == failure.hall)
        self.health[path] = True
        failed_at = self.day.at(failure.at)
        await self.day.until(failed_at)
        self.health[path] = False
        self.tell(f"{short} {failure.kiosk} 的自助服务程序停止响应 (健康检查失败)")
        if failure.until == "restart":
            await self._centre_restart(f"{failure.hall}/{failure.kiosk}", failed_at)
            self.tell(f"{short} {failure.kiosk}: 中心下发 restart_app, 程序重启后恢复")
            self.health[path] = True
            return
        await self.day.until(self.day.at(failure.until))
        key = f"{failure.hall}/{failure.kiosk}"
        sent = await self.store.fetch(
            sa.select(dispatches.c.incident_id).where(dispatches.c.key == key, dispatches.c.state == "open")
        )
        for row in sent:  # the technician the breach sent for arrives and records it (hallfleet dispatch arrive)
            await dispatch_update(self.store, row.incident_id, "on_site", by="tech.wang", at=self.day.clock.now())
        self.tell(f"{short} {failure.kiosk}: 技术人员到场 ({len(sent)} 张派单), 修复自助服务程序")
        self.health[path] = True
        await self.day.sleep(15 * 60)
        for row in sent:
            text = "更换程序配置后恢复"
            await dispatch_update(
                self.store, row.incident_id, "done", by="tech.wang", at=self.day.clock.now(), text=text
            )

    async def _centre_restart(self, key: str, since: datetime) -> None:
        """Until the centre's restart_app (the SLA's T+0) is running on the device."""
        c = commands.c
        query = sa.select(sa.func.count()).where(
            c.key == key, c.name == "restart_app", c.issued_at >= since, c.state.in_(["running", "succeeded", "failed"])
        )
        while not await self.store.scalar(query):  # noqa: ASYNC110 -- the store has no event for it
            await asyncio.sleep(0.1)

    # -- windows: the queue system and the citizens ------------------------------------------------------
    async def _window(self, d: Device, agent: Agent) -> None:
        role = agent.rating
        assert role is not None and role.keypad_sim is not None
        staff = next((m.staff_id for m in self.staff[d.hall.site] if m.window == d.window), None)
        part = self.scenario.ratings
        negative = next((n for n in part.negative if (n.hall, n.window) == (d.hall.site, d.window)), None)
        rng = random.Random(f"{d.hall.site}{d.name}")
        cycle = 3600 / part.services_per_hour
        n = 0
        hall = self.halls.get(d.hall.site)
        if hall is not None:
            await hall.bind_pad(d, agent)
        for opens, closes in self.sites[d.hall.site].site_calendar.sessions_on(self.day.date):
            await self.day.until(opens + timedelta(seconds=rng.uniform(0, cycle / 2)))
            while self.day.now() < closes - timedelta(seconds=cycle / 2) and not self.day.over():
                n += 1
                if hall is None:  # no queue system: the staff press 开始 and 评价 on the pad
                    ticket = f"{d.window}-{n:03d}"
                    await role.service(ServiceCall(action="start", service_id=ticket, staff_id=staff))
                elif await hall.ticket(d, agent, rng) is None:  # the ticket, its wait, its call: the pad serves it
                    continue  # another window of the service called it first, or the day is over
                await self.day.sleep(cycle * rng.uniform(0.4, 0.8))
                if hall is None:
                    await role.service(ServiceCall(action="end", service_id=ticket))
                else:
                    await hall.queue.serve(d.window)
                await self.day.sleep(rng.uniform(8, 30))  # the citizen reads the pad (its prompt: 60 s)
                scripted = negative is not None and self.day.now() >= self.day.at(negative.at)
                if scripted or rng.random() >= part.walk_away:
                    level = 1 if scripted else rng.choice(part.levels)
                    role.keypad_sim.press(f"KEY_{level}")
                    if scripted:
                        negative = None
                        self.tell(f"{d.hall.short} {d.window} 窗口收到差评 (1 分)")
                await self.day.sleep(cycle * rng.uniform(0.2, 0.5))

    async def wait_quiet(self) -> None:
        """Until every agent's outbox is confirmed by the store (bounded): the day's last events are in."""
        for _ in range(100):
            if all(a.outbox.depth == 0 for _, a in self.fleet if a not in self.switched_off):
                return
            await asyncio.sleep(0.1)
        with contextlib.suppress(Exception):
            waiting = sum(a.outbox.depth for _, a in self.fleet if a not in self.switched_off)
            log.warning("%d events still wait in the agents' outboxes", waiting)

    async def finish(self, within_s: float) -> None:
        """The day's last scheduled actions done and stored (bounded by ``within_s`` real seconds): every hall's
        punches taken or told as not taken, and as many punches stored as were taken. The day ends at its hall
        time, but on a loaded machine the terminals' queue (each person waits for the answer) can run past it:
        Wanzhou's 17:58 sign-outs must be in before the centre stops, or someone stays 待签退."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while (behind := await self._punches_behind()) is not None:
            if loop.time() >= deadline:
                log.warning("the day's last punches not all in after %g s: %s", within_s, behind)
                return
            await asyncio.sleep(0.1)

    async def _punches_behind(self) -> str | None:
        """A hall whose punches are not all played and stored, as "site made/planned (not taken), stored"; None:
        all in."""
        for hall in HALLS:
            plan = self.expected.get(hall.site, {})
            made, failed, planned = plan.get("punched", []), plan.get("failed", []), plan.get("planned")
            e = events.c
            stored = await self.store.scalar(
                sa.select(sa.func.count())
                .select_from(events)
                .where(e.site == hall.site, e.type == "attendance.punch", e.ts >= self.day.start)
            )
            if planned is None or len(made) + len(failed) < len(planned) or (stored or 0) < len(made):
                return f"{hall.site} made {len(made)}/{len(planned or [])} (not taken {len(failed)}), stored {stored}"
        return None


def _answers(fb: Feedback, staff_id: str) -> bool:
    """The terminal's answer to this person: their punch (or 已打卡), or a refusal (a QR refusal names nobody)."""
    return not fb.prompt and (fb.staff_id == staff_id or not fb.ok)


async def _scanner(role: AttendanceRole) -> SimulatedScanner:
    """The terminal's QR scanner twin, which comes up with the role's run() (bounded: TimeoutError)."""
    async with asyncio.timeout(ANSWER_REAL_S):
        while role.qr_sim is None:  # noqa: ASYNC110 -- the role offers no event for it
            await asyncio.sleep(0.05)
    assert role.qr_sim is not None
    return role.qr_sim


# -- what the demo shows ---------------------------------------------------------------------------------
PRESENCE_ZH = {"online": "在线", "offline": "离线", "stale": "无心跳", "shutdown": "已关机", "unknown": "未知"}
STEP_ZH = {
    "opened": "远程重启并通知",
    "warning": "预警",
    "breach": "超时",
    "dispatch": "派单上门",
    "resolved": "恢复通知",
    "escalation1": "升级通知",
    "escalation2": "再次升级",
    "locker_overdue": "通知现场人员",
}
COMMAND_ZH = {"succeeded": "成功", "failed": "失败", "running": "执行中", "queued": "排队", "expired": "过期"}
TASK_ZH = {"restock": "补货", "clean": "清洁", "inspection": "联合巡检"}
RECOVERY_ZH = {"self_healed": "自愈", "remote": "远程处置", "on_site": "现场处置"}
WEEKDAY_ZH = "一二三四五六日"
Report = Callable[[Store, Sites, str, "DemoDay", Path], Awaitable[None]]


class Counted(Protocol):
    received: int


async def show(store: Store, stop: asyncio.Event, sink: Counted, day: DemoDay, every_s: float) -> None:
    """A summary every ``every_s`` real seconds until ``stop`` is set or the day is over."""
    while not stop.is_set() and not day.over():
        left_s = (day.end - day.clock.now()).total_seconds() / day.speed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, min(every_s, left_s)))
        await summary(store, sink, day)


async def _by_site(store: Store, query: sa.Select[Any]) -> dict[str, int]:
    return {r[0]: int(r[1]) for r in await store.fetch(query)}


def progress_line(day: DemoDay, real_s: float) -> str:
    done = day.progress()
    bar = "█" * round(done * 20) + "░" * (20 - round(done * 20))
    return (
        f"[大厅时间 {day.now():%H:%M} ({day.start:%H:%M}–{day.end:%H:%M}) {bar} {done:4.0%},"
        f" {day.speed:g} 倍速, 已运行 {real_s:.0f} 秒]"
    )


async def summary(store: Store, sink: Counted, day: DemoDay) -> None:
    """One block: hall time and the day's progress, then per hall devices online, open incidents, punches,
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
    now = day.clock.now()
    print("\n" + progress_line(day, (now - day.start).total_seconds() / day.speed))
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
        print(
            f"    事件 {r.site}/{r.device} {kind_label(r.kind)} [{r.severity}] {state},"
            f" SLA 已计 {minutes:.0f} 分钟 ({STEP_ZH.get(_step_name(r.step), r.step)})"
        )
    print(f"  告警已发送 {sent} 条 (接收端收到 {sink.received}); 死信 dead letters: {dead}")


def _step_name(step: str) -> str:
    return {"new": "new", "acted": "opened", "warned": "warning", "breached": "breach"}.get(step, step)


async def presence_lines(store: Store) -> list[str]:
    rows = await store.fetch(
        sa.select(devices.c.site, devices.c.presence, sa.func.count()).group_by(devices.c.site, devices.c.presence)
    )
    return [f"  {r[0]:8} {PRESENCE_ZH.get(r[1], r[1])} ({r[1]}): {r[2]} 台" for r in rows]


# -- the day in review ---------------------------------------------------------------------------------------
async def day_summary(
    store: Store, sites: Sites, day: DemoDay, sink: Counted, staff: dict[str, list[StaffMember]], reports: list[Path]
) -> list[str]:
    """What happened that day, in Chinese: punches and verdicts, kiosk incidents and their SLA outcome, alerts,
    ratings and follow-ups, the reports written."""
    d = day.date
    until = min(day.now(), day.end)
    lines = [
        f"==== 今日小结 {d:%Y-%m-%d} (星期{WEEKDAY_ZH[d.weekday()]}) {day.start:%H:%M}–{until:%H:%M} 大厅时间 ===="
    ]
    start, end = day.start, day.start + timedelta(days=1)
    for hall in HALLS:
        s = hall.site
        lines.append(f"{sites[s].name or hall.short}:")
        lines += await _section("考勤", _attendance_lines(store, sites, day, s, staff[s]))
        lines += await _section("设备事件", _incident_lines(store, s, start, end))
        lines += await _section("耗材", _level_lines(store, s))
        lines += await _section("好差评", _rating_lines(store, s))
        lines += await _section("排队叫号", hd.queue_lines(store, s))
        lines += await _section("24小时区与日常值守", hd.duty_lines(store, s))
        lines += await _section("开关机", hd.power_lines(store, sites, s, d, day.clock.now()))
    n = notifications.c
    sent = await store.scalar(sa.select(sa.func.count()).select_from(notifications).where(n.state == "sent"))
    failed = await store.scalar(sa.select(sa.func.count()).select_from(notifications).where(n.state != "sent"))
    lines.append(
        f"告警: 已发送 {sent} 条, 未发出 {failed} 条; 本地接收端收到 {sink.received} 条消息"
        " (同一接收人同时到期的告警合并为一条, 见 alerts.log)"
    )
    lines.append(f"报告: {len(reports)} 份: " + ", ".join(p.name for p in reports))
    return lines


async def _attendance_lines(
    store: Store, sites: Sites, day: DemoDay, site: str, members: list[StaffMember]
) -> list[str]:
    punches = await store.scalar(
        sa.select(sa.func.count()).select_from(events).where(events.c.site == site, events.c.type == "attendance.punch")
    )
    days = await staff_days(store, sites, site, day.date, day.date, now=day.clock.now())
    names = {m.staff_id: m.name for m in members}
    by: dict[Verdict, list[str]] = {}
    for sd in days:
        by.setdefault(sd.verdict, []).append(sd.staff_id)
    counts = ", ".join(f"{VERDICT_ZH[v]} {len(ids)}" for v, ids in sorted(by.items(), key=lambda x: -len(x[1])))
    out = [f"  考勤: 打卡 {punches} 次; {len(days)} 人: {counts}"]
    for sd in days:
        # 在岗 / 未到岗 / 待签退: the day is not over (the demo may stop early), so not an exception to list
        if sd.verdict not in (Verdict.ON_TIME, Verdict.REST_DAY) and sd.verdict not in PROVISIONAL:
            out.append(f"    {VERDICT_ZH[sd.verdict]}: {names.get(sd.staff_id, '')} ({sd.staff_id}) {sd.reason}")
    return out


async def _incident_lines(store: Store, site: str, start: datetime, end: datetime) -> list[str]:
    """Each device incident of the day on one line, in the order things happened; outages with their SLA outcome."""
    i = incidents.c
    rows = await store.fetch(
        sa.select(incidents)
        .where(i.site == site, i.detected_at >= start, i.detected_at < end, i.device != "*")
        .order_by(i.detected_at)
    )
    out = [f"  设备事件 {len(rows)} 起" + (":" if rows else "")]
    for r in rows:
        happened = sorted(await _happenings(store, site, r))
        if r.closed_at is not None:
            minutes = ((r.cleared_at or r.closed_at) - r.detected_at).total_seconds() / 60
            how = RECOVERY_ZH.get(r.recovery, r.recovery or "恢复")
            happened.append((r.closed_at, f"关闭 ({how}, {minutes:.0f} 分钟恢复)"))
        else:
            happened.append((end, f"未关闭 ({'恢复验证中' if r.state == 'recovering' else '处理中'})"))
        text = "; ".join(f"{hm(at)} {what}" if at < end else what for at, what in happened)
        if r.kind in OUTAGE_KINDS:
            text += " → " + ("SLA 超时" if r.breached_at is not None else "SLA 内恢复" if r.closed_at else "SLA 计时中")
        out.append(f"    {r.device} {kind_label(r.kind)} [{r.severity}]: {text}")
    t = tasks.c
    grouped = await store.fetch(
        sa.select(t.kind, t.item, t.state, sa.func.count(), sa.func.min(t.created_at))
        .where(t.site == site, t.created_at >= start, t.created_at < end)
        .group_by(t.kind, t.item, t.state)
    )
    for g in grouped:
        state = "已完成" if g[2] == "done" else "待处理" if g[2] == "open" else g[2]
        what = TASK_ZH.get(g[0], g[0]) + ("" if g[0] == "clean" else f" {consumable_label(g[1])[0]}")
        out.append(f"    任务 {what} ×{g[3]}: {hm(g[4])} 创建, {state}")
    return out


async def _level_lines(store: Store, site: str) -> list[str]:
    """Consumables with a level (the A4 printers' toner and paper): the level as the printer reported it, and the
    centre's forecast of when it runs out, labelled as the estimate it is."""
    c = consumable_levels.c
    rows = await store.fetch(
        sa.select(consumable_levels)
        .where(c.key.startswith(f"{site}/", autoescape=True), c.level_pct.is_not(None), c.consumable != "waste")
        .order_by(c.key, c.consumable)
    )
    out = []
    for r in rows:
        forecast = f", 预计 {r.empty_forecast.astimezone(ZONE):%m-%d %H:%M} 用完 (估算)" if r.empty_forecast else ""
        device = r.key.partition("/")[2]
        out.append(f"  耗材 {device} {consumable_label(r.consumable)[0]}: 余量 {r.level_pct:.0f}% (设备上报){forecast}")
    return out


async def _happenings(store: Store, site: str, r: Any) -> list[tuple[datetime, str]]:
    """Detection, the centre's restart, the pages by SLA step, the dispatch and the technician's arrival."""
    n, c, d = notifications.c, commands.c, dispatches.c
    out: list[tuple[datetime, str]] = [(r.detected_at, "发现")]
    steps = await store.fetch(
        sa.select(n.step, sa.func.min(n.created_at)).where(n.ref == f"incident:{r.id}").group_by(n.step)
    )
    out += [(at, STEP_ZH.get(step, step)) for step, at in steps if step != "opened"]
    restart = await store.fetch(
        sa.select(c.issued_at, c.state)
        .where(c.key == f"{site}/{r.device}", c.name == "restart_app", c.issued_at >= r.detected_at)
        .order_by(c.issued_at)
        .limit(1)
    )
    if r.kind in OUTAGE_KINDS:
        out += [(x.issued_at, f"T+0 中心下发 restart_app ({COMMAND_ZH.get(x.state, x.state)})") for x in restart]
    for x in await store.fetch(sa.select(d.due_at, d.arrived_at).where(d.incident_id == r.id)):
        out = [(at, f"{what}, 须在 {hm(x.due_at)} 前到场" if what == STEP_ZH["dispatch"] else what) for at, what in out]
        if x.arrived_at is not None:
            out.append((x.arrived_at, "技术人员到场"))
    return out


async def _section(name: str, lines: Awaitable[list[str]]) -> list[str]:
    """One part of the summary; a part that fails says so and costs the others nothing."""
    try:
        return await lines
    except Exception as exc:
        log.exception("summary: %s", name)
        return [f"  {name}: 未能汇总 ({exc})"]


def hm(t: datetime) -> str:
    return f"{t.astimezone(ZONE):%H:%M}"


async def _rating_lines(store: Store, site: str) -> list[str]:
    e = events.c
    ratings = await store.scalar(
        sa.select(sa.func.count()).select_from(events).where(e.site == site, e.type == "rating.submitted")
    )
    f = rating_followups.c
    rows = await store.fetch(sa.select(f.window, f.level, f.rated_at, f.reply_due).where(f.site == site))
    out = [f"  好差评: 评价 {ratings} 条, 差评跟踪 {len(rows)} 件"]
    for r in rows:
        due = "非实名, 无回复期限" if r.reply_due is None else f"须在 {r.reply_due.astimezone(ZONE):%m-%d %H:%M} 前回复"
        out.append(f"    {r.window} 窗口 {hm(r.rated_at)} 评 {r.level} 分, {due}")
    return out


# -- reports ------------------------------------------------------------------------------------------------
async def write_reports(store: Store, cfg: ConsumerConfig, folder: Path, day: DemoDay) -> list[Path]:
    """The day's reports per hall: the attendance exceptions of the day (考勤异常日报), and the month so far
    (月度考勤通报 with its details, kiosk SLA, ratings, the queue's 10/30/60, the duties and 24-hour area), all as
    of the end of the demo's day."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    sites = Sites(cfg.sites)
    month = f"{day.date:%Y-%m}"
    written: list[Path] = []
    for hall in HALLS:
        s = hall.site
        jobs: list[tuple[str, Report]] = [
            (f"{s}-attendance-{day.date}.xlsx", _attendance_day),
            (f"{s}-attendance-{month}.xlsx", _attendance_month),
            (f"{s}-kiosk-sla-{month}.xlsx", _sla),
            (f"{s}-ratings-{month}.xlsx", _ratings),
            (f"{s}-queue-{month}.xlsx", _queue),
            (f"{s}-duties-{month}.xlsx", _duties),
        ]
        for name, job in jobs:
            try:
                await job(store, sites, s, day, folder / name)
            except Exception as exc:  # one report failing must not cost the others
                print(f"报告 {name} 未能生成: {exc}")
                log.exception("report %s", name)
                continue
            written.append(folder / name)
    print(f"报告 reports: {len(written)} 份 in {folder}")
    return written


async def _attendance_day(store: Store, sites: Sites, site: str, day: DemoDay, path: Path) -> None:
    p = await load_period(store, sites, site, day.date, day.date, now=day.clock.now())
    table = daily_exceptions(p.days, p.members, day.date, faults=p.faults, zone=p.zone, site_name=p.site_name)
    write_attendance_xlsx([table], path, "zh-CN")


async def _attendance_month(store: Store, sites: Sites, site: str, day: DemoDay, path: Path) -> None:
    # The workbook the window management section signs, as the CLI and the dashboard write it (with the proxy
    # clockings and the month's chain heads): the demo shows the real document, not a copy of it.
    book = await month_workbook(store, sites, site, f"{day.date:%Y-%m}", now=day.clock.now())
    write_attendance_xlsx(book.tables, path, "zh-CN", book.heads)


async def _sla(store: Store, sites: Sites, site: str, day: DemoDay, path: Path) -> None:
    report = await build_sla_report(store, sites, site, f"{day.date:%Y-%m}", now=day.clock.now())
    write_sla_xlsx(report, path, "zh-CN")


async def _ratings(store: Store, sites: Sites, site: str, day: DemoDay, path: Path) -> None:
    report = await build_rating_report(store, sites, site, f"{day.date:%Y-%m}", now=day.clock.now())
    write_ratings_xlsx(report, path)


async def _queue(store: Store, sites: Sites, site: str, day: DemoDay, path: Path) -> None:
    await hd.queue_report(store, sites, site, f"{day.date:%Y-%m}", path)


async def _duties(store: Store, sites: Sites, site: str, day: DemoDay, path: Path) -> None:
    await hd.duties_report(store, sites, site, f"{day.date:%Y-%m}", day.clock.now(), path)
