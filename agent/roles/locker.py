"""The self-service locker bank (自助寄取柜, SJ 001 表9): the agent watches its compartments.

Publishes ``locker.parcel`` when an item arrives in a compartment (deposit: a new opaque parcel id, kept in
the device's state so a restart does not lose it) or leaves it (collect: the same id and how long it stayed),
``locker.alarm`` when a compartment's lock faults or the board stops answering (and when that ends), and
``locker.bank`` (every compartment, with since when it holds an item) on change and every ``snapshot_s``.
The rule: no personal data on the wire. The locker application keeps names, phone numbers and pick-up codes;
the agent sees only the board, so it could not send them if it tried, and the payloads refuse anything but a
compartment number and a UUID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import datetime
from typing import Annotated, Literal

from pydantic import Field

from agent.commands.registry import CommandFailed, CommandSpec, Registry
from agent.device import DeviceContext
from agent.roles.snapshots import SnapshotTimer, poll_forever
from config.base import Section
from drivers.locker.board import CompartmentReading, LockerBoard, SerialLockerBoardConfig
from drivers.locker.sim import SimulatedLockerBoard
from drivers.rs485.port import BusError, SerialPortConfig
from protocol.envelope import Frozen
from protocol.hall_events import MAX_COMPARTMENTS, Compartment, LockerAlarm, LockerBank, LockerParcel
from protocol.ids import uuid7

log = logging.getLogger(__name__)
PARCELS_KEY = "locker.parcels"  # compartment -> [parcel id, deposited at]: survives a restart


class SimulatedLockerBoardConfig(Section):
    """The twin (drivers/locker/sim.py) on a pty pair; the real driver talks to it."""

    type: Literal["sim"] = Field(default="sim", description="The simulated twin")
    compartments: int = Field(default=16, ge=1, le=MAX_COMPARTMENTS, description="Compartments of the bank")


BoardConfig = Annotated[SerialLockerBoardConfig | SimulatedLockerBoardConfig, Field(discriminator="type")]


class LockerConfig(Section):
    bank: str = Field(default="A", min_length=1, max_length=32, description="The bank's name as the hall labels it")
    board: BoardConfig = Field(description="The lock board (RS-485), or its twin")
    poll_s: float = Field(default=1.0, gt=0, le=60, description="How often the board is read")
    offline_after: int = Field(default=3, ge=1, le=100, description="Unanswered polls in a row before 'offline'")
    snapshot_s: float = Field(default=900, gt=0, description="The whole bank is re-published this often")


class OpenArgs(Frozen):
    compartment: int = Field(ge=1, le=MAX_COMPARTMENTS, description="Which compartment to release")


class LockerRole:
    def __init__(self, device: DeviceContext, cfg: LockerConfig) -> None:
        self.device = device
        self.cfg = cfg
        self.sim: SimulatedLockerBoard | None = None
        self.board = self._board(cfg.board)
        self._last: dict[int, CompartmentReading] = {}
        self._parcels: dict[int, tuple[str, datetime]] = {}
        self._alarms: dict[int | None, datetime] = {}  # compartment (None: the board) -> since
        self._failures = 0
        self._lock = asyncio.Lock()

    def _board(self, cfg: SerialLockerBoardConfig | SimulatedLockerBoardConfig) -> LockerBoard:
        if isinstance(cfg, SimulatedLockerBoardConfig):
            self.sim = SimulatedLockerBoard(compartments=cfg.compartments)
            cfg = SerialLockerBoardConfig(port=SerialPortConfig(path=self.sim.path), compartments=cfg.compartments)
        return LockerBoard(cfg)

    def register_commands(self, registry: Registry) -> None:
        registry.register(CommandSpec("locker_open", OpenArgs, self._cmd_open, needs_reason=True))

    async def run(self) -> None:
        await self._load_parcels()
        snapshots = SnapshotTimer(self.cfg.snapshot_s, self.device.clock.monotonic)
        try:
            await poll_forever(self.poll, snapshots, self.cfg.poll_s)
        finally:
            with contextlib.suppress(Exception):
                self.board.close()
            if self.sim is not None:
                self.sim.close()

    async def poll(self, snapshot: bool = False) -> None:
        try:
            async with self._lock:
                readings = await asyncio.to_thread(self.board.status)
        except BusError as exc:
            self._failures += 1
            if self._failures >= self.cfg.offline_after:
                if self._failures == self.cfg.offline_after:
                    log.warning("locker board offline: %s", exc)
                    await self.device.emit("locker.bank", LockerBank(bank=self.cfg.bank, board="unreachable"))
                await self._alarm(None, True)
            return
        self._failures = 0
        await self._alarm(None, False)
        changed = False
        for r in readings:
            before = self._last.get(r.no)
            if before is None or before != r:
                changed = True
            await self._alarm(r.no, r.fault)
            if r.occupied and (before is None or not before.occupied) and r.no not in self._parcels:
                await self._deposit(r.no)
            elif not r.occupied and r.no in self._parcels:
                await self._collect(r.no)
            self._last[r.no] = r
        if changed or snapshot:
            await self.device.emit("locker.bank", self._bank(readings))

    def _bank(self, readings: list[CompartmentReading]) -> LockerBank:
        boxes = [
            Compartment(
                no=r.no,
                door="fault" if r.fault else "open" if r.open else "closed",
                occupied=r.occupied,
                occupied_since=self._parcels[r.no][1] if r.no in self._parcels else None,
            )
            for r in readings
        ]
        return LockerBank(bank=self.cfg.bank, board="ok", compartments=boxes)

    async def _deposit(self, no: int) -> None:
        parcel, at = uuid7(), self.device.clock.now()
        self._parcels[no] = (parcel, at)
        await self._save_parcels()  # before the event: a restart in between must not draw a second id
        await self.device.emit(
            "locker.parcel", LockerParcel(bank=self.cfg.bank, compartment=no, action="deposit", parcel=parcel)
        )

    async def _collect(self, no: int) -> None:
        parcel, at = self._parcels.pop(no)
        held = max(0.0, (self.device.clock.now() - at).total_seconds())
        await self.device.emit(
            "locker.parcel",
            LockerParcel(bank=self.cfg.bank, compartment=no, action="collect", parcel=parcel, held_s=held),
        )
        await self._save_parcels()

    async def _alarm(self, no: int | None, active: bool) -> None:
        if active == (no in self._alarms):
            return
        if active:
            self._alarms[no] = self.device.clock.now()
        since = self._alarms[no] if active else self._alarms.pop(no)
        alarm: Literal["door_fault", "offline"] = "offline" if no is None else "door_fault"
        await self.device.emit(
            "locker.alarm",
            LockerAlarm(bank=self.cfg.bank, compartment=no, alarm=alarm, active=active, since=since),
        )

    async def _load_parcels(self) -> None:
        raw = await self.device.state.kv_get(PARCELS_KEY)
        for no, (parcel, at) in (json.loads(raw) if raw else {}).items():
            self._parcels[int(no)] = (parcel, datetime.fromisoformat(at))

    async def _save_parcels(self) -> None:
        data = {str(no): [p, at.isoformat()] for no, (p, at) in self._parcels.items()}
        await self.device.state.kv_set(PARCELS_KEY, json.dumps(data))

    async def _cmd_open(self, args: OpenArgs) -> dict[str, object]:
        if args.compartment > self.board.cfg.compartments:
            raise CommandFailed(f"compartment {args.compartment}: this bank has 1..{self.board.cfg.compartments}")
        try:
            async with self._lock:
                ok = await asyncio.to_thread(self.board.open, args.compartment)
        except BusError as exc:
            raise CommandFailed(str(exc)) from None
        if not ok:
            raise CommandFailed(f"compartment {args.compartment}: the lock did not release (lock fault)")
        return {"compartment": args.compartment, "released": True}
