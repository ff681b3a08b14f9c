"""One device's page: its live state and 24-hour presence, its health over the last day (charts drawn on the
server), its consumables, recent events, incidents, the commands sent to it with each one's audit trail, and the
commands the operator's role may send from here.

The rule: every read is about this one device and bounded (broker/api/fleet_queries.py), so the page costs the
same in a fleet of 40 or 10,000; a device of a hall the user does not see is the same 404 as a missing one.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from broker.api import fleet_queries as fq
from broker.api import queries, views
from broker.api.audit import may_read_event, staff_rows_read
from broker.api.auth import User, current_user
from broker.api.charts import series_svg
from broker.api.consumables_view import consumable_rows
from broker.api.fleet_words import incident_kind_label
from broker.api.i18n import language, words
from broker.api.limits import form_fields
from broker.api.models import CommandIn
from broker.api.params import DevicePath, Site

Me = Annotated[User, Depends(current_user)]
HEALTH_WINDOW = timedelta(hours=24)
# (field of device.health, word, unit word, fixed top of the axis)
MEASURES = (
    ("cpu_temp_c", "cpu_temp_c", "unit_c", None),
    ("load1", "load1", "", None),
    ("mem_used_pct", "mem_used_pct", "unit_pct", 100.0),
    ("disk_used_pct", "disk_used_pct", "unit_pct", 100.0),
    ("outbox_depth", "outbox_depth", "unit_count", None),
)
COMMON_ACTIONS = ("diagnose", "restart_app", "sync_config", "collect_logs", "restart_agent", "reboot")
ROLE_ACTIONS = {"kiosk": ("printer_test_slip", "printer_recover")}

router = APIRouter(include_in_schema=False)


@router.get("/devices/{site}/{device}", response_class=HTMLResponse)
async def device_page(request: Request, user: Me, site: Site, device: DevicePath) -> HTMLResponse:
    from broker.api.pages import render

    row = await _visible_device(request, user, site, device)
    app = request.app.state
    lang = language(request)
    t = words(lang)
    now = app.clock.now()
    live = (await views.device_rows(app.store, [row], now, t))[0]
    can_read_commands = user.can("commands.read")
    shown = await fq.recent_events(app.store, site, device)
    await staff_rows_read(request, user, site, f"events of {device}", [e.type for e in shown], events=True)
    return render(
        request,
        "device.html",
        user=user,
        d=row,
        live=live,
        hall=app.sites[site].name or site,
        labels=await fq.labels_of(app.store, row.key),
        charts=await _health_charts(app.store, site, device, now, t),
        consumables=await consumable_rows(
            app.store, app.sites, await fq.device_consumables(app.store, row.key), lang, t, now
        ),
        events=[_event_row(e, t, user) for e in shown],
        incidents=[_incident_row(i, app.sites, now, t, lang) for i in await fq.device_incidents(app.store, row.key)],
        commands=await _commands(app.store, row.key, t) if can_read_commands else [],
        actions=_actions(row.role) if user.can("command") else [],
        stream_devices=[row.key],
    )


@router.post("/devices/{site}/{device}/commands")
async def device_command(request: Request, user: Me, site: Site, device: DevicePath) -> Response:
    """A command from the device page's buttons, back to the device page (its row shows the state)."""
    from broker.api.routes import send_command

    await _visible_device(request, user, site, device)
    f = await form_fields(request)
    try:
        body = CommandIn(device=f"{site}/{device}", name=f.get("name", ""), reason=f.get("reason", ""))
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
    cmd = await send_command(request, user, body)
    return RedirectResponse(f"/devices/{quote(site)}/{quote(device)}?command={quote(cmd.id)}#commands", 303)


async def _visible_device(request: Request, user: User, site: str, device: str) -> Any:
    if not user.can("devices"):
        raise HTTPException(403, "not allowed")
    row = await queries.device_row(request.app.state.store, f"{site}/{device}") if user.sees(site) else None
    if row is None:
        raise HTTPException(404, f"no device {site}/{device}")
    return row


async def _health_charts(store: Any, site: str, device: str, now: datetime, t: dict[str, str]) -> list[str]:
    since = now - HEALTH_WINDOW
    reports = []
    for r in await fq.health_history(store, site, device, since):
        try:
            reports.append((r.ts, json.loads(r.data)))
        except ValueError:
            continue
    if not reports:
        return []
    interval = reports[-1][1].get("interval_s") if isinstance(reports[-1][1].get("interval_s"), int | float) else 60
    gap = timedelta(seconds=3 * float(interval))
    charts = []
    for field, word, unit, top in MEASURES:
        points = [(ts, float(v)) for ts, data in reports if _number(v := data.get(field))]
        if points:
            charts.append(series_svg(points, since, now, t[word], t.get(unit, ""), gap=gap, fixed_max=top))
    return charts


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _event_row(e: Any, t: dict[str, str], user: User) -> dict[str, Any]:
    return {
        "type": t.get(f"event_type.{e.type}", e.type),
        "seq": e.seq,
        "at": views.hall_time(e.ts),
        "replayed": e.replayed,
        # A punch's or a rating's payload is staff data: only for roles that read it (broker/api/audit.py).
        "data": e.data[:160] if may_read_event(user, e.type) else "",
    }


def _incident_row(i: Any, sites: Any, now: datetime, t: dict[str, str], lang: str) -> dict[str, Any]:
    sla = queries.sla_of(i, sites, now)
    return {
        "kind": incident_kind_label(i.kind, lang),
        "severity": t.get(i.severity, i.severity),
        "state": t.get(i.state, i.state),
        "open": i.state != "closed",
        "detected": views.hall_time(i.detected_at),
        "closed": views.hall_time(i.closed_at),
        "breached": sla.breached,
        "countdown": views.countdown(sla.breach_at, now, sla.breached, t) if i.state != "closed" else "",
        "summary": i.summary,
        "recovery": i.recovery,
    }


async def _commands(store: Any, key: str, t: dict[str, str]) -> list[dict[str, Any]]:
    rows = await fq.device_commands(store, key)
    if not rows:
        return []
    trail: dict[str, list[dict[str, str]]] = {}
    for a in await fq.command_audit(store, key, min(r.issued_at for r in rows)):
        try:
            command_id = json.loads(a.detail).get("command_id")
        except ValueError:
            continue
        trail.setdefault(str(command_id), []).append(
            {
                "at": views.hall_time(a.at),
                "action": t.get(f"audit_action.{a.action}", a.action),
                "actor": a.actor,
                "reason": a.reason,
            }
        )
    return [views.command_row(r, t) | {"reason": r.reason, "trail": trail.get(r.id, [])} for r in rows]


def _actions(role: str) -> list[str]:
    return [*COMMON_ACTIONS, *ROLE_ACTIONS.get(role, ())]
