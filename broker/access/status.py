"""The 24-hour area's doors and lockers as they are now, for the dashboard (broker/api/hall_views.py): each door's
newest ``door.state``, each bank's newest ``locker.bank`` with the compartments held past the hall's limit, and the
alarms still open (the conditions of the devices' incidents, broker/access/signals.py).

The rule: what a person reads here is what the centre decides elsewhere. "Held too long" is the same test as the
overdue job's (``held_too_long``, used by broker/access/lockers.py), and an alarm is shown while its incident
condition is active, not while some event says so: a cleared alarm is gone from the page when it is gone from the
incident.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.sites import Sites
from broker.store.schema import devices, events, incident_conditions

ACCESS_ROLES = ("door", "locker")
ALARM_PREFIXES = ("door_", "locker_offline", "locker_door_fault")  # locker_overdue is listed as a held item
STATE_ROWS = 64  # newest door.state events read per controller: a snapshot names each of its (at most 8) doors
MAX_DEVICES = 500  # door controllers and locker banks per page (a hall has a handful)


@dataclass(frozen=True, slots=True)
class DoorNow:
    site: str
    device: str
    door: str
    controller: str  # ok | unreachable
    contact: str  # open | closed | unknown
    lock: str  # locked | unlocked | unknown
    at: datetime  # device time of the state


@dataclass(frozen=True, slots=True)
class HeldItem:
    compartment: int
    since: datetime
    overdue: bool  # past the hall's limit (duties.locker_max_hold_h)


@dataclass(frozen=True, slots=True)
class BankNow:
    site: str
    device: str
    bank: str
    board: str  # ok | unreachable
    compartments: int
    occupied: int
    faults: int
    held: tuple[HeldItem, ...]  # the occupied compartments, longest held first
    at: datetime

    @property
    def overdue(self) -> tuple[HeldItem, ...]:
        return tuple(h for h in self.held if h.overdue)


@dataclass(frozen=True, slots=True)
class AlarmNow:
    site: str
    device: str
    kind: str  # door_forced.main, locker_offline ...
    severity: str
    began_at: datetime
    summary: str


def held_too_long(occupied: bool, since: datetime | None, now: datetime, limit: timedelta) -> bool:
    """The overdue rule of both the job and the page: an item still in its compartment longer than the limit."""
    return occupied and since is not None and now - since > limit


async def _access_devices(conn: AsyncConnection, scope: list[str] | None, role: str) -> list[Any]:
    d = devices.c
    q = sa.select(d.site, d.device).where(d.role == role).order_by(d.site, d.device).limit(MAX_DEVICES)
    if scope is not None:
        q = q.where(d.site.in_(scope))
    return list(await conn.execute(q))


async def doors_now(conn: AsyncConnection, scope: list[str] | None) -> list[DoorNow]:
    """Each door's newest state, per controller of the sites in ``scope`` (None: every site)."""
    e = events.c
    out: list[DoorNow] = []
    for row in await _access_devices(conn, scope, "door"):
        rows = await conn.execute(
            sa.select(e.ts, e.data)
            .where(e.site == row.site, e.device == row.device, e.type == "door.state")
            .order_by(e.seq.desc())
            .limit(STATE_ROWS)
        )
        seen: set[str] = set()
        for r in rows:
            s = json.loads(r.data)
            if s["door"] not in seen:
                seen.add(s["door"])
                out.append(DoorNow(row.site, row.device, s["door"], s["controller"], s["contact"], s["lock"], r.ts))
    return sorted(out, key=lambda x: (x.site, x.device, x.door))


async def banks_now(conn: AsyncConnection, scope: list[str] | None, sites: Sites, now: datetime) -> list[BankNow]:
    """Each locker bank's newest snapshot, its held items judged against its site's limit."""
    e = events.c
    out: list[BankNow] = []
    for row in await _access_devices(conn, scope, "locker"):
        newest = (
            await conn.execute(
                sa.select(e.ts, e.data)
                .where(e.site == row.site, e.device == row.device, e.type == "locker.bank")
                .order_by(e.seq.desc())
                .limit(1)
            )
        ).first()
        if newest is not None:
            limit = timedelta(hours=sites[row.site].duties.locker_max_hold_h)
            out.append(_bank(row.site, row.device, json.loads(newest.data), newest.ts, now, limit))
    return out


def _bank(site: str, device: str, bank: dict[str, Any], ts: datetime, now: datetime, limit: timedelta) -> BankNow:
    boxes = bank.get("compartments", [])
    held = [
        HeldItem(b["no"], since, held_too_long(True, since, now, limit))
        for b in boxes
        if b["occupied"] and (since := _since(b)) is not None
    ]
    held.sort(key=lambda h: h.since)
    faults = sum(b["door"] == "fault" for b in boxes)
    occupied = sum(bool(b["occupied"]) for b in boxes)
    return BankNow(site, device, bank["bank"], bank["board"], len(boxes), occupied, faults, tuple(held), ts)


def _since(box: dict[str, Any]) -> datetime | None:
    return datetime.fromisoformat(box["occupied_since"]) if box.get("occupied_since") else None


async def alarms_now(conn: AsyncConnection, scope: list[str] | None) -> list[AlarmNow]:
    """The doors' and lockers' alarm conditions still active, newest first."""
    c, d = incident_conditions.c, devices.c
    q = (
        sa.select(d.site, d.device, c.kind, c.severity, c.began_at, c.summary)
        .join(devices, devices.c.key == c.key)
        .where(c.open_key.is_not(None), d.role.in_(ACCESS_ROLES))
        .where(sa.or_(*(c.kind.startswith(p) for p in ALARM_PREFIXES)))
        .order_by(c.began_at.desc())
        .limit(MAX_DEVICES)
    )
    if scope is not None:
        q = q.where(d.site.in_(scope))
    return [AlarmNow(r.site, r.device, r.kind, r.severity, r.began_at, r.summary) for r in await conn.execute(q)]
