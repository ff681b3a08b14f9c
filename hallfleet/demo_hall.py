"""The rest of the demo hall's hardware and its duties (issue 23), played on the same hall time as the rest of
the day (hallfleet/demo_scenario.py): each hall's queue system (the twin, drivers/queue/sim.py, on a real socket)
with a ticket dispenser and a call display reporting its steps, the rating pads bound to the same ticket numbers;
a door controller and a locker bank in the 24-hour area (RS-485 twins on pty pairs); the kiosks' daily network
check; a duty officer's patrol handheld; the departmental machines of a hall's 专区 (WZ 002:491), switched on in
the morning and shut down by their department, or not switched on at all.

The rule: the script only does what happens in a hall (a citizen takes a ticket, a window calls it, a door is
left open, an item is left in a locker, an officer scans a point); every verdict (a wait past QP 000:368's limit,
the combined alert of a paused pad with tickets waiting, a held-open door, an overdue item, a missed round, a
machine not switched on) is the centre's, from the events the devices send.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from agent.netcheck import Endpoint, NetCheckConfig
from agent.roles.rating import ServiceCall
from broker.duties.power import power_day
from broker.duties.report import OFF_ZH, ON_ZH, load_month
from broker.duties.report import build_report as build_duties_report
from broker.duties.report import write_report as write_duties_report
from broker.queueing.report import build_report as build_queue_report
from broker.queueing.report import write_report as write_queue_report
from broker.rules.devices import Registered, register_devices
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import events, notifications
from drivers.queue.sim import SimQueueSystem
from runtime.clock import HALL_ZONE

if TYPE_CHECKING:
    from collections.abc import Iterable

    from agent.agent import Agent
    from hallfleet.demo_scenario import DemoDay, Device, Hall

SERVICES = {"A": "A", "B": "B", "C": "C"}  # service code -> ticket prefix; their classes are in the site configs
DISPENSER = "queue-disp-1"  # the hall's ticket dispenser (the other queue device is its call display)
OFFICER = {"qingpu": "S0901", "wanzhou": "S0902"}  # the duty officers' cards (HFO1:<staff id>)


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LongWait(_Part):
    hall: str
    window: str
    at: time = Field(description="The window's next ticket waits past its service's limit (a long case before it)")
    wait_min: float = Field(default=16, gt=0, le=120, description="How long that ticket waits for its call")


class PausedPad(_Part):
    hall: str
    window: str
    at: time = Field(description="The pad shows 暂停服务 while tickets of the window's service wait")
    until: time = Field(description="The window resumes and calls them")


class QueuePart(_Part):
    wait_min: Annotated[list[Annotated[float, Field(gt=0, le=60)]], Field(min_length=2, max_length=2)] = Field(
        default=[1.0, 6.0], description="A ticket waits [least, most] minutes for its call on an ordinary day"
    )
    long_wait: list[LongWait] = Field(default_factory=list)
    paused: list[PausedPad] = Field(default_factory=list)


class AccessPart(_Part):
    entries_per_hour: float = Field(default=3, ge=0, le=60, description="Card entries to the 24-hour area an hour")
    held_open: dict[str, time] = Field(default_factory=dict, description="hall -> when its door is left open")
    held_open_min: float = Field(default=8, gt=0, le=120, description="...for this long")
    deposits: int = Field(default=4, ge=0, le=16, description="Items deposited in each hall's locker bank")
    left: dict[str, time] = Field(default_factory=dict, description="hall -> an item deposited then and never taken")
    locker_hold_h: float = Field(
        default=4, gt=0, le=72,
        description="The halls' limit for an item (site config, 72 h by default) shortened so the day shows it",
    )  # fmt: skip


class PatrolPart(_Part):
    missed: dict[str, str] = Field(default_factory=dict, description="hall -> the round its officer does not walk")
    point_gap_min: float = Field(default=2, gt=0, le=30, description="Minutes between two points of a round")


class PowerPart(_Part):
    machines: dict[str, dict[str, time | Literal["never"]]] = Field(
        default_factory=dict,
        description="hall -> departmental machine (a name its site config's duties.power.departments covers) -> the"
        ' hall time its department shuts it down, or "never": registered with the centre, not switched on today',
    )

    def switched_on(self, site: str) -> list[str]:
        return [name for name, off in self.machines.get(site, {}).items() if off != "never"]


def check_power(part: PowerPart, sites: Sites) -> list[str]:
    """Each machine the scenario names is a departmental machine of its hall's site config."""
    return [
        f"power.machines.{site}.{name}: not under duties.power.departments of {site}"
        for site, machines in part.machines.items()
        for name in machines
        if site in sites.names() and sites[site].duties.power.department_of(name) is None
    ]


