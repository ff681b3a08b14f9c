"""Attributes IT registers for a device, as the centre's store keeps them for the SLA and the maintenance rules.

One so far: whether the device is a 24-hour device (its SLA clock counts wall-clock time, its area is cleaned
on days the hall is closed). It is an attribute of the device, approved by a person, not a property of its
name: ``kiosk-2`` moved into the 24-hour area is a 24-hour device without being renamed.

One source of truth: the provisioning registry (provisioning/registry.py, ``hallfleet provision device
--hours24`` and ``hallfleet provision hours24``). ``devices.hours24`` is the centre's copy, written only from
the registry (``register_devices`` below, called by those commands and by ``hallfleet provision sync``), so the
rules read it inside their own transaction. A device registered before it ever connects gets its row now
(presence ``registered`` until it speaks, broker.store.db.heard_from), so its first outage is timed right. A
device with no registered status is not a 24-hour device, whatever its name, unless its site still sets the
deprecated ``always_on`` name patterns (empty by default, broker/sites.py).
An incident keeps the status it opened with: a change re-times future outages, never one already on the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.store.commands import audit
from broker.store.db import REGISTERED, _insert_ignore
from broker.store.schema import devices

AUDIT_ACTION = "device.hours24"


@dataclass(frozen=True, slots=True)
class Registered:
    """What the registry says about one device."""

    site: str
    device: str
    role: str
    hours24: bool

    @property
    def key(self) -> str:
        return f"{self.site}/{self.device}"


@dataclass(frozen=True, slots=True)
class Change:
    """A device whose stored status differed from the registry's; ``before`` None: no status (or no row)."""

    key: str
    before: bool | None
    after: bool
    created: bool  # the device had never connected: its row starts here


async def register_devices(
    conn: AsyncConnection, entries: Sequence[Registered], *, by: str, at: datetime
) -> list[Change]:
    """Make the store say what the registry says; each change is audited. Returns what changed."""
    c = devices.c
    keys = [e.key for e in entries]
    stored = {r.key: r.hours24 for r in await conn.execute(sa.select(c.key, c.hours24).where(c.key.in_(keys)))}
    changes: list[Change] = []
    for e in entries:
        if e.key in stored and stored[e.key] == e.hours24:
            continue
        if e.key not in stored:
            # Not in service until it speaks: broker.store.db then starts its life (first_seen) and presence.
            row = {"key": e.key, "site": e.site, "device": e.device, "role": e.role, "first_seen": at}
            row["presence"] = REGISTERED
            await conn.execute(_insert_ignore(conn, devices).values(**row, hours24=e.hours24))
        await conn.execute(devices.update().where(c.key == e.key).values(hours24=e.hours24))
        change = Change(e.key, stored.get(e.key), e.hours24, created=e.key not in stored)
        await audit(conn, at=at, actor=by, action=AUDIT_ACTION, target=e.key, reason="provisioning registry",
                    detail={"hours24": e.hours24, "before": change.before, "new_row": change.created})  # fmt: skip
        changes.append(change)
    return changes
