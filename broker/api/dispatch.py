"""On-site dispatch from the dashboard: a technician or the IT section sends someone before the SLA clock does.

The SLA clock opens a dispatch by itself at the breach (broker/rules/sla.py); a person who already knows the kiosk
needs hands on site should not wait 30 minutes for it. The row is the same one (one dispatch per incident, the
unique ``incident_id``), so the clock's own step meets it and adds nothing, the overdue notice and the
recovery's "on site" verdict work unchanged, and ``on_site``/``done`` go through broker.rules.actions like the CLI.
The technicians are paged as the clock's dispatch step pages them (same step, same routes, deduplicated per
recipient), in the transaction that opens the dispatch; the consumer's sender delivers it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from broker.alerts.routing import Router
from broker.rules.actions import ActionError, dispatch_update, find_incident
from broker.rules.incidents import timeline
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store.commands import audit
from broker.store.db import Store, _insert_ignore
from broker.store.schema import dispatches
from protocol.ids import uuid7


async def open_dispatch(
    store: Store, sites: Sites, incident: str, *, by: str, at: datetime, note: str = "", router: Router | None = None
) -> Any:
    """Open the incident's dispatch, due on site as the SLA clock's would be (SiteConfig.onsite_due); refused if
    it has one or is closed."""
    async with store.engine.begin() as conn:
        row = await find_incident(conn, incident)
        if row.state == "closed":
            raise ActionError(f"incident {row.id} is closed: nothing to dispatch")
        if row.device == "*":
            raise ActionError("a hall-wide incident: dispatch to the incidents of its devices")
        cal = sites[row.site].site_calendar
        due = sites[row.site].onsite_due(at)
        values = {"id": uuid7(), "incident_id": row.id, "key": row.key, "site": row.site, "opened_at": at}
        values |= {"due_at": due, "state": "open", "note": note[:1000]}
        done = await conn.execute(_insert_ignore(conn, dispatches).values(**values))
        if done.rowcount != 1:
            old = (await conn.execute(sa.select(dispatches).where(dispatches.c.incident_id == row.id))).first()
            raise ActionError(f"incident {row.id} was dispatched already ({old.state if old else '?'})")
        local = due.astimezone(cal.zone)
        await timeline(conn, row.id, at, "step", f"{by} 派单上门, 须在 {local:%Y-%m-%d %H:%M} 前到场 {note}".strip(),
                       actor=by)  # fmt: skip
        await audit(conn, at=at, actor=by, action="dispatch.open", target=row.key, reason=note[:500],
                    detail={"incident": row.id, "due_at": due.isoformat()})  # fmt: skip
        if router is not None:
            zh = f"{by} 派单: 请在 {local:%m-%d %H:%M} 前到现场处理: {row.summary} {note}".strip()
            en = f"{by} dispatched: go on site before {local:%m-%d %H:%M}: {row.summary} {note}".strip()
            facts = {"at": at.isoformat(), "detected_at": row.detected_at.isoformat(), "due_at": due.isoformat()}
            notice = Notice(f"incident:{row.id}", "dispatch", row.site, row.device, row.device_class, row.kind,
                            row.severity, zh, en, facts | {"dispatched_by": by})  # fmt: skip
            await router.enqueue(conn, notice, at)
    return await dispatch_row(store, row.id)


async def move_dispatch(store: Store, incident: str, state: str, *, by: str, at: datetime, note: str = "") -> Any:
    """``on_site`` or ``done``: broker.rules.actions.dispatch_update (timeline, service record, audit)."""
    await dispatch_update(store, incident, state, by=by, at=at, text=note)
    return await dispatch_row(store, incident)


async def dispatch_row(store: Store, incident_id: str) -> Any:
    rows = await store.fetch(sa.select(dispatches).where(dispatches.c.incident_id == incident_id))
    return rows[0] if rows else None


async def dispatches_of(store: Store, incident_ids: list[str]) -> dict[str, Any]:
    if not incident_ids:
        return {}
    rows = await store.fetch(sa.select(dispatches).where(dispatches.c.incident_id.in_(incident_ids)))
    return {r.incident_id: r for r in rows}
