"""The fleet: N real agents of mixed roles on this event loop, and the people and faults a scenario plays.

Devices are planned per hall (the demo's two halls, their site configs and name scheme) by the scenario's
role mix; each gets the demo's agent config (hallfleet/demo_scenario.agent_config) adjusted for scale:
the scenario's heartbeat, its kiosk poll, its fingerprint poll, and optionally an in-memory outbox. Staff
punch with their QR code, or (``arrivals.finger_share``) with a finger on the fingerprint twin of one
terminal of their hall, enrolled there by the fingerprint_enrol command when the day starts; a terminal
that lost power since forgot its twin's library, so its finger punchers fall back to their QR code. All
agents share one ScaledClock.
A share of the kiosks (``kiosk.a4_share``) has an A4 printer: one simulated IPP server per simulator process
serves them all by path (drivers/ipp/sim.py); it starts with the fleet, which then points those kiosks at it
(the port is known only then), and each ticket's A4 pages are printed on it over IPP.
The rest of the hall (issue 23, hallfleet/fleet/hall.py): queue devices on a queue-system twin per hall in each
simulator process (the windows of the slice serve its tickets, their pads rate the same numbers), the 24-hour
area's door controllers and locker banks and the duty officers' patrol handhelds playing the demo's script, and
the kiosks' daily network check (``kiosk.netcheck_at``). Departmental machines (``mix.department``, WZ 002:491;
hallfleet/fleet/departments.py) are not started with the fleet: each boots at its department's time and is shut
down cleanly in the evening, or left on.

Time: scenario times are simulated (hall-local); the agents' event times run ``speed`` times faster than
real time, and so do their timers: rating-pad timeouts, kiosk snapshots and the heartbeat (the agent waits
``heartbeat_s`` of its clock). So a heartbeat of 30 simulated seconds at speed 60 is two a second per
device: the scenario's ``heartbeat_s`` is simulated and should grow with the speed. The consumer must count
on the same clock (the CLI passes it ``fleet.clock``), else its stale deadline (1.5 heartbeats) is in real
seconds and only ever late, never wrong. Only the MQTT keepalive stays real; so does the outbox's re-send
of unconfirmed events (``confirm_timeout_s`` is scaled by the speed here, or a consumer busy for one real
second would see everything sent twice).

Faults: ``app_crash`` (the kiosk application's health probe fails; the agent's self-healing and the
centre see it), ``printer_jam`` (the receipt printer reports a cutter error), ``paper_out`` (the roll is
empty), ``network_loss`` (the device's relay resets its connection and refuses new ones), ``power_loss``
(the agent task is cancelled: the socket closes without DISCONNECT, the broker publishes the Will; it
starts again on the same outbox when the fault ends), ``door_forced`` (a door of the controller opened while
locked, shut when it ends), ``locker_jam`` (a compartment's door stops taking its state).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time as _time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from agent.agent import Agent
from agent.config import AgentConfig, OutboxConfig
from agent.roles.kiosk import SimulatedReceiptConfig
from agent.roles.rating import ServiceCall
from agent.roles.usage import LogUsageConfig
from broker.attendance.roster import StaffMember
from broker.sites import SiteConfig
from drivers.ipp.client import A4PrinterConfig, print_job
from drivers.ipp.raster import a4_pages
from drivers.ipp.sim import SimulatedIppServer
from drivers.queue.sim import SimQueueSystem
from hallfleet import demo_hall as hd
from hallfleet import demo_scenario as ds
from hallfleet.fingers import enrol_on_twin
from hallfleet.fleet import departments as fd
from hallfleet.fleet import hall as fh
from hallfleet.fleet.netcut import NetCut
from hallfleet.fleet.scenario import Fault, FleetRole, Scenario
from runtime.clock import HALL_ZONE, ScaledClock
from runtime.settings import MqttConfig

log = logging.getLogger(__name__)
A4_LINE = "a4 page printed"
MEMORY = Path(":memory:")
END = time(23, 59)  # the scripted hall devices play until then


@dataclass(slots=True)
class Member:
    """One simulated device: its plan, its config, and the agent running it now (a new one after power loss)."""

    hall: ds.Hall
    name: str
    role: FleetRole
    index: int  # within its role in the hall
    device: ds.Device | None  # the demo's plan of it (None for heartbeat-only agents)
    cfg: AgentConfig | None = None
    agent: Agent | None = None
    task: asyncio.Task[None] | None = None
    net: NetCut | None = None
    faults: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.hall.site}/{self.name}"

    @property
    def up(self) -> bool:
        return self.task is not None and not self.task.done()


POWER_OFF_SLOW_S = 10.0  # an agent still running this long after power_off is named in the log


def _where(task: asyncio.Task[Any]) -> str:
    """Where a task is parked: its chain of awaits, outermost first."""
    where: list[str] = []
    coro: Any = task.get_coro()
    while coro is not None and len(where) < 8:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            where.append(f"{frame.f_code.co_name} ({Path(frame.f_code.co_filename).name}:{frame.f_lineno})")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return " -> ".join(where)


def _retrieve(tasks: list[asyncio.Task[Any]]) -> None:
    """Take the outcome of the tasks that ended (an agent's failure was logged by the agent), so asyncio does not
    report it again as never retrieved."""
    for t in tasks:
        if t.done() and not t.cancelled():
            t.exception()


def role_counts(n: int, scenario: Scenario) -> dict[FleetRole, int]:
    """Devices per role for N devices: the mix's shares, rounded so they add up to N (largest remainder)."""
    shares = scenario.mix.shares()
    total = sum(shares.values())
    exact = {r: n * s / total for r, s in shares.items()}
    counts = {r: int(v) for r, v in exact.items()}
    for r in sorted(exact, key=lambda r: exact[r] - counts[r], reverse=True)[: n - sum(counts.values())]:
        counts[r] += 1
    return counts


def plan(n: int, scenario: Scenario) -> tuple[list[Member], dict[int, list[Member]]]:
    """N devices over the demo's halls, alternating, named as the demo names them; and whom each fault hits."""
    out: list[Member] = []
    for role, count in role_counts(n, scenario).items():
        if role == "department":
            out += _department_members(count)
            continue
        per_hall = [count // len(ds.HALLS) + (1 if h < count % len(ds.HALLS) else 0) for h in range(len(ds.HALLS))]
        for hall, k in zip(ds.HALLS, per_hall, strict=True):
            half = (k + 1) // 2
            for i in range(k):
                if role == "attendance":
                    name = f"att-entrance-{i + 1}"
                    out.append(Member(hall, name, role, i, ds.Device(hall, name, role, i)))
                elif role == "kiosk":
                    name = f"kiosk-24h-{i + 1}" if i < half else f"kiosk-{i + 1 - half}"
                    out.append(Member(hall, name, role, i, ds.Device(hall, name, role, i, hours24=i < half)))
                elif role == "rating":
                    window = f"W{i + 1:02d}"
                    name = f"pad-w{i + 1:02d}"
                    out.append(Member(hall, name, role, i, ds.Device(hall, name, role, i, window)))
                elif role in HALL_NAMES:
                    name = HALL_NAMES[role].format(i + 1)
                    hours24 = role in ("door", "locker")  # the 24-hour area's, as in the demo
                    out.append(Member(hall, name, role, i, ds.Device(hall, name, role, i, hours24=hours24)))
                else:
                    out.append(Member(hall, f"node-{i + 1:04d}", role, i, None))
    return out, assign_faults(out, scenario)


def _department_members(count: int) -> list[Member]:
    """Departmental machines go to the halls whose site config names departments (none: no such machines)."""
    halls = fd.halls()
    out: list[Member] = []
    for h, hall in enumerate(halls):
        k = count // len(halls) + (1 if h < count % len(halls) else 0)
        out += [Member(hall, name, "department", i, None) for i, name in enumerate(fd.machine_names(hall, k))]
    return out


# As the demo names them (hallfleet/demo_scenario.hall_devices), numbered.
HALL_NAMES: dict[ds.Role, str] = {
    "queue": "queue-{}",
    "door": "door-24h-{}",
    "locker": "locker-24h-{}",
    "patrol": "patrol-{}",
}


def assign_faults(members: list[Member], scenario: Scenario) -> dict[int, list[Member]]:
    """Which devices each fault hits: those it names, else the first of its role not hit by another fault
    (so every scripted fault is seen on its own)."""
    targets: dict[int, list[Member]] = {}
    by_key = {m.key: m for m in members}
    used: set[str] = set()
    for k, f in enumerate(scenario.faults):
        if f.names:
            hit = [by_key[n] for n in f.names if n in by_key]
        else:
            pool = [m for m in members if (f.role is None or m.role == f.role) and m.key not in used]
            hit = pool[: f.devices]
        for m in hit:
            used.add(m.key)
            m.faults.append(f.kind)
        targets[k] = hit
    return targets


def at_day(day: date, t: time) -> datetime:
    return datetime.combine(day, t, tzinfo=HALL_ZONE)


class Fleet:
    def __init__(
        self,
        scenario: Scenario,
        n: int,
        mqtt: MqttConfig,
        workdir: Path,
        *,
        speed: float = 1.0,
        memory_outbox: bool = False,
        health_base: str = "http://127.0.0.1:9",
        health: dict[str, bool] | None = None,
        shard: tuple[int, int] = (0, 1),
        clock: ScaledClock | None = None,
    ) -> None:
        """``shard`` (i, k): this process runs the i-th of k slices of the N devices (hallfleet/fleet/shards.py),
        and plays the people and faults of its slice only; ``clock``: the coordinator's, shared by every slice."""
        self.shard, self.shards = shard
        self.scenario = scenario
        self.mqtt = mqtt
        self.workdir = workdir
        self.speed = speed
        self.memory_outbox = memory_outbox
        self.health_base = health_base
        self.health = health if health is not None else {}
        self.today = datetime.now(HALL_ZONE).date()
        self.clock = clock or ScaledClock(at_day(self.today, scenario.start), speed)
        everyone, targets = plan(n, scenario)
        self._planned = everyone  # rosters and the demo's config builders see the whole fleet, in every slice
        self.members = everyone[self.shard :: self.shards]
        mine = set(map(id, self.members))
        self.fault_targets = {k: [m for m in hit if id(m) in mine] for k, hit in targets.items()}
        self._demo_day = self._as_demo_day()
        self.staff: dict[str, list[StaffMember]] = {}
        self.counts: Counter[str] = Counter()
        self.connect_s: float | None = None
        self._rng = random.Random(scenario.seed)
        self._script: asyncio.Task[None] | None = None
        self.printers: SimulatedIppServer | None = None  # the A4 printers, once start() opened them
        self.queues: dict[
            str, SimQueueSystem
        ] = {}  # hall -> this process's queue-system twin (hallfleet/fleet/hall.py)
        self.sites = {site: SiteConfig.model_validate(raw) for site, raw in ds.load_sites().items()}
        self._resources = contextlib.AsyncExitStack()

    # -- building ------------------------------------------------------------------------------------
    def prepare(self) -> None:
        """Staff rosters, the terminals' salt and staff map, the kiosks' usage logs, every agent's config."""
        devices = [m.device for m in self._planned if m.device is not None]
        for hall in ds.HALLS:
            self.staff[hall.site] = ds.staff_of(hall, devices, self.today)
            if any(m.role == "attendance" and m.hall == hall for m in self._planned):
                ds.write_attendance_files(self.workdir, hall, self.staff[hall.site])
        for m in self.members:
            m.cfg = self.agent_config(m)

    def agent_config(self, m: Member) -> AgentConfig:
        sc = self.scenario
        path = MEMORY if self.memory_outbox else self.workdir / "agents" / f"{m.hall.site}-{m.name}.db"
        outbox = OutboxConfig(path=path, confirm_timeout_s=OutboxConfig().confirm_timeout_s * self.speed)
        if m.device is None:
            return AgentConfig(
                site=m.hall.site,
                device=m.name,
                role="none",
                heartbeat_s=sc.heartbeat_s,
                mqtt=self.mqtt,
                outbox=outbox,
                clock_sync_file=Path("/"),
            )
        cfg = ds.agent_config(
            m.device, self.workdir, self.mqtt, self.health_base, self.speed, self._demo_day, queues=self.queues
        )
        update: dict[str, Any] = {"heartbeat_s": sc.heartbeat_s, "outbox": outbox}
        if cfg.kiosk is not None:
            usage = cfg.kiosk.usage
            assert isinstance(usage, LogUsageConfig)
            update["kiosk"] = cfg.kiosk.model_copy(
                update={
                    "receipt": SimulatedReceiptConfig(paper_mm=sc.kiosk.roll_mm),
                    "usage": usage.model_copy(update={"patterns": {**usage.patterns, "a4_pages": A4_LINE}}),
                    "poll_s": sc.kiosk.poll_s,
                }
            )
        if cfg.attendance is not None:
            update["attendance"] = cfg.attendance.model_copy(
                update={"fingerprint_poll_s": sc.arrivals.fingerprint_poll_s}
            )
        if cfg.kiosk is not None and sc.kiosk.netcheck_at is not None:
            update["netcheck"] = fh.netcheck(self.mqtt, f"{sc.kiosk.netcheck_at:%H:%M}")
        if m.role == "queue":
            update["queue"] = self._queue_sections(m.hall)[m.name]
        return cfg.model_copy(update=update)

    def _queue_sections(self, hall: ds.Hall) -> dict[str, Any]:
        """This slice's queue devices of the hall on its twin, the windows of this slice's pads split among them."""
        mine = [m for m in self.members if m.hall == hall]
        windows = [m.device.window for m in mine if m.role == "rating" and m.device and m.device.window]
        devices = [m.name for m in mine if m.role == "queue"]
        return fh.queue_sections(devices, windows, self.queues[hall.site].url)

    def _as_demo_day(self) -> ds.DayScenario:
        """What the demo's config builder reads from its own scenario: which kiosks get an application watch
        (those this scenario crashes). The rest of the demo's day is not played here."""
        crash = [m for k, f in enumerate(self.scenario.faults) if f.kind == "app_crash" for m in self.fault_targets[k]]
        return ds.DayScenario.model_validate(
            {
                "day": {"start": self.scenario.start, "end": "23:59"},
                "halls": {},
                "kiosks": {
                    "tickets_per_hour": {},
                    "app_failures": [
                        {"hall": m.hall.site, "kiosk": m.name, "at": "00:00", "until": "23:59"} for m in crash
                    ],
                },
                "ratings": {"services_per_hour": 1, "levels": [5]},
                # A fleet's hall has hundreds of patrol points (its pads and kiosks): a scan every 3 hall seconds.
                "patrol": {"point_gap_min": 0.05},
            }
        )

    # -- running -------------------------------------------------------------------------------------
    async def start(self, *, batch: int = 200, connect_timeout_s: float = 120.0) -> None:
        """Start every agent, ``batch`` at a time, each batch once the last one is connected (a burst of
        thousands of SYNs overflows the broker's listen backlog); ``connect_s`` is how long it all took."""
        await self._open_queues()
        if not self.staff:
            self.prepare()
        await self._attach_printers()
        for m in self.members:
            if "network_loss" in m.faults:
                m.net = NetCut(self.mqtt.host, self.mqtt.port)
                await m.net.start()
                assert m.cfg is not None
                m.cfg = m.cfg.model_copy(update={"mqtt": self.mqtt.model_copy(update={"port": m.net.port})})
        t0 = _time.monotonic()
        booting = [m for m in self.members if m.role != "department"]  # those boot at their department's time
        for i in range(0, len(booting), batch):
            chunk = booting[i : i + batch]
            for m in chunk:
                self.power_on(m)
            await self.wait_connected(chunk, connect_timeout_s)
        self.connect_s = _time.monotonic() - t0

    async def _open_queues(self) -> None:
        """A queue-system twin per hall whose queue devices this slice holds, up before they poll it."""
        prefixes = fh.ticket_prefixes(self.shard)
        for hall in ds.HALLS:
            if any(m.role == "queue" and m.hall == hall for m in self.members) and hall.site not in self.queues:
                twin = SimQueueSystem(lambda: self.clock.now(), prefixes)
                self.queues[hall.site] = await self._resources.enter_async_context(twin)

    async def _attach_printers(self) -> None:
        """Open the A4 printers' server and point the kiosks that have a printer at theirs."""
        share = self.scenario.kiosk.a4_share
        chosen = [m for m in self.members if m.role == "kiosk" and int((m.index + 1) * share) > int(m.index * share)]
        if not chosen:
            return
        self.printers = await self._resources.enter_async_context(SimulatedIppServer())
        for m in chosen:
            assert m.cfg is not None and m.cfg.kiosk is not None
            name = f"{m.hall.site}-{m.name}"
            self.printers.add(name)
            a4 = A4PrinterConfig(url=self.printers.url(name))
            m.cfg = m.cfg.model_copy(update={"kiosk": m.cfg.kiosk.model_copy(update={"a4": a4})})

    async def wait_connected(self, members: list[Member], timeout_s: float) -> None:
        async def one(m: Member) -> None:
            assert m.agent is not None
            await m.agent.link.connected.wait()

        try:
            await asyncio.wait_for(asyncio.gather(*(one(m) for m in members)), timeout_s)
        except TimeoutError:
            late = [m.key for m in members if m.agent is None or not m.agent.link.connected.is_set()]
            raise TimeoutError(f"{len(late)} agents not connected within {timeout_s:.0f} s: {late[:5]} ...") from None

    def power_on(self, m: Member) -> None:
        assert m.cfg is not None
        # A departmental machine switched on is a new boot (WZ 002:491's check reads it): its own boot id, not the
        # host kernel's that every simulated agent shares, or the next day's power-on would read as left on.
        boot_id = uuid.uuid4().hex if m.role == "department" else None
        m.agent = Agent(m.cfg, self.clock, boot_id=boot_id)
        m.task = asyncio.create_task(m.agent.run(), name=f"agent-{m.key}")

    async def power_off(self, members: list[Member]) -> None:
        """Abrupt stop (power loss, or a bench's kill): no shutdown status, no DISCONNECT. Power loss waits for
        nothing, so neither does this beyond POWER_OFF_SLOW_S: an agent still unwinding then is named with where
        its tasks wait (a bench reads presence from the broker's Wills, not from these tasks)."""
        tasks = [m.task for m in members if m.task is not None]
        for t in tasks:
            t.cancel()
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=POWER_OFF_SLOW_S)
        if pending:
            log.warning("%d agents still running %.0f s after their power went", len(pending), POWER_OFF_SLOW_S)
            for t in [t for t in asyncio.all_tasks() if t.cancelling() and not t.done()][:20]:
                log.warning("  %s at %s", t.get_name(), _where(t))
        _retrieve(tasks)

    async def stop(self) -> None:
        """Clean stop of everything still running (shutdown status, DISCONNECT), then the relays."""
        if self._script is not None:
            self._script.cancel()
            await asyncio.gather(self._script, return_exceptions=True)
        running = [m for m in self.members if m.up]
        for m in running:
            assert m.agent is not None
            m.agent.stop()
        tasks = [m.task for m in running if m.task is not None]
        _done, pending = await asyncio.wait(tasks, timeout=60) if tasks else (set(), set())
        for t in pending:
            t.cancel()
        if pending:  # cancelled, and given as long as a power cut gets; one that still runs is named, not waited for
            _done, stuck = await asyncio.wait(pending, timeout=POWER_OFF_SLOW_S)
            for t in stuck:
                log.warning("%s did not stop, at %s", t.get_name(), _where(t))
        _retrieve(tasks)
        for m in self.members:
            if m.net is not None:
                await m.net.close()
        await self._resources.aclose()

    def play(self) -> asyncio.Task[None]:
        self._script = asyncio.create_task(self._play(), name="fleet-scenario")
        return self._script

    async def _play(self) -> None:
        jobs: list[Coroutine[Any, Any, None]] = []
        for hall in ds.HALLS:
            terminals = [m for m in self.members if m.hall == hall and m.role == "attendance"]
            if terminals:
                jobs.append(self._arrivals(hall, terminals))
        for m in self.members:
            if m.role == "kiosk":
                jobs.append(self._kiosk(m))
            elif m.role == "rating":
                jobs.append(self._window(m))
            elif m.role in ("door", "locker", "patrol"):
                jobs.append(self._hall_device(m))
            elif m.role == "department":
                jobs.append(self._department_machine(m))
        for k, f in enumerate(self.scenario.faults):
            jobs.append(self._fault(f, self.fault_targets[k]))
        pads = [m for m in self.members if m.role == "rating"]
        for p in self.scenario.rating.proxy:
            jobs.append(self._proxy(p.at, pads[: p.pads], p.presses, p.within_s))
        await asyncio.gather(*(self._guard(j) for j in jobs))

    async def _guard(self, job: Coroutine[Any, Any, None]) -> None:
        """One person's or one device's script failing must not stop the others: count it, log it."""
        try:
            await job
        except Exception:
            self.counts["script_errors"] += 1
            log.exception("fleet script %s failed", getattr(job, "__qualname__", job))

    # -- simulated time ------------------------------------------------------------------------------
    def now(self) -> datetime:
        return self.clock.now().astimezone(HALL_ZONE)

    async def sleep_sim(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)

    async def until(self, t: datetime) -> bool:
        """Sleep until simulated time t; False (at once) if it has passed."""
        ahead = (t - self.now()).total_seconds()
        if ahead < 0:
            return False
        await self.sleep_sim(ahead)
        return True

    # -- people --------------------------------------------------------------------------------------
    async def _arrivals(self, hall: ds.Hall, terminals: list[Member]) -> None:
        a = self.scenario.arrivals
        rng = random.Random(f"{self.scenario.seed}-{hall.site}")
        times: list[tuple[datetime, StaffMember, bool]] = []
        for s in self.staff[hall.site]:
            u = rng.random()
            if u < a.absent_share:
                continue
            if u < a.absent_share + a.late_share:
                at = at_day(self.today, a.late_after) + timedelta(minutes=rng.uniform(1, a.late_by_min))
                times.append((at, s, True))
            else:
                at = at_day(self.today, a.mean) + timedelta(minutes=rng.gauss(0, a.sd_min))
                deadline = at_day(self.today, a.late_after) - timedelta(seconds=1)
                times.append((min(at, deadline), s, False))
        times.sort(key=lambda x: x[0])
        # Each person punches once, in one of the slices that have a terminal in this hall.
        slices = sorted(
            {i % self.shards for i, m in enumerate(self._planned) if m.hall == hall and m.role == "attendance"}
        )
        times = times[slices.index(self.shard) :: len(slices)] if self.shard in slices else []
        fingers = await self._enrol_fingers(terminals, [s for _, s, _ in times])
        for k, (at, s, late) in enumerate(times):
            if not await self.until(at) and (self.now() - at).total_seconds() > 600:
                continue  # the run started after this person arrived
            up = [(m, q) for m in terminals if m.up and (q := _qr_sim(m)) is not None]
            for _ in range(20):  # just started: the scanners appear once the roles read them
                if up:
                    break
                await asyncio.sleep(0.25)
                up = [(m, q) for m in terminals if m.up and (q := _qr_sim(m)) is not None]
            if not up:
                self.counts["punch_missed_terminal_down"] += 1
                continue
            self.counts["punches_late" if late else "punches"] += 1
            if (finger := fingers.get(s.staff_id)) is not None and finger.still_enrolled():
                finger.press()
                self.counts["punches_finger"] += 1
                continue
            _, qr = up[k % len(up)]
            ts = int(self.clock.now().timestamp())
            qr.type(f"{hall.qr_prefix}:{ds.personal_id(hall, s.staff_id)}:{ts}")
            self.counts["punches_qr"] += 1

    async def _enrol_fingers(self, terminals: list[Member], staff: list[StaffMember]) -> dict[str, Finger]:
        """The window management section enrols the finger punchers, each at one terminal (round robin), one
        at a time per terminal as at a real one; a failed enrolment leaves that person to their QR code."""
        share = self.scenario.arrivals.finger_share
        chosen = [s for s in staff if random.Random(f"{self.scenario.seed}-{s.staff_id}").random() < share]
        readers = [m for m in terminals if m.agent is not None and m.agent.attendance is not None]
        plan_: dict[int, list[StaffMember]] = {}
        for k, s in enumerate(chosen):
            if readers:
                plan_.setdefault(k % len(readers), []).append(s)
        enrolled: dict[str, Finger] = {}

        async def at_terminal(m: Member, people: list[StaffMember]) -> None:
            for s in people:
                finger = await Finger.enrol(m, s.staff_id)
                if finger is None:
                    self.counts["finger_enrol_failed"] += 1
                else:
                    enrolled[s.staff_id] = finger
                    self.counts["fingers_enrolled"] += 1

        await asyncio.gather(*(at_terminal(readers[i], people) for i, people in plan_.items()))
        return enrolled

    async def _kiosk(self, m: Member) -> None:
        k = self.scenario.kiosk
        rng = random.Random(f"{self.scenario.seed}-{m.key}")
        n = 0
        while True:
            now = self.now()
            rate = k.tickets_per_hour[now.hour] / 3600
            if rate <= 0:
                await self.until(now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1, seconds=1))
                continue
            await self.sleep_sim(rng.expovariate(rate))
            agent = m.agent
            if not m.up or agent is None or agent.kiosk is None:
                continue
            n += 1
            lines = [f"{m.hall.short}区政务服务中心", f"取号 A{n:03d}"] + [""] * max(0, k.lines_per_ticket - 2)
            try:
                await agent.kiosk.print_receipt(lines)
            except Exception as exc:  # out of paper, jammed: the role reports it, the citizen goes to a window
                self.counts["tickets_failed"] += 1
                log.debug("%s: ticket not printed: %s", m.key, exc)
                continue
            self.counts["tickets"] += 1
            pages = int(k.a4_pages_per_ticket) + (rng.random() < k.a4_pages_per_ticket % 1)
            usage = agent.cfg.kiosk.usage if agent.cfg.kiosk is not None else None
            if isinstance(usage, LogUsageConfig):
                with usage.path.open("a") as f:
                    f.write(f"{now.isoformat()} {ds.TICKET_LINE} A{n:03d}\n" + f"{A4_LINE}\n" * pages)
            a4 = agent.cfg.kiosk.a4 if agent.cfg.kiosk is not None else None
            if a4 is not None and pages:
                job = await print_job(a4, a4_pages(pages), job_name=f"A{n:03d}")
                if job.state == "completed":
                    self.counts["a4_pages"] += pages
                else:  # out of paper or toner, or the printer unreachable: the kiosk reports it
                    self.counts["a4_jobs_failed"] += 1

    async def _window(self, m: Member) -> None:
        r = self.scenario.rating
        if r.services_per_hour <= 0:
            return
        rng = random.Random(f"{self.scenario.seed}-{m.key}")
        staff = next((s.staff_id for s in self.staff[m.hall.site] if m.device and s.window == m.device.window), None)
        levels, weights = zip(*((int(k), w) for k, w in r.levels.items()), strict=True)
        cycle = 3600 / r.services_per_hour
        n = 0
        await self.sleep_sim(rng.uniform(0, cycle))
        while True:
            now = self.now()
            if not at_day(self.today, r.open) <= now < at_day(self.today, r.close):
                if now >= at_day(self.today, r.close):
                    return
                await self.until(at_day(self.today, r.open) + timedelta(seconds=rng.uniform(0, 300)))
                continue
            agent = m.agent
            if not m.up or agent is None or agent.rating is None or agent.rating.keypad_sim is None:
                await self.sleep_sim(cycle)
                continue
            n += 1
            ticket = await self._called(m, rng) or f"{m.device.window if m.device else m.name}-{n:03d}"
            await agent.rating.service(ServiceCall(action="start", service_id=ticket, staff_id=staff))
            await self.sleep_sim(cycle * rng.uniform(0.4, 0.8))
            await agent.rating.service(ServiceCall(action="end", service_id=ticket))
            if (queue := self.queues.get(m.hall.site)) is not None and m.device and m.device.window:
                await queue.serve(m.device.window)
            await self.sleep_sim(rng.uniform(3, 20))
            if rng.random() >= r.walk_away_share and m.up:
                agent.rating.keypad_sim.press(f"KEY_{rng.choices(levels, weights)[0]}")
                self.counts["ratings"] += 1
            await self.sleep_sim(cycle * rng.uniform(0.2, 0.6))

    async def _called(self, m: Member, rng: random.Random) -> str | None:
        """A citizen's ticket from the hall's queue twin, waited for and called at this window (the pad rates the
        same number); None where this slice has no queue system for the hall."""
        queue = self.queues.get(m.hall.site)
        if queue is None or m.device is None or m.device.window is None:
            return None
        services = hd.window_services(m.device.window)
        queue.issue(services[0], dispenser="*")
        self.counts["queue_tickets"] += 1
        await self.sleep_sim(rng.uniform(60, 360))  # the wait for the call: one to six minutes
        return await queue.call(m.device.window, services)

    async def _hall_device(self, m: Member) -> None:
        """A door, locker bank or patrol handheld through the day as the demo plays it (hallfleet/fleet/hall.py)."""
        day = ds.DemoDay(self.clock, self.today, at_day(self.today, self.scenario.start), at_day(self.today, END))
        queue = self.queues.get(m.hall.site)
        # Only the script's ticket() uses the queue system; the doors, lockers and patrols never do.
        script = hd.HallPlay(day, m.hall, queue, self._demo_day, lambda line: log.info("%s", line))  # type: ignore[arg-type]
        points = [x.name for x in self._planned if x.hall == m.hall and x.role in ("rating", "kiosk")]
        rounds = self.sites[m.hall.site].duties.patrol.rounds if m.hall.site in self.sites else []
        while not day.over():
            agent = m.agent
            if not m.up or agent is None or fh.sim_of(agent, m.role) is None:
                await asyncio.sleep(0.2)  # powered off, or its twin not made yet
                continue
            try:
                await fh.play(script, m.role, agent, points, rounds)
                self.counts[f"{m.role}_days"] += 1
                return
            except Exception:
                if m.agent is agent:
                    raise
                self.counts[f"{m.role}_power_lost"] += 1  # its twin went with the power: play on with the new one

    async def _department_machine(self, m: Member) -> None:
        """WZ 002:491: switched on and shut down by its department (hallfleet/fleet/departments.py)."""
        day = fd.day_of(self.scenario.departments, self.today, m.key, m.index, self.scenario.seed)

        def switch_on() -> None:
            if not m.up:
                self.power_on(m)
                self.counts["department_on"] += 1

        async def shut_down() -> None:
            if m.up and m.agent is not None and m.task is not None:
                m.agent.stop()  # a clean stop: the agent says shutdown
                await asyncio.wait([m.task], timeout=POWER_OFF_SLOW_S)
                self.counts["department_off"] += 1

        await fd.play(day, self.until, switch_on, shut_down)

    async def _proxy(self, at: time, pads: list[Member], presses: int, within_s: float) -> None:
        if not await self.until(at_day(self.today, at)):
            return

        async def one(m: Member) -> None:
            for k in range(presses):
                agent = m.agent
                if not m.up or agent is None or agent.rating is None or agent.rating.keypad_sim is None:
                    return
                ticket = f"proxy-{m.name}-{k}"
                await agent.rating.service(ServiceCall(action="start", service_id=ticket))
                await agent.rating.service(ServiceCall(action="end", service_id=ticket))
                agent.rating.keypad_sim.press("KEY_5")
                self.counts["proxy_ratings"] += 1
                await self.sleep_sim(within_s / presses)

        await asyncio.gather(*(one(m) for m in pads))

    # -- faults --------------------------------------------------------------------------------------
    async def _fault(self, f: Fault, targets: list[Member]) -> None:
        start = at_day(self.today, f.at)
        if not await self.until(start) or not targets:
            log.warning("fault %s at %s: %s", f.kind, f.at, "already past" if targets else "no device to hit")
            return
        self.counts[f"fault_{f.kind}"] += len(targets)
        log.info("fault %s on %s", f.kind, ", ".join(m.key for m in targets))
        await self._begin(f, targets)
        await self.sleep_sim(f.duration_min * 60)
        await self._end(f, targets)

    async def _begin(self, f: Fault, targets: list[Member]) -> None:
        if f.kind == "power_loss":
            await self.power_off(targets)
            return
        for m in targets:
            if f.kind in ("door_forced", "locker_jam"):
                _hall_fault(m, f.kind, begin=True)
            elif f.kind == "network_loss" and m.net is not None:
                m.net.cut()
            elif f.kind == "app_crash":
                self.health[f"/health/{m.hall.site}/{m.name}"] = False
            elif (sim := _receipt_sim(m)) is not None:
                if f.kind == "printer_jam":
                    sim.cutter_error = True
                else:
                    sim.paper_mm = 0.0

    async def _end(self, f: Fault, targets: list[Member]) -> None:
        for m in targets:
            if f.kind == "power_loss":
                self.power_on(m)
            elif f.kind in ("door_forced", "locker_jam"):
                _hall_fault(m, f.kind, begin=False)
            elif f.kind == "network_loss" and m.net is not None:
                m.net.restore()
            elif f.kind == "app_crash":
                self.health[f"/health/{m.hall.site}/{m.name}"] = True
            elif (sim := _receipt_sim(m)) is not None:
                if f.kind == "printer_jam":
                    sim.cutter_error = False
                else:
                    sim.refill()
        self.counts[f"fault_{f.kind}_ended"] += len(targets)


