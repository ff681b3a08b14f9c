"""The dashboard's pages of the 24-hour area and the daily duties (issue 23; docs/hall-duties.md).

``/access``: each door's contact, lock and controller as last reported, the door and locker alarms still active
(the conditions of their incidents), each locker bank's occupancy and the items held past the hall's limit.
``/duties``: the day's network check per hall, then for one hall each kiosk's check, each departmental machine's
power-on and power-off and each patrol round, judged as the duties job judges them (broker/duties/*).

Who sees what: both pages are device data, for everyone of the site (the ``devices`` permission, scoped to the
user's sites like the other pages; another site is 403). The one personal datum, the patrol officers' staff ids,
is shown only to roles that read staff data (``attendance``) and is an audited read, as on the attendance page;
others see how many officers walked the round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse

from broker.access.status import alarms_now, banks_now, doors_now
from broker.api import views
from broker.api.audit import staff_data_read
from broker.api.auth import User, current_user
from broker.api.fleet_words import incident_kind_label
from broker.api.i18n import language
from broker.api.pages import render
from broker.api.params import DayQuery, SiteQuery
from broker.duties.netcheck import NetCheckDay, netcheck_day
from broker.duties.patrol import patrol_day
from broker.duties.power import power_day

router = APIRouter(include_in_schema=False)
Me = Annotated[User, Depends(current_user)]


@dataclass(frozen=True, slots=True)
class NetTally:
    site: str
    due: int
    ok: int
    failed: int
    missing: int
    pending: int


def _scope(user: User, site: str | None) -> list[str] | None:
    """The sites a page reads: the one asked for (403 if not the user's), else every site of the user's."""
    if not user.can("devices"):
        raise HTTPException(403, "not allowed")
    if site is not None:
        if not user.sees(site):
            raise HTTPException(403, f"site {site} is not one of {user.name}'s sites")
        return [site]
    return user.site_filter()


@router.get("/access", response_class=HTMLResponse)
async def access_page(request: Request, user: Me, site: SiteQuery = None) -> HTMLResponse:
    scope = _scope(user, site)
    app = request.app.state
    now = app.clock.now()
    lang = language(request)
    async with app.store.engine.connect() as conn:
        doors = await doors_now(conn, scope)
        banks = await banks_now(conn, scope, app.sites, now)
        alarms = await alarms_now(conn, scope)
    held = [
        {"bank": b, "item": h, "hours": round((now - h.since).total_seconds() / 3600, 1)}
        for b in banks
        for h in b.overdue
    ]
    choices = _choices(request, user)
    limits = sorted({app.sites[s].duties.locker_max_hold_h for s in ([site] if site else choices)})
    return render(
        request,
        "access.html",
        user=user,
        site=site or "",
        sites=choices,
        doors=doors,
        banks=banks,
        held=held,
        limit_h="/".join(f"{h:g}" for h in limits),
        alarms=[{"row": a, "label": incident_kind_label(a.kind, lang)} for a in alarms],
    )


def _choices(request: Request, user: User) -> list[str]:
    names = set(request.app.state.sites.names())
    return sorted(names if user.all_sites else names & set(user.sites))


@router.get("/duties", response_class=HTMLResponse)
async def duties_page(request: Request, user: Me, site: SiteQuery = None, day: DayQuery = None) -> HTMLResponse:
    _scope(user, site)
    app = request.app.state
    now = app.clock.now()
    choices = _choices(request, user)
    site = site or (choices[0] if choices else None)
    day = day or now.astimezone(views.HALL_ZONE).date()
    ctx: dict[str, Any] = {"net_sites": await _net_by_site(request, choices, day, now)}
    if site is not None:
        ctx |= await _site_duties(request, user, site, day, now)
    return render(request, "duties.html", user=user, site=site, day=day, sites=choices, **ctx)


async def _net_by_site(request: Request, sites: list[str], day: date, now: datetime) -> list[NetTally]:
    app = request.app.state
    out = []
    async with app.store.engine.connect() as conn:
        for s in sites:
            found = await netcheck_day(conn, s, app.sites[s], day, now)
            out.append(_tally(s, found))
    return out


def _tally(site: str, found: list[NetCheckDay]) -> NetTally:
    n = [f.verdict for f in found]
    return NetTally(site, len(n), n.count("ok"), n.count("failed"), n.count("missing"), n.count("pending"))


async def _site_duties(request: Request, user: User, site: str, day: date, now: datetime) -> dict[str, Any]:
    app = request.app.state
    cfg = app.sites[site]
    async with app.store.engine.connect() as conn:
        net = await netcheck_day(conn, site, cfg, day, now)
        power = await power_day(conn, site, cfg, day, now)
        rounds = await patrol_day(conn, site, cfg, day, now)
    names_officers = user.can("attendance")
    if names_officers and any(r.officers for r in rounds):
        await staff_data_read(request, user, "patrol.read", site, day=day.isoformat(), what="officers")
    return {"net": net, "power": power, "rounds": rounds, "names_officers": names_officers}