async def register_machines(store: Store, part: PowerPart, at: datetime) -> None:
    """The IT section's registry lists the departments' machines (hallfleet provision, broker/rules/devices.py), so
    the centre judges one that is never switched on; a registered row is not in service until the machine speaks."""
    entries = [Registered(site, name, "none", False) for site, names in part.machines.items() for name in names]
    async with store.engine.begin() as conn:
        await register_devices(conn, entries, by="demo", at=at)


async def register_24_hour(store: Store, devices: Iterable[Device], at: datetime) -> None:
    """IT registers the 24-hour area's devices as 24-hour devices (``hallfleet provision sync`` writes the same rows,
    broker/rules/devices.py): their SLA clocks count wall-clock time because the registry says so, not their names."""
    entries = [Registered(d.hall.site, d.name, d.role, True) for d in devices if d.hours24]
    async with store.engine.begin() as conn:
        await register_devices(conn, entries, by="demo", at=at)


# -- agent sections ---------------------------------------------------------------------------------------
def queue_section(d: Device, queues: dict[str, SimQueueSystem]) -> dict[str, Any]:
    """The dispenser reports the tickets it printed, the display every call and service: each step once."""
    driver = {"type": "http", "url": queues[d.hall.site].url}
    if d.name == DISPENSER:
        return {"kind": "dispenser", "driver": driver, "poll_s": 0.5}
    return {"kind": "display", "driver": driver, "poll_s": 0.5}


def door_section() -> dict[str, Any]:
    # held_open_s and snapshot_s are hall seconds (the agent's clock); poll_s is a real sleep.
    return {"controller": {"type": "sim", "doors": ["main"], "grant_s": 20}, "poll_s": 0.25, "held_open_s": 180}


def locker_section() -> dict[str, Any]:
    return {"bank": "A", "board": {"type": "sim", "compartments": 16}, "poll_s": 0.25}


def patrol_section() -> dict[str, Any]:
    return {"scanner": {"type": "sim", "gap_s": 0.05}}


def netcheck_config(broker_port: int, sink_port: int) -> NetCheckConfig:
    """The kiosks' daily check (QP 000:389 「网络日常检查」): the demo's loopback stands in for the hall's network
    (the broker's port as the gateway, the alert sink as the extranet endpoint); the centre is the MQTT link."""
    return NetCheckConfig(
        daily_at="08:10",
        gateway=Endpoint(host="127.0.0.1", port=broker_port),
        dns_name="localhost",
        extranet=Endpoint(host="127.0.0.1", port=sink_port),
    )


def window_services(window: str) -> list[str]:
    """W01, W04 ... call A; W02, W05 ... B; W03, W06 ... C (as the example site configs list them)."""
    return [sorted(SERVICES)[(int(window[1:]) - 1) % len(SERVICES)]]


