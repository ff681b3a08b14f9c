"""Attributes IT registers for a device in the centre's store, which the SLA and the maintenance rules read.

One so far: whether the device is a 24-hour device (its SLA clock counts wall-clock time, its area is cleaned
on days the hall is closed). It is an attribute of the device, recorded by a person and audited, not a property
of its name: ``kiosk-2`` moved into the 24-hour area is a 24-hour device without being renamed. A device with no
registered status falls back to the site's deprecated ``always_on`` name patterns (broker/sites.py). An incident
keeps the status it opened with: changing it re-times future outages, never one already on the clock.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.rules.actions import ActionError
from broker.store.commands import audit
from broker.store.schema import devices


async def set_hours24(conn: AsyncConnection, key: str, hours24: bool, *, by: str, at: datetime) -> bool | None:
    """Record the device's 24-hour status; returns what it was (None: not registered before)."""
    c = devices.c
    before = (await conn.execute(sa.select(c.hours24).where(c.key == key))).first()
    if before is None:
        raise ActionError(
            f"{key} has never connected to this centre: register its 24-hour status once it has (its first"
            " connection creates its record); until then the site's always_on patterns apply"
        )
    await conn.execute(devices.update().where(c.key == key).values(hours24=hours24))
    await audit(conn, at=at, actor=by, action="device.hours24", target=key,
                detail={"hours24": hours24, "before": before.hours24})  # fmt: skip
    return before.hours24
