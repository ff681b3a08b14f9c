"""The edge agent: one asyncio loop composing the outbox, the MQTT link, health telemetry and a role."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any

from agent.commands.builtin import builtin_commands
from agent.commands.registry import Registry
from agent.commands.runner import CommandRunner
from agent.commands.update import UpdateWatch, resume_update
from agent.config import AgentConfig
from agent.desired import ConfigApplier, DeviceSettings
from agent.device import DeviceContext
from agent.link import Identity, Link
from agent.outbox import Outbox, OutboxFull
from agent.selfheal import AppWatch
from agent.signer import load_signer
from agent.sqlite import Database
from agent.state import StateStore
from agent.tasks import TaskSet
from agent.version import agent_version
from drivers.system import SystemProbe, kernel_boot_id
from protocol import topics
from protocol.envelope import Envelope, Frozen
from protocol.events import ACK_TYPE, HEALTH_TYPE, REGISTRY, Health, Lane, encode_event, lane_of
from protocol.ids import uuid7
from runtime.backoff import Backoff
from runtime.clock import Clock, SystemClock, real_seconds
from runtime.sdnotify import notify, watchdog_loop
from runtime.transport import LinkOptions, Will

if TYPE_CHECKING:
    from agent.netcheck import NetChecker
    from agent.roles.attendance import AttendanceRole
    from agent.roles.door import DoorRole
    from agent.roles.kiosk import KioskRole
    from agent.roles.locker import LockerRole
    from agent.roles.patrol import PatrolRole
    from agent.roles.queue import QueueRole
    from agent.roles.rating import RatingRole

log = logging.getLogger(__name__)

RoleRunner = Callable[[], Coroutine[Any, Any, None]]
__all__ = ["Agent", "agent_version", "run_until_signal"]


class Agent:
    """The composition: the device's database (outbox beside state store), the link, the role, the command
    runner, health. Everything below it gets a narrow DeviceContext, never the Agent (agent/device.py)."""

    def __init__(
        self,
        cfg: AgentConfig,
        clock: Clock | None = None,
        probe: SystemProbe | None = None,
        executor: Executor | None = None,
        boot_id: str | None = None,
    ) -> None:
        """``executor``: where the outbox file's SQLite calls run (default: the process's one SQLite thread;
        an in-memory outbox runs inline). The fleet simulator shares one among thousands of agents. ``boot_id``:
        a simulated machine's own boot (the fleet's departmental machines, switched on each morning); default the
        kernel's."""
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.probe = probe or SystemProbe()
        # The kernel's boot id tells the centre whether the device rebooted; a per-process id is the
        # fallback where /proc has none.
        self.boot_id = boot_id or kernel_boot_id() or uuid.uuid4().hex
        self.signer = load_signer(cfg.sign_key_file)  # a key that does not load fails the start, never unsigned
        self._jobs = TaskSet(f"agent {cfg.site}/{cfg.device}")
        # Set once the state store is prepared and the applied config loaded: what a caller in the same process
        # (the demo, the fleet) must wait for before driving a role's commands directly.
        self.started = asyncio.Event()
        db = Database(cfg.outbox.path, executor)
        self.outbox = Outbox(
            db,
            max_critical=cfg.outbox.max_critical,
            max_telemetry=cfg.outbox.max_telemetry,
            commit_interval_ms=cfg.outbox.commit_interval_ms,
            commit_batch=cfg.outbox.commit_batch,
            clock=self.clock,
        )
        self.state = StateStore(db, self.clock)
        identity = Identity(cfg.site, cfg.device, self.boot_id, cfg.heartbeat_s, cfg.role, agent_version())
        self.link = Link(
            self._link_options,
            identity,
            self.outbox,
            self.state,
            self.clock,
            Backoff(cfg.mqtt.backoff_initial_s, cfg.mqtt.backoff_max_s),
            confirm_timeout_s=cfg.outbox.confirm_timeout_s,
        )
        self.ctx = DeviceContext(
            site=cfg.site,
            device=cfg.device,
            boot_id=self.boot_id,
            clock=self.clock,
            state=self.state,
            emit=self.emit,
            spawn=self.spawn,
            link_up=self.link.is_up,
            clock_synced=self.clock_synced,
            link_changed=self.link.wait_change,
        )
        self._stop = asyncio.Event()
        self._heartbeat_changed = asyncio.Event()
        self.exit_code = 0
        self.config = ConfigApplier(self.ctx, self.settings_changed)
        self.app_watch = AppWatch(cfg.app, self.emit, self.clock) if cfg.app is not None else None
        self.update_watch = UpdateWatch(self)
        registry = Registry(builtin_commands(self, self.update_watch.requested.set))
        self.kiosk: KioskRole | None = None
        self.attendance: AttendanceRole | None = None
        self.rating: RatingRole | None = None
        self.door: DoorRole | None = None
        self.locker: LockerRole | None = None
        self.patrol: PatrolRole | None = None
        self.queue: QueueRole | None = None
        self._role = self._make_role(registry)
        self.netcheck = self._make_netcheck(registry)
        self.commands = CommandRunner(self.ctx, registry)
        self.link.on_command = self.commands.offer
        self.link.on_config = self.config.offer

    def _make_role(self, registry: Registry) -> RoleRunner | None:
        """Only the configured role's module (and so its drivers) is imported."""
        cfg = self.cfg
        if cfg.role == "sim":
            from agent.roles import sim

            return lambda: sim.run(self.ctx, cfg.sim)
        if cfg.role == "kiosk" and cfg.kiosk is not None:
            from agent.roles.kiosk import KioskRole

            self.kiosk = KioskRole(self.ctx, cfg.kiosk, self.app_watch)
            self.kiosk.register_commands(registry)
            return self.kiosk.run
        if cfg.role == "attendance" and cfg.attendance is not None:
            from agent.roles.attendance import AttendanceRole

            self.attendance = AttendanceRole(self.ctx, cfg.attendance)
            self.attendance.register_commands(registry)
            return self.attendance.run
        if cfg.role == "rating" and cfg.rating is not None:
            from agent.roles.rating import RatingRole

            self.rating = RatingRole(self.ctx, cfg.rating)
            self.rating.register_commands(registry)
            return self.rating.run
        if cfg.role in ("door", "locker", "patrol"):
            return self._make_hall_role(registry)
        if cfg.role == "queue" and cfg.queue is not None:
            from agent.roles.queue import QueueRole

            self.queue = QueueRole(self.ctx, cfg.queue)
            return self.queue.run
        return None

    def _make_netcheck(self, registry: Registry) -> NetChecker | None:
        if self.cfg.netcheck is None:
            return None
        from agent.netcheck import Endpoint, NetChecker

        centre = Endpoint(host=self.cfg.mqtt.host, port=self.cfg.mqtt.port)
        checker = NetChecker(self.ctx, self.cfg.netcheck, centre)
        checker.register_commands(registry)
        return checker

    def _make_hall_role(self, registry: Registry) -> RoleRunner | None:
        """The 24-hour area's door controller and locker bank, the patrol handheld (issue 23)."""
        cfg = self.cfg
        if cfg.role == "door" and cfg.door is not None:
            from agent.roles.door import DoorRole

            self.door = DoorRole(self.ctx, cfg.door)
            self.door.register_commands(registry)
            return self.door.run
        if cfg.role == "locker" and cfg.locker is not None:
            from agent.roles.locker import LockerRole

            self.locker = LockerRole(self.ctx, cfg.locker)
            self.locker.register_commands(registry)
            return self.locker.run
        if cfg.role == "patrol" and cfg.patrol is not None:
            from agent.roles.patrol import PatrolRole

            self.patrol = PatrolRole(self.ctx, cfg.patrol)
            return self.patrol.run
        return None

    def _link_options(self, will: Will) -> LinkOptions:
        m = self.cfg.mqtt
        return LinkOptions(
            host=m.host,
            port=m.port,
            client_id=self.cfg.client_id,
            username=m.username or self.cfg.client_id,
            password=m.password(),
            tls=m.tls_files(),
            keepalive_s=m.keepalive_s,
            session_expiry_s=m.session_expiry_s,
            will=will,
            max_inflight=m.max_inflight,
        )

    # -- the API roles use -------------------------------------------------------------------------
    async def emit(self, event_type: str, payload: Frozen, counter: str | None = None) -> Envelope:
        """Take an event: returns once it is durably in the outbox (raises OutboxFull if it cannot be)."""
        spec = REGISTRY.get(event_type)
        if spec is None or not isinstance(payload, spec.model):
            raise TypeError(f"{event_type!r} needs a {spec.model.__name__ if spec else 'registered'} payload")
        built: list[Envelope] = []
        lane = lane_of(event_type)

        def build(seq: int) -> tuple[str, bytes]:
            env = Envelope(
                v=1,
                id=uuid7(),
                site=self.cfg.site,
                device=self.cfg.device,
                type=event_type,
                seq=seq,
                boot_id=self.boot_id,
                ts=self.clock.now(),
                clock_synced=self.clock_synced(),
                data=payload.model_dump(mode="json"),
            )
            built.append(env)
            site, device = self.cfg.site, self.cfg.device
            if event_type == HEALTH_TYPE:
                topic = topics.health(site, device)
            elif event_type == ACK_TYPE:
                topic = topics.cmd_ack(site, device)
            else:
                topic = topics.event(site, device, event_type)
            # encode_event refuses (ContractError) what the centre would dead-letter, here at the call site,
            # before a seq is taken or anything reaches the outbox.
            raw = encode_event(env)
            # Critical events carry the device's signature (protocol/signing.py); telemetry is not evidence.
            return topic, self.signer.sign(raw) if self.signer is not None and lane is Lane.CRITICAL else raw

        await self.outbox.append(lane, build, counter=counter)
        return built[0]

    def clock_synced(self) -> bool:
        return self.cfg.clock_sync_file.exists()

    @property
    def settings(self) -> DeviceSettings:
        """What the centre's desired config set (agent/desired.py)."""
        return self.config.settings

    @property
    def heartbeat_s(self) -> float:
        return self.settings.heartbeat_s or self.cfg.heartbeat_s

    def settings_changed(self) -> None:
        if self.attendance is not None:  # the site's face settings, from the centre (agent/desired.py)
            self.attendance.apply_site(self.config.settings.face)
        if self.link.heartbeat_s != self.heartbeat_s:
            self.link.heartbeat_s = self.heartbeat_s
            self.link.announce()
            self._heartbeat_changed.set()

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """A short background job (a config to apply) that must not block the MQTT callback; owned by the
        agent, cancelled when it stops."""
        self._jobs.spawn(coro, name)

    def request_restart(self) -> None:
        """restart_agent: leave with EX_TEMPFAIL; systemd (Restart=on-failure) starts us again."""
        self.exit_code = 75
        self.stop()

    async def diagnose(self) -> dict[str, Any]:
        return {
            "health": self.health().model_dump(),
            "link": {"connected": self.link.is_up(), "session": self.link.session},
            "outbox": {
                "depth": self.outbox.depth,
                "dropped": self.outbox.dropped,
                "next_seq": self.outbox.next_seq,
            },
            "config_version": self.config.version,
            "app": self.app_watch.diagnose() if self.app_watch else None,
            "boot_id": self.boot_id,
            "agent_version": agent_version(),
        }

    # -- lifecycle ---------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        metrics = None
        if self.cfg.metrics_port is not None:
            from agent.metrics import serve_agent_metrics

            metrics = serve_agent_metrics(self, self.cfg.metrics_port)
        try:
            await self._run()
        finally:
            if metrics is not None:
                metrics[0].shutdown()

    async def _run(self) -> None:
        async with self.outbox:
            await self.state.prepare()
            await self.config.load()
            self.settings_changed()
            await resume_update(self)  # an update in progress is answered by its result, before commands resume
            self.started.set()
            try:
                async with asyncio.TaskGroup() as tg:
                    tasks = [
                        tg.create_task(self.link.run(), name="link"),
                        tg.create_task(self._health_loop(), name="health"),
                        tg.create_task(watchdog_loop(), name="watchdog"),
                        tg.create_task(self.commands.run(), name="commands"),
                        tg.create_task(self.update_watch.run(), name="update"),
                    ]
                    if self.app_watch is not None:
                        tasks.append(tg.create_task(self.app_watch.run(), name="app-watch"))
                    if self.netcheck is not None:
                        tasks.append(tg.create_task(self.netcheck.run(), name="netcheck"))
                    notify(f"READY=1\nSTATUS=outbox holds {self.outbox.depth} events")
                    if self._role is not None:
                        tasks.append(tg.create_task(self._role(), name=f"role-{self.cfg.role}"))
                    await self._stop.wait()
                    notify("STOPPING=1")
                    await self.link.stop()
                    for t in tasks:
                        t.cancel()
            finally:
                await self._jobs.close()
                log.info("agent stopped; %d events wait in the outbox", self.outbox.depth)

    async def _health_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                # heartbeat_s is in the clock's seconds, as the centre counts it: real time under a demo's ScaledClock
                await asyncio.wait_for(self._heartbeat_changed.wait(), real_seconds(self.clock, self.heartbeat_s))
                self._heartbeat_changed.clear()
                continue  # a new interval: start counting again
            try:
                await self.emit(HEALTH_TYPE, self.health())
            except OutboxFull as exc:  # a full disk must not stop the device: the next heartbeat tries again
                log.warning("heartbeat not recorded: %s", exc)

    def health(self) -> Health:
        h = self.probe.read()
        return Health(
            uptime_s=h.uptime_s,
            load1=h.load1,
            cpu_temp_c=h.cpu_temp_c,
            mem_used_pct=h.mem_used_pct,
            disk_used_pct=h.disk_used_pct,
            outbox_depth=self.outbox.depth,
            outbox_dropped=self.outbox.dropped,
            clock_synced=self.clock_synced(),
            interval_s=self.heartbeat_s,
        )


async def run_until_signal(agent: Agent) -> int:
    import signal

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, agent.stop)
    await agent.run()
    return agent.exit_code