# -- the script -------------------------------------------------------------------------------------------
class HallPlay:
    """What happens at one hall's queue, 24-hour area and patrol; ``tell`` narrates it."""

    def __init__(self, day: DemoDay, hall: Hall, queue: SimQueueSystem, part: Any, tell: Any) -> None:
        self.day = day
        self.hall = hall
        self.queue = queue
        self.part = part  # DayScenario: .queue, .access, .patrol, .power
        self.tell = tell
        self.rng = random.Random(f"hall-{hall.site}")
        self.held: dict[str, datetime] = {}  # service -> its windows call no ticket before then (scripted)
        # The scripted cases still to play in this hall (each plays once; the scenario itself is left as loaded).
        self.long_waits: list[LongWait] = [x for x in part.queue.long_wait if x.hall == hall.site]
        self.pauses: list[PausedPad] = [x for x in part.queue.paused if x.hall == hall.site]

    async def bind_pad(self, d: Device, agent: Agent) -> None:
        """The queue system reaches the window's pad (its QueueServer on a free port) to start and end services."""
        role = agent.rating
        assert role is not None
        while role.queue is None or role.queue.port is None:  # noqa: ASYNC110 -- the pad offers no event for it
            await asyncio.sleep(0.05)
        self.queue.pads[d.window] = f"http://127.0.0.1:{role.queue.port}/service"

    async def ticket(self, d: Device, agent: Agent, rng: random.Random) -> str | None:
        """One citizen at the window: a ticket from the dispenser, a wait, the call (the pad shows 正在为您办理);
        None when another window of the service called it first or the day is over. A scripted long wait holds
        every window of the service (a long case at each), a scripted pause this window's pad."""
        service = window_services(d.window)[0]
        ticket = self.queue.issue(service, dispenser=DISPENSER)
        due = self.day.clock.now() + timedelta(minutes=rng.uniform(*self.part.queue.wait_min))
        now = self.day.now()
        for lw in list(self.long_waits):
            if lw.window == d.window and self.day.at(lw.at) <= now:
                self.long_waits.remove(lw)
                self.held[service] = self.day.clock.now() + timedelta(minutes=lw.wait_min)
                self.tell(
                    f"{d.hall.short} {service} 类业务窗口都在办理复杂件, 取号 {ticket} 等候 {lw.wait_min:.0f} 分钟"
                )
        for p in list(self.pauses):
            if p.window == d.window and self.day.at(p.at) <= now:
                self.pauses.remove(p)
                self.held[service] = self.day.at(p.until) + timedelta(minutes=1)
                await self._paused(d, agent, p, ticket)
        await self.day.until(max(due, self.held.get(service, due)))
        if self.day.over():
            return None
        return await self.queue.call(d.window, [service])

    async def _paused(self, d: Device, agent: Agent, p: PausedPad, ticket: str) -> None:
        role = agent.rating
        assert role is not None
        await role.service(ServiceCall(action="pause"))
        self.tell(f"{d.hall.short} {d.window} 窗口评价器暂停服务, 取号 {ticket} 在等候")
        await self.day.until(self.day.at(p.until))
        await role.service(ServiceCall(action="resume"))
        self.tell(f"{d.hall.short} {d.window} 窗口恢复服务")

    async def door(self, agent: Agent) -> None:
        """Card entries all day (the lock releases, the door opens and shuts); one door left open past the limit."""
        role = agent.door
        assert role is not None and role.sim is not None
        sim, part = role.sim, self.part.access
        held = self.day.at(part.held_open[self.hall.site]) if self.hall.site in part.held_open else None
        while not self.day.over():
            gap = 3600 / part.entries_per_hour if part.entries_per_hour else 3600
            await self.day.sleep(self.rng.uniform(0.5, 1.5) * gap)
            if self.day.over():
                return
            sim.grant()
            sim.open_door()
            if held is not None and self.day.now() >= held:
                held = None
                self.tell(f"{self.hall.short} 24小时区门禁被人撑住未关 ({part.held_open_min:.0f} 分钟)")
                await self.day.sleep(part.held_open_min * 60)
                self.tell(f"{self.hall.short} 24小时区门已关好")
            else:
                await self.day.sleep(40)
            sim.shut_door()

    async def lockers(self, agent: Agent) -> None:
        """Deposits through the morning, each collected a few hours later, but the one the scenario leaves."""
        role = agent.locker
        assert role is not None and role.sim is not None
        sim, part = role.sim, self.part.access
        start = max(self.day.now(), self.day.at(time(8, 30)))
        times = sorted(start + timedelta(minutes=self.rng.uniform(0, 300)) for _ in range(part.deposits))
        left = self.day.at(part.left[self.hall.site]) if self.hall.site in part.left else None
        plan: list[tuple[datetime, int, str]] = []
        never: set[int] = set()
        for no, at in enumerate(times, start=1):
            plan.append((at, no, "put"))
            if left is not None and at >= left:
                left = None
                never.add(no)
                continue
            plan.append((at + timedelta(minutes=self.rng.uniform(60, 180)), no, "take"))
        for at, no, what in sorted(plan):
            await self.day.until(at)
            if self.day.over():
                return
            sim.release(no)
            await asyncio.sleep(0.6)  # the role sees the door open before the item (it polls every 0.25 s)
            sim.put(no) if what == "put" else sim.take(no)
            await asyncio.sleep(0.6)
            sim.shut(no)
            if no in never:
                self.tell(f"{self.hall.short} 自助寄取柜 {no} 号格寄存物品, 无人来取")

    async def patrol(self, agent: Agent, rounds: list[Any], points: list[str]) -> None:
        """The duty officer walks each round a few minutes after it opens, scanning the card, then every point."""
        role = agent.patrol
        assert role is not None
        while role.sim is None:  # noqa: ASYNC110 -- the handheld's scanner twin comes up with its run()
            await asyncio.sleep(0.05)
        part = self.part.patrol
        for r in rounds:
            start = self.day.at(time.fromisoformat(r.start)) + timedelta(minutes=3)
            if self.day.now() > start:
                continue
            await self.day.until(start)
            if part.missed.get(self.hall.site) == r.name:
                self.tell(f"{self.hall.short} {r.name}巡查: 值班人员被叫走, 本轮未巡查")
                continue
            role.sim.type(f"HFO1:{OFFICER[self.hall.site]}")
            for p in points:
                await self.day.sleep(part.point_gap_min * 60)
                role.sim.type(f"HFP1:{p}")
            self.tell(f"{self.hall.short} {r.name}巡查完成 ({len(points)} 个点位)")

    async def switch_off(self, name: str, department: str, agent: Agent) -> bool:
        """The department's staff shut their machine down at the scenario's time: a clean stop, so its agent says
        ``shutdown`` as a real one does when the operating system stops it. False: the day ended first."""
        off = self.part.power.machines.get(self.hall.site, {}).get(name)
        if not isinstance(off, time):
            return False
        await self.day.until(self.day.at(off))
        if self.day.over():
            return False
        agent.stop()
        self.tell(f"{self.hall.short} {department} 下班关闭自助服务区计算机 {name}")
        return True

    async def never_on(self, name: str, department: str, on_by: time) -> None:
        await self.day.until(self.day.at(on_by))
        if not self.day.over():
            self.tell(f"{self.hall.short} {department} 的自助服务区计算机 {name} 今天无人开机")


