"""The 24-hour area's door controller (智能门禁认证系统, SJ 001 表9 and note a): the agent watches its doors.

Publishes ``door.alarm`` when a condition begins or ends (held open past ``held_open_s``; forced: the contact
opened while the lock was locked; lock fault; the controller not answering ``offline_after`` polls in a row)
and ``door.state`` on a change of contact, lock or controller, plus a snapshot every ``snapshot_s``. Alarms are
decided here, where the contact is polled every ``poll_s``: a forced opening lasts a second, a heartbeat
would never see it. Nothing about who entered leaves the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from agent.commands.registry import CommandFailed, CommandSpec, Registry
from agent.device import DeviceContext
from agent.roles.snapshots import SnapshotTimer, poll_forever
from config.base import Section
from drivers.door.controller import DoorController, DoorReading, SerialDoorControllerConfig
from drivers.door.sim import SimulatedDoorController
from drivers.rs485.port import BusError, SerialPortConfig
from protocol.envelope import Frozen
from protocol.hall_events import DoorAlarm, DoorAlarmKind, DoorState

log = logging.getLogger(__name__)
CONTROLLER = "*"  # the alarm key of the controller itself (offline), beside each door's


class SimulatedDoorControllerConfig(Section):
    """The twin (drivers/door/sim.py) on a pty pair; the real driver talks to it."""

    type: Literal["sim"] = Field(default="sim", description="The simulated twin")
    doors: list[str] = Field(default_factory=lambda: ["main"], min_length=1, max_length=8, description="Door names")
    grant_s: float = Field(default=5.0, gt=0, le=120, description="How long a grant keeps the lock released")


ControllerConfig = Annotated[SerialDoorControllerConfig | SimulatedDoorControllerConfig, Field(discriminator="type")]


class DoorConfig(Section):
    controller: ControllerConfig = Field(description="The door controller (RS-485), or its twin")
    poll_s: float = Field(default=0.5, gt=0, le=60, description="How often the contacts are read")
    held_open_s: float = Field(default=60, gt=0, le=3600, description="Open longer than this: held open")
    offline_after: int = Field(default=3, ge=1, le=100, description="Unanswered polls in a row before 'offline'")
    snapshot_s: float = Field(default=900, gt=0, description="Every door's state is re-published this often")


class UnlockArgs(Frozen):
    door: str = Field(default="main", max_length=32, description="Which door to release for its grant time")


@dataclass(slots=True)
class _Seen:
    open_since: float | None = None
    reading: DoorReading | None = None


class DoorRole:
    def __init__(self, device: DeviceContext, cfg: DoorConfig) -> None:
        self.device = device
        self.cfg = cfg
        self.sim: SimulatedDoorController | None = None
        self.controller = self._controller(cfg.controller)
        self._seen = {name: _Seen() for name in self.controller.cfg.doors}
        self._alarms: dict[tuple[str, DoorAlarmKind], datetime] = {}  # active (door, alarm) -> since
        self._failures = 0
        self._lock = asyncio.Lock()  # one bus request at a time (poll and commands share the port)

    def _controller(self, cfg: SerialDoorControllerConfig | SimulatedDoorControllerConfig) -> DoorController:
        if isinstance(cfg, SimulatedDoorControllerConfig):
            self.sim = SimulatedDoorController(doors=len(cfg.doors), grant_s=cfg.grant_s)
            cfg = SerialDoorControllerConfig(port=SerialPortConfig(path=self.sim.path), doors=cfg.doors)
        return DoorController(cfg)

    def register_commands(self, registry: Registry) -> None:
        registry.register(CommandSpec("door_unlock", UnlockArgs, self._cmd_unlock, needs_reason=True))

    async def run(self) -> None:
        snapshots = SnapshotTimer(self.cfg.snapshot_s, self.device.clock.monotonic)
        try:
            await poll_forever(self.poll, snapshots, self.cfg.poll_s)
        finally:
            with contextlib.suppress(Exception):
                self.controller.close()
            if self.sim is not None:
                self.sim.close()

    async def poll(self, snapshot: bool = False) -> None:
        try:
            async with self._lock:
                readings = await asyncio.to_thread(self.controller.status)
        except BusError as exc:
            self._failures += 1
            if self._failures == self.cfg.offline_after:
                log.warning("door controller offline: %s", exc)
            if self._failures >= self.cfg.offline_after:
                await self._alarm(CONTROLLER, "offline", True)
                if snapshot or self._failures == self.cfg.offline_after:
                    for name in self._seen:
                        await self.device.emit("door.state", DoorState(door=name, controller="unreachable",
                                                                      contact="unknown", lock="unknown"))  # fmt: skip
            return
        self._failures = 0
        await self._alarm(CONTROLLER, "offline", False)
        for r in readings:
            await self._door(r, snapshot)

    async def _door(self, r: DoorReading, snapshot: bool) -> None:
        seen, now = self._seen[r.door], self.device.clock.monotonic()
        before = seen.reading
        if r.open and (before is None or not before.open):
            seen.open_since = now
            if before is not None and not r.unlocked and not before.unlocked:
                await self._alarm(r.door, "forced", True)
        if not r.open:
            seen.open_since = None
            await self._alarm(r.door, "forced", False)
        held = seen.open_since is not None and now - seen.open_since >= self.cfg.held_open_s
        await self._alarm(r.door, "held_open", held)
        await self._alarm(r.door, "lock_fault", r.lock_fault)
        seen.reading = r
        changed = before is None or (before.open, before.unlocked) != (r.open, r.unlocked)
        if changed or snapshot:
            state = DoorState(
                door=r.door,
                controller="ok",
                contact="open" if r.open else "closed",
                lock="unlocked" if r.unlocked else "locked",
                grants=r.grants,
                exits=r.exits,
            )
            await self.device.emit("door.state", state)

    async def _alarm(self, door: str, alarm: DoorAlarmKind, active: bool) -> None:
        """Emit only a change: an alarm that begins (with its since) or ends."""
        key = (door, alarm)
        if active == (key in self._alarms):
            return
        if active:
            self._alarms[key] = self.device.clock.now()
        since = self._alarms.pop(key) if not active else self._alarms[key]
        await self.device.emit("door.alarm", DoorAlarm(door=door, alarm=alarm, active=active, since=since))

    async def _cmd_unlock(self, args: UnlockArgs) -> dict[str, object]:
        if args.door not in self._seen:
            raise CommandFailed(f"no door {args.door!r} on this controller (doors: {', '.join(self._seen)})")
        try:
            async with self._lock:
                ok = await asyncio.to_thread(self.controller.unlock, args.door)
        except BusError as exc:
            raise CommandFailed(str(exc)) from None
        if not ok:
            raise CommandFailed("the controller refused to release the lock")
        return {"door": args.door, "released": True}