@dataclass(frozen=True, slots=True)
class Finger:
    """One person's finger enrolled at one terminal's fingerprint twin, by the agent running it then."""

    member: Member
    agent: Agent
    name: str

    @staticmethod
    async def enrol(m: Member, staff_id: str) -> Finger | None:
        """The fingerprint_enrol command, as the centre sends it, with the finger pressed when the terminal's
        screen asks for it (hallfleet/fingers.py); None when it failed, and the person punches by QR code."""
        agent = m.agent
        if agent is None:
            return None
        name = f"{staff_id}-right-index"
        try:
            await enrol_on_twin(agent, staff_id, name)
        except Exception as exc:  # any refusal (no twin, library full, no press seen) leaves the person to the QR code
            log.debug("%s: enrolment of %s failed: %s", m.key, staff_id, exc)
            return None
        return Finger(m, agent, name)

    def still_enrolled(self) -> bool:
        """The same agent runs the terminal: a power loss made a new twin with an empty library."""
        return self.member.up and self.member.agent is self.agent

    def press(self) -> None:
        role = self.agent.attendance
        if role is not None and role.finger_sim is not None:
            role.finger_sim.press(self.name, 1)


def _hall_fault(m: Member, kind: str, *, begin: bool) -> None:
    """door_forced: the first door opened while locked, shut when it ends; locker_jam: the last compartment's door
    stops taking its state, and takes it again."""
    sim = fh.sim_of(m.agent, "door" if kind == "door_forced" else "locker")
    if sim is None:
        return  # powered off: nothing to force or jam
    if kind == "door_forced":
        sim.force() if begin else sim.shut_door()
    else:
        sim.jam(len(sim.boxes), begin)


def _qr_sim(m: Member) -> Any:
    """The terminal's scanner twin (made when its role starts reading, so None for a moment after power-on)."""
    if m.agent is None or m.agent.attendance is None:
        return None
    return m.agent.attendance.qr_sim


def _receipt_sim(m: Member) -> Any:
    if m.agent is None or m.agent.kiosk is None:
        return None
    return m.agent.kiosk.receipt_sim