# -- the day in review ----------------------------------------------------------------------------------
QUEUE_STEPS_ZH = {"issued": "取号", "called": "叫号", "served": "办结", "transferred": "转办", "abandoned": "放弃"}
NOTICE_ZH = {
    "queue_wait": "等候超时",
    "window_unattended": "窗口无人接待 (合并告警)",
    "patrol_missed": "巡查未完成",
    "netcheck_failed": "网络检查未通过",
    "netcheck_missing": "网络检查未上报",
}
POWER_ZH = {"power_not_on": "未开机", "power_not_off": "下班后未关机", "power_unclean": "非正常关机"}


async def _counts(store: Store, query: sa.Select[Any]) -> dict[str, int]:
    return {str(r[0]): int(r[1]) for r in await store.fetch(query)}


async def power_lines(store: Store, sites: Sites, site: str, day: date, now: datetime) -> list[str]:
    """Each departmental machine's power-on and power-off as the centre judges them now, from the stored events
    (the duties job runs every few real seconds, so the evening's verdicts may not have been told yet), and the
    notices the IT section got."""
    if not sites[site].duties.power.departments:
        return []
    async with store.engine.connect() as conn:
        days = await power_day(conn, site, sites[site], day, now)
    out = [f"  开关机 (WZ 002:491, 各职能部门自行负责): {len(days)} 台"]
    for p in days:
        on = ON_ZH[p.on] + (f" {_hm(p.booted_at)}" if p.booted_at else "")
        off = "" if p.off == "none" else ", " + OFF_ZH[p.off] + (f" {_hm(p.off_at)}" if p.off_at else "")
        out.append(f"    {p.department} {p.device}: {on}{off}")
    return out + await _notices(store, site, tuple(POWER_ZH))


