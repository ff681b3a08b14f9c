"""What people do to incidents, dispatches and notifications (the CLI and the API call these): each action
lands in the incident's timeline and in the audit log, in one transaction."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.rules.incidents import IncidentRules, Signal, timeline
from broker.sites import Sites
from broker.store.commands import audit
from broker.store.db import Store
from broker.store.schema import dispatches, incidents, notifications, service_records


class ActionError(ValueError):
    """An action that cannot be done; the message says why."""


async def find_incident(conn: AsyncConnection, prefix: str) -> Any:
    """By id or a unique prefix of it (ids are long; people type the first characters)."""
    c = incidents.c
    rows = (await conn.execute(sa.select(incidents).where(c.id.startswith(prefix, autoescape=True)).limit(2))).all()
    if not rows:
        raise ActionError(f"no incident {prefix!r}")
    if len(rows) > 1:
        raise ActionError(f"{prefix!r} matches several incidents: give more of the id")
    return rows[0]


async def ack(store: Store, incident: str, *, by: str, at: datetime, via: str = "cli") -> Any:
    """Someone took it: escalation stops. Acknowledging twice is harmless (the first one counts)."""
    async with store.engine.begin() as conn:
        row = await find_incident(conn, incident)
        c = incidents.c
        done = await conn.execute(
            incidents.update().where(c.id == row.id, c.acked_at.is_(None)).values(acked_at=at, acked_by=by[:64])
        )
        if done.rowcount == 1:
            await timeline(conn, row.id, at, "ack", f"{by} 已确认 ({via})", actor=by)
            await audit(conn, at=at, actor=by, action="incident.ack", target=row.key, detail={"incident": row.id})
        return row


async def note(store: Store, incident: str, text: str, *, by: str, at: datetime) -> None:
    if not text.strip():
        raise ActionError("a note needs some text")
    async with store.engine.begin() as conn:
        row = await find_incident(conn, incident)
        await timeline(conn, row.id, at, "note", text, actor=by)
        await audit(conn, at=at, actor=by, action="incident.note", target=row.key, reason=text[:500])


async def staff_reported(
    store: Store, sites: Sites, key: str, *, by: str, at: datetime, reported_at: datetime, text: str = ""
) -> str:
    """Site staff phoned the outage in (the regulation's own start of the 30 minutes). Recorded on the
    device's open incidents; if hallfleet saw nothing, the report opens a ``reported`` incident."""
    site, _, device = key.partition("/")
    c = incidents.c
    async with store.engine.begin() as conn:
        open_ones = sa.select(c.id).where(c.key == key, c.state != "closed", c.device != "*")
        rows = (await conn.execute(open_ones.order_by(c.detected_at))).all()
        for r in rows:
            await conn.execute(
                incidents.update()
                .where(c.id == r.id, c.staff_reported_at.is_(None))
                .values(staff_reported_at=reported_at)
            )
            await timeline(conn, r.id, at, "note", f"现场人员报障 ({by}): {text}".strip(), actor=by)
        await audit(conn, at=at, actor=by, action="incident.reported", target=key, reason=text[:500])
        if rows:
            return rows[0].id
        signal = Signal(site, device, "reported", True, "critical", reported_at, reported_at, text or f"报障人 {by}")
        await IncidentRules(sites, store.roles).apply(conn, [signal])
        opened = await conn.scalar(sa.select(c.id).where(c.open_key == signal.incident_key))
        await conn.execute(incidents.update().where(c.id == opened).values(staff_reported_at=reported_at))
        return str(opened)


async def clear_reported(store: Store, sites: Sites, key: str, *, by: str, at: datetime) -> None:
    """A reported outage has no device signal to clear it: the technician says it works again."""
    site, _, device = key.partition("/")
    async with store.engine.begin() as conn:
        signal = Signal(site, device, "reported", False, "critical", at, at, f"{by}: 已修复")
        await IncidentRules(sites, store.roles).apply(conn, [signal])
        await audit(conn, at=at, actor=by, action="incident.reported_cleared", target=key)


async def dispatch_update(store: Store, incident: str, state: str, *, by: str, at: datetime, text: str = "") -> None:
    """A technician on site (``on_site``) or done (``done``). Arrival before recovery makes it an
    on-site recovery; the incident still closes only on verified recovery."""
    if state not in ("on_site", "done"):
        raise ActionError("a dispatch moves to on_site or done")
    async with store.engine.begin() as conn:
        row = await find_incident(conn, incident)
        d = dispatches.c
        values: dict[str, Any] = {"state": state, "technician": by[:64], "note": text[:1000]}
        values["arrived_at" if state == "on_site" else "done_at"] = at
        cond = d.incident_id == row.id
        if state == "done":
            values["arrived_at"] = sa.func.coalesce(d.arrived_at, at)
        result = await conn.execute(dispatches.update().where(cond, d.state.in_(["open", "on_site"])).values(**values))
        if result.rowcount != 1:
            raise ActionError(f"incident {row.id} has no open dispatch")
        await conn.execute(
            service_records.insert().values(
                key=row.key, site=row.site, kind="on_site", at=at, by=by[:64], note=text[:1000]
            )
        )
        label = {"on_site": "已到场", "done": "现场处置完成"}[state]
        await timeline(conn, row.id, at, "note", f"{by} {label} {text}".strip(), actor=by)
        await audit(conn, at=at, actor=by, action=f"dispatch.{state}", target=row.key, reason=text[:500])


async def retry_notification(store: Store, notification_id: int, *, by: str, at: datetime) -> None:
    n = notifications.c
    async with store.engine.begin() as conn:
        result = await conn.execute(
            notifications.update()
            .where(n.id == notification_id, n.state == "failed")
            .values(state="pending", due_at=at, created_at=at, claimed_until=None)
        )
        if result.rowcount != 1:
            raise ActionError(f"notification {notification_id} is not a failed one")
        await audit(conn, at=at, actor=by, action="notification.retry", target=str(notification_id))


def parse_when(text: str | None, now: datetime) -> datetime:
    """``HH:MM`` today (hall time), an ISO time, ``-15m`` (minutes ago), or now."""
    from runtime.clock import HALL_ZONE

    if not text:
        return now
    if text.startswith("-") and text.endswith("m"):
        return now - timedelta(minutes=float(text[1:-1]))
    try:
        if len(text) == 5 and text[2] == ":":
            local = now.astimezone(HALL_ZONE)
            h, m = int(text[:2]), int(text[3:])
            return local.replace(hour=h, minute=m, second=0, microsecond=0)
        t = datetime.fromisoformat(text)
    except ValueError:
        raise ActionError(f"time {text!r}: write HH:MM, an ISO time or -15m") from None
    return t if t.tzinfo else t.replace(tzinfo=HALL_ZONE)
