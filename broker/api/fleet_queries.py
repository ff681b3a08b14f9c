"""What the fleet overview and the device page read, each query bounded and served by an index at 10,000 devices
and a year of events (tests/test_overview.py checks the plans on SQLite and PostgreSQL).

The rule: nothing here reads a whole table that grows with time. Devices are read a page at a time (the filter
in SQL, offset bounded by PageNo); the problems come from the open incidents (state index) and the consumables
that are low or forecast to run out (state and forecast indexes); a device's history is read through
(site, device, type, ts) with a limit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from broker.store.db import Store
from broker.store.schema import (
    audit_log,
    commands,
    consumable_levels,
    device_labels,
    devices,
    events,
    incidents,
)

OPEN_STATES = ("open", "recovering")
LOW_STATES = ("low", "empty")
MAX_PROBLEMS = 5000  # open incidents and consumables at risk read at most: beyond, the fleet is on fire anyway
# Worst first; a device IT registered that never connected is not in service yet, so no outage (broker/store/db.py).
PRESENCE_RANK = {"offline": 0, "stale": 1, "unknown": 2, "shutdown": 3, "registered": 4, "online": 5}


@dataclass(frozen=True, slots=True)
class DeviceFilter:
    """The overview's filters, already bounded by their query parameters (broker/api/overview.py)."""

    sites: tuple[str, ...] | None  # what the user may see (None: every site)
    site: str | None = None
    kind: str | None = None
    state: str | None = None
    label: tuple[str, str] | None = None  # (name, value)
    search: str | None = None

    @property
    def narrows_devices(self) -> bool:
        """Whether a filter names something only a device has (a hall-wide incident has none of them)."""
        return any(v is not None for v in (self.kind, self.state, self.label, self.search))

    def conditions(self) -> list[Any]:
        """WHERE terms on the devices table."""
        c = devices.c
        out: list[Any] = []
        if self.sites is not None:
            out.append(c.site.in_(self.sites))
        if self.site is not None:
            out.append(c.site == self.site)
        if self.kind is not None:
            out.append(c.role == self.kind)
        if self.state is not None:
            out.append(c.presence == self.state)
        if self.label is not None:
            name, value = self.label
            lab = device_labels.c
            out.append(c.key.in_(sa.select(lab.key).where(lab.name == name, lab.value == value)))
        if self.search:
            out.append(c.key.contains(self.search, autoescape=True))
        return out


# -- the overview ---------------------------------------------------------------------------------------------
def devices_page_query(f: DeviceFilter) -> sa.Select[Any]:
    """Filtered devices in key order (the primary key's order: no sort of the whole fleet)."""
    return sa.select(devices).where(*f.conditions()).order_by(devices.c.key)


async def count_devices(store: Store, f: DeviceFilter) -> int:
    return int(await store.scalar(sa.select(sa.func.count()).select_from(devices).where(*f.conditions())) or 0)


async def hall_counts(store: Store, f: DeviceFilter) -> dict[str, dict[str, int]]:
    """site -> presence -> devices, under the same filter as the list."""
    c = devices.c
    q = sa.select(c.site, c.presence, sa.func.count()).where(*f.conditions()).group_by(c.site, c.presence)
    out: dict[str, dict[str, int]] = {}
    for site, presence, n in await store.fetch(q):
        out.setdefault(site, {})[presence] = int(n)
    return out


def open_incidents_query(f: DeviceFilter) -> sa.Select[Any]:
    """Open (or recovering) incidents with their device's presence; a hall-wide one only when no filter
    needs a device."""
    i, d = incidents.c, devices.c
    q = (
        sa.select(incidents, d.presence, d.role)
        .select_from(incidents.outerjoin(devices, d.key == i.key))
        .where(i.state.in_(OPEN_STATES))
    )
    if f.sites is not None:
        q = q.where(i.site.in_(f.sites))
    if f.site is not None:
        q = q.where(i.site == f.site)
    if f.narrows_devices:
        q = q.where(*[t for t in f.conditions()])
    return q.order_by(i.detected_at).limit(MAX_PROBLEMS)


def consumables_at_risk_query(f: DeviceFilter, latest_window: datetime) -> sa.Select[Any]:
    """Consumables low or empty, or forecast to run out by ``latest_window`` (the latest of the halls' next
    restock windows: each hall's own is applied by the caller), with their device."""
    c, d = consumable_levels.c, devices.c
    risky = sa.or_(c.state.in_(LOW_STATES), c.empty_forecast <= latest_window)
    q = (
        sa.select(consumable_levels, d.site, d.device, d.presence, d.role)
        .select_from(consumable_levels.join(devices, d.key == c.key))
        .where(risky, *f.conditions())
    )
    return q.limit(MAX_PROBLEMS)


# -- one device -------------------------------------------------------------------------------------------------
async def health_history(store: Store, site: str, device: str, since: datetime, limit: int = 2000) -> list[Any]:
    """device.health reports since ``since``, oldest first (the newest ``limit`` of them)."""
    e = events.c
    q = (
        sa.select(e.ts, e.data)
        .where(e.site == site, e.device == device, e.type == "device.health", e.ts >= since)
        .order_by(e.ts.desc())
        .limit(limit)
    )
    return list(reversed(await store.fetch(q)))


async def recent_events(store: Store, site: str, device: str, limit: int = 50) -> list[Any]:
    e = events.c
    q = (
        sa.select(e.id, e.type, e.seq, e.ts, e.received_at, e.replayed, e.data)
        .where(e.site == site, e.device == device)
        .order_by(e.seq.desc())
        .limit(limit)
    )
    return await store.fetch(q)


async def latest_counter(store: Store, site: str, device: str, name: str) -> int | None:
    """The newest value of a kiosk.usage counter (the last few reports are searched for it)."""
    import json

    e = events.c
    q = (
        sa.select(e.data)
        .where(e.site == site, e.device == device, e.type == "kiosk.usage")
        .order_by(e.ts.desc())
        .limit(20)
    )
    for row in await store.fetch(q):
        value = json.loads(row.data).get("counters", {}).get(name)
        if isinstance(value, int):
            return value
    return None


async def device_incidents(store: Store, key: str, limit: int = 20) -> list[Any]:
    i = incidents.c
    return await store.fetch(sa.select(incidents).where(i.key == key).order_by(i.detected_at.desc()).limit(limit))


async def device_consumables(store: Store, key: str) -> list[Any]:
    c = consumable_levels.c
    return await store.fetch(sa.select(consumable_levels).where(c.key == key).order_by(c.consumable))


async def device_commands(store: Store, key: str, limit: int = 20) -> list[Any]:
    c = commands.c
    return await store.fetch(sa.select(commands).where(c.key == key).order_by(c.issued_at.desc()).limit(limit))


async def command_audit(store: Store, key: str, since: datetime, limit: int = 500) -> list[Any]:
    """The device's command audit rows since the oldest command shown, oldest first."""
    a = audit_log.c
    q = (
        sa.select(audit_log)
        .where(a.target == key, a.at >= since, a.action.startswith("command."))
        .order_by(a.at, a.id)
        .limit(limit)
    )
    return await store.fetch(q)


async def labels_of(store: Store, key: str) -> list[tuple[str, str]]:
    lab = device_labels.c
    rows = await store.fetch(sa.select(lab.name, lab.value).where(lab.key == key).order_by(lab.name))
    return [(r.name, r.value) for r in rows]