async def _notices(store: Store, site: str, steps: tuple[str, ...]) -> list[str]:
    """Each alert of these steps the centre raised, once (a notice goes to several recipients)."""
    n = notifications.c
    rows = await store.fetch(
        sa.select(n.step, n.ref, sa.func.min(n.created_at), sa.func.min(n.body))
        .where(n.site == site, n.step.in_(steps))
        .group_by(n.step, n.ref)
        .order_by(sa.func.min(n.created_at))
    )
    words = NOTICE_ZH | POWER_ZH
    return [f"    告警 {words.get(r[0], r[0])} {_hm(r[2])}: {r[3].splitlines()[0]}" for r in rows]


async def queue_lines(store: Store, site: str) -> list[str]:
    """Tickets by step as the dispenser and the display reported them, and the queue job's alerts."""
    e = events.c
    steps = await _counts(
        store,
        sa.select(e.type, sa.func.count()).where(e.site == site, e.type.like("queue.ticket_%")).group_by(e.type),
    )
    told = ", ".join(f"{zh} {steps.get(f'queue.ticket_{k}', 0)}" for k, zh in QUEUE_STEPS_ZH.items())
    return [f"  排队叫号: {told}"] + await _notices(store, site, ("queue_wait", "window_unattended"))


async def duty_lines(store: Store, site: str) -> list[str]:
    """The 24-hour area's door and locker events, the kiosks' network checks, the patrol scans, and what the
    centre told of them (door and locker alarms are incidents: the 设备事件 part lists them)."""
    e = events.c
    types = await _counts(
        store,
        sa.select(e.type, sa.func.count())
        .where(e.site == site, sa.or_(e.type.like("door.%"), e.type.like("locker.%"), e.type.like("duty.%"),
                                      e.type.like("patrol.%")))
        .group_by(e.type),
    )  # fmt: skip
    checks = await store.fetch(sa.select(e.device, e.data).where(e.site == site, e.type == "duty.netcheck"))
    passed = sum(1 for r in checks if json.loads(r.data).get("ok"))
    door = sum(v for k, v in types.items() if k.startswith("door."))
    locker = sum(v for k, v in types.items() if k.startswith("locker."))
    return [
        f"  24小时区: 门禁事件 {door} 条, 寄取柜事件 {locker} 条",
        f"  日常值守: 网络检查 {len(checks)} 台次 (通过 {passed}), 巡查扫码 {types.get('patrol.scan', 0)} 次",
    ] + await _notices(store, site, tuple(NOTICE_ZH)[2:])


def _hm(t: datetime) -> str:
    return f"{t.astimezone(HALL_ZONE):%H:%M}"


async def queue_report(store: Store, sites: Sites, site: str, month: str, path: Path) -> None:
    write_queue_report(await build_queue_report(store, sites, site, month), path, sites)


async def duties_report(store: Store, sites: Sites, site: str, month: str, now: datetime, path: Path) -> None:
    write_duties_report(build_duties_report(await load_month(store, sites, site, month, now)), path, sites)
