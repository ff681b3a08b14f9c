"""The IT section's dashboard: server-rendered pages (Jinja2), live by server-sent events, charts as inline SVG.

The only script is a small inline one in base.html (no third-party JavaScript): it applies rows the stream sends
and counts SLA deadlines down. Forms post back and redirect, so every button also works without it.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from broker.alerts.routing import verify_ack
from broker.api import clocking, queries, store_health, views
from broker.api.audit import staff_data_read
from broker.api.auth import COOKIE, User, close_session, current_user, request_token, same_origin
from broker.api.consumables_view import consumable_rows
from broker.api.dispatch import dispatches_of
from broker.api.fleet_words import incident_summary
from broker.api.i18n import language, words
from broker.api.limits import form_fields
from broker.api.live import END, LiveStream, still_valid
from broker.api.login import Failure, log_in
from broker.api.models import CommandIn, DispatchIn
from broker.api.params import SEGMENT, DayQuery, EventId, IncidentId, PageNo, SiteQuery, UserName
from broker.api.routes import attendance_day, send_command, set_session_cookie
from broker.api.svg import stacked_bars_svg
from broker.rules import actions
from broker.store.schema import devices

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
TEMPLATES.env.filters["hall_time"] = views.hall_time
TEMPLATES.env.filters["incident_summary"] = incident_summary
Me = Annotated[User, Depends(current_user)]
CHART_HISTORY = timedelta(days=7)  # how far back the consumables' level charts reach
CONSUMABLES_PER_PAGE = 100

router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    lang = language(request)
    nonce = secrets.token_urlsafe(12)
    banners = getattr(request.state, store_health.STATE, ())  # read before routing (broker/api/store_health.py)
    ctx = {"t": words(lang), "lang": lang, "nonce": nonce, "path": request.url.path, "store_banners": banners, **ctx}
    response = TEMPLATES.TemplateResponse(request, name, ctx, status_code=status)
    response.headers["Content-Security-Policy"] = (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; img-src 'self' data:;"
        " frame-ancestors 'none'; form-action 'self'"
    )
    if request.query_params.get("lang") in ("zh-CN", "en"):
        response.set_cookie("lang", lang, max_age=365 * 86400, samesite="lax", path="/")
    return response


def _safe_next(target: str | None) -> str:
    # Only paths on this site: a crafted ?next=https://elsewhere must not turn login into a redirector.
    if not target or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


# -- login -------------------------------------------------------------------------------------------
@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next), error=None, user=None)


LOGIN_FIELDS = {"username": 64, "password": 1024, "next": 2048}


@router.post("/login")
async def login_form(request: Request) -> Response:
    same_origin(request)  # a forged login would sign the victim's browser in as the attacker
    t = words(language(request))
    try:
        f = await form_fields(request, LOGIN_FIELDS)
    except HTTPException:
        return render(request, "login.html", 422, next="/", error=t["login_failed"], user=None)
    name, password, target = f.get("username", ""), f.get("password", ""), _safe_next(f.get("next"))
    done = await log_in(request, name, password)
    if isinstance(done, Failure):
        error = t["login_locked"] if done.status == 429 else t["login_failed"]
        page = render(request, "login.html", done.status, next=target, error=error, user=None)
        if done.retry_after_s:
            page.headers["Retry-After"] = str(done.retry_after_s)
        return page
    response = RedirectResponse(target, status_code=303)
    set_session_cookie(response, done.token, done.ttl, request.app.state.cfg.cookie_secure)
    return response


@router.post("/logout")
async def logout_form(request: Request) -> Response:
    same_origin(request)
    token = request_token(request)
    if token:
        await close_session(request.app.state.store, token)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- pages -------------------------------------------------------------------------------------------
@router.get("/incidents", response_class=HTMLResponse)
async def incidents_page(request: Request, user: Me) -> HTMLResponse:
    if not user.can("incidents"):
        raise HTTPException(403, "not allowed")
    app = request.app.state
    lang = language(request)
    t = words(lang)
    now = app.clock.now()
    rows = await app.store.fetch(queries.incidents_query(user.site_filter(), "open").limit(500))
    sent = await dispatches_of(app.store, [r.id for r in rows])
    cmds = []
    if user.can("commands.read"):
        cmds = await app.store.fetch(queries.recent_commands_query(user.site_filter(), now - timedelta(hours=24)))
    return render(
        request,
        "incidents.html",
        user=user,
        incidents=[_incident_row(r, app.sites, now, t, lang, user, sent.get(r.id)) for r in rows],
        commands=[views.command_row(c, t) for c in cmds],
    )


def _incident_row(
    r: Any, sites: Any, now: datetime, t: dict[str, str], lang: str, user: User, d: Any
) -> dict[str, Any]:
    acts = user.can("ack"), user.can("command")
    return views.incident_row(r, sites, now, t, lang, *acts, dispatch=d, can_dispatch=user.can("dispatch"))


@router.post("/incidents/{incident_id}/dispatch")
async def dispatch_form(request: Request, user: Me, incident_id: IncidentId) -> Response:
    from broker.api.routes import dispatch_incident

    f = await form_fields(request)
    try:
        body = DispatchIn.model_validate({"state": f.get("state", "open"), "note": f.get("note", "")})
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
    await dispatch_incident(request, user, incident_id, body)
    return RedirectResponse("/incidents", status_code=303)


@router.post("/incidents/{incident_id}/ack")
async def ack_form(request: Request, user: Me, incident_id: IncidentId) -> Response:
    from broker.api.routes import ack_incident

    await ack_incident(request, user, incident_id)
    return RedirectResponse("/incidents", status_code=303)


@router.post("/commands")
async def command_form(request: Request, user: Me) -> Response:
    f = await form_fields(request)
    try:
        body = CommandIn(device=f.get("device", ""), name=f.get("name", ""), reason=f.get("reason", ""))
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
    cmd = await send_command(request, user, body)
    return RedirectResponse(f"/incidents?command={quote(cmd.id)}", status_code=303)


@router.get("/consumables", response_class=HTMLResponse)
async def consumables_page(request: Request, user: Me, site: SiteQuery = None, page: PageNo = 1) -> HTMLResponse:
    """A page of CONSUMABLES_PER_PAGE at a time (a fleet has thousands); the overview lists the ones at risk."""
    if not user.can("consumables"):
        raise HTTPException(403, "not allowed")
    lang = language(request)
    t = words(lang)
    app = request.app.state
    now = app.clock.now()
    q = queries.consumables_query(user.site_filter(), site)
    rows, total = await queries.page_of(app.store, q, page, CONSUMABLES_PER_PAGE)
    measured = sorted({r.key for r in rows if r.level_pct is not None})
    history = await queries.level_history(app.store, measured, now - CHART_HISTORY)
    built = await consumable_rows(app.store, app.sites, rows, lang, t, now, history)
    pages = {"page": page, "pages": max(1, -(-total // CONSUMABLES_PER_PAGE)), "total": total}
    return render(request, "consumables.html", user=user, rows=built, pages=pages, site=site or "")


@router.get("/attendance", response_class=HTMLResponse)
async def attendance_page(
    request: Request,
    user: Me,
    site: Annotated[str | None, Query(pattern=SEGMENT)] = None,
    day: DayQuery = None,
) -> HTMLResponse:
    if not user.can("attendance"):
        raise HTTPException(403, "not allowed")
    app = request.app.state
    choices = sorted(set(app.sites.names()) if user.all_sites else set(user.sites))
    site = site or (choices[0] if choices else None)
    day = day or app.clock.now().astimezone(views.HALL_ZONE).date()
    rows = []
    chart = ""
    flags: list[Any] = []
    if site is not None:
        if not user.sees(site):
            raise HTTPException(403, f"site {site} is not one of {user.name}'s sites")
        await staff_data_read(request, user, "attendance.read", site, day=day.isoformat(), what="page")
        rows = await attendance_day(request, site, day, language(request))
        chart = await _month_chart(request, site, day)
        flags = await clocking.open_flags(request, user, site)  # suspected proxy clocking (broker/api/clocking.py)
    return render(
        request,
        "attendance.html",
        flags=flags,
        can_review=user.can("followup"),
        user=user,
        site=site,
        day=day,
        sites=choices,
        rows=rows,
        month=f"{day:%Y-%m}",
        chart=chart,
    )


async def _month_chart(request: Request, site: str, day: date) -> str:
    """Staff-days of the month so far (to ``day``) per unit, stacked by kind."""
    from broker.attendance.service import load_period

    app = request.app.state
    t = words(language(request))
    p = await load_period(app.store, app.sites, site, day.replace(day=1), day, now=app.clock.now())
    bars = views.attendance_bars(list(p.days), list(p.members), t["no_unit"])
    return stacked_bars_svg(bars, t, f"{t['monthly_attendance']} {day:%Y-%m}")


# -- the signed link in alert messages ---------------------------------------------------------------
async def _ack_target(request: Request, token: str) -> tuple[Any, str | None, int]:
    """(incident row or None, why it may not be acknowledged or None, HTTP status) for a link's token."""
    secret = request.app.state.ack_secret
    link = verify_ack(secret, token) if secret and len(token) <= 256 else None
    if link is None:
        return None, None, 404
    if link.expired(request.app.state.clock.now()):
        return None, "expired", 410
    row = await queries.incident_row(request.app.state.store, link.incident_id)
    if row is None:
        return None, None, 404
    return row, ("closed" if row.state == "closed" else None), (409 if row.state == "closed" else 200)


def _ack_page(request: Request, token: str, row: Any, refusal: str | None, status: int, done: bool) -> HTMLResponse:
    kind = _kind(row, request) if row is not None else ""
    return render(request, "ack.html", status, row=row, kind=kind, refusal=refusal, done=done, token=token, user=None)


@router.get("/ack/{token}", response_class=HTMLResponse)
async def ack_link_page(request: Request, token: str) -> HTMLResponse:
    """Opening the link only shows the incident: a link preview or a mail scanner must not acknowledge. An
    expired link (410) or a closed incident (409) is said so in words, with nothing to press."""
    row, refusal, status = await _ack_target(request, token)
    return _ack_page(request, token, row, refusal, status, done=False)


@router.post("/ack/{token}", response_class=HTMLResponse)
async def ack_link(request: Request, token: str) -> HTMLResponse:
    row, refusal, status = await _ack_target(request, token)
    if row is None or refusal is not None:
        return _ack_page(request, token, row, refusal, status, done=False)
    app = request.app.state
    # Whoever holds the link was paged; a logged-in user is named, else the link itself is the actor.
    session = request_token(request)
    from broker.api.auth import session_user

    user = await session_user(app.store, session, app.clock.now()) if session else None
    by = user.name if user else "ack-link"
    await actions.ack(app.store, row.id, by=by, at=app.clock.now(), via="link")
    row = await queries.incident_row(app.store, row.id)
    return _ack_page(request, token, row, None, 200, done=True)


def _kind(row: Any, request: Request) -> str:
    from broker.api.fleet_words import incident_kind_label

    return incident_kind_label(row.kind, language(request))


# -- the live stream ---------------------------------------------------------------------------------
# SITE/DEVICE,SITE/DEVICE,...: the devices a page shows (the overview's page of 50), so a client of a
# 10,000-device fleet is not sent every device's row.
StreamDevices = Annotated[
    str | None, Query(max_length=140 * 200, pattern=r"^[A-Za-z0-9_/,-]*$", description="Only these devices' rows")
]


@router.get("/events/stream")
async def event_stream(request: Request, user: Me, devices: StreamDevices = None) -> LiveStream:
    """Server-sent events: every ``stream_poll_s`` the store is read, and each device, incident or command
    whose row changed is sent as the HTML row the page shows. The first round sends everything, so a client
    that reconnects (EventSource does by itself) catches up. The session is checked again before every round
    (broker/api/live.py): the stream ends with the session."""
    app = request.app.state
    only = None if devices is None else frozenset(k for k in devices.split(",") if k)
    return LiveStream(_changes(request, user, only), user, app.streams, app.cfg.streams_per_user)


async def _changes(request: Request, user: User, only: frozenset[str] | None = None) -> AsyncIterator[str]:
    app = request.app.state
    lang = language(request)
    seen: dict[str, Any] = {}
    since = app.clock.now()
    idle = 0.0
    while not await request.is_disconnected():
        if not await still_valid(request, user):
            yield END
            return
        sent = 0
        for event, dom_id, html in await _changed_rows(request, user, lang, since, seen, only):
            sent += 1
            yield f"event: {event}\ndata: {json.dumps({'id': dom_id, 'html': html}, ensure_ascii=False)}\n\n"
        idle = 0 if sent else idle + app.cfg.stream_poll_s
        if idle >= 15:  # a comment now and then keeps proxies from closing an idle stream
            idle = 0
            yield ": ping\n\n"
        await asyncio.sleep(app.cfg.stream_poll_s)


def _fresh(seen: dict[str, Any], dom_id: str, fingerprint: Any) -> bool:
    if seen.get(dom_id) == fingerprint:
        return False
    seen[dom_id] = fingerprint
    return True


async def _changed_rows(
    request: Request, user: User, lang: str, since: datetime, seen: dict[str, Any], only: frozenset[str] | None = None
) -> list[tuple[str, str, str]]:
    """(event, DOM id, row HTML) of every row whose fingerprint differs from what this client was sent."""
    app = request.app.state
    env = TEMPLATES.env
    t = words(lang)
    now = app.clock.now()
    sites = user.site_filter()
    out: list[tuple[str, str, str]] = []
    if user.can("devices") and only != frozenset():
        q = queries.devices_query(sites)
        rows = await app.store.fetch(q if only is None else q.where(devices.c.key.in_(sorted(only)[:200])))
        changed = [r for r in rows if _fresh(seen, "dev:" + r.key, (r.presence, r.presence_since))]
        for d in await views.device_rows(app.store, changed, now, t):
            out.append(("device", d["dom_id"], views.render_row(env, "row_device.html", d, t)))
    if user.can("incidents"):
        found = await app.store.fetch(queries.stream_incidents_query(sites, since))
        sent = await dispatches_of(app.store, [r.id for r in found])
        for r in found:
            dsp = sent.get(r.id)
            row = _incident_row(r, app.sites, now, t, lang, user, dsp)
            mark = (dsp.state, dsp.technician) if dsp is not None else None
            if _fresh(seen, row["dom_id"], (r.state, r.acked_at, r.breached_at, r.step, row["breached"], mark)):
                out.append(("incident", row["dom_id"], views.render_row(env, "row_incident.html", row, t)))
    if user.can("commands.read"):
        for r in await app.store.fetch(queries.recent_commands_query(sites, now - timedelta(hours=24))):
            if _fresh(seen, f"cmd-{r.id}", (r.state, r.updated_at)):
                row = views.command_row(r, t)
                out.append(("command", row["dom_id"], views.render_row(env, "row_command.html", row, t)))
    return out


# -- ratings (好差评) -----------------------------------------------------------------------------------
@router.get("/ratings", response_class=HTMLResponse)
async def ratings_page(
    request: Request,
    user: Me,
    site: Annotated[str | None, Query(pattern=SEGMENT)] = None,
    day: DayQuery = None,
    saved: Annotated[str | None, Query(max_length=100)] = None,
) -> HTMLResponse:
    """The day's ratings per window with the satisfaction rate, the negative ratings still owing a reply, a
    decision or a rectification (any day) with their deadlines, and the proxy-rating flags nobody reviewed."""
    from broker.api.routes import rating_sites
    from broker.ratings.policy import policy_of

    if not user.can("ratings"):
        raise HTTPException(403, "not allowed")
    app = request.app.state
    lang = language(request)
    t = words(lang)
    now = app.clock.now()
    choices = await rating_sites(request, user, None)
    site = site or (choices[0] if choices else None)
    day = day or now.astimezone(views.HALL_ZONE).date()
    tally: list[dict[str, Any]] = []
    negatives: list[dict[str, Any]] = []
    open_rows: list[dict[str, Any]] = []
    flags: list[Any] = []
    if site is not None:
        await rating_sites(request, user, site)  # 403 for another site's
        await staff_data_read(request, user, "ratings.read", site, day=day.isoformat(), what="page")
        found = await queries.ratings_on(app.store, app.sites, [site], day)
        policy = policy_of(app.sites[site])
        marks, ledger = await queries.rating_marks(app.store, [r.event_id for r in found])
        tally = views.window_tally(found, policy, marks)
        negatives = [views.followup_row(ledger[r.event_id], now, t, lang) for r in found if r.event_id in ledger]
        pending = await app.store.fetch(queries.followups_query([site], site, "open").limit(200))
        open_rows = [views.followup_row(r, now, t, lang) for r in pending]
        flags = await app.store.fetch(queries.flags_query([site], site).limit(200))
    return render(
        request,
        "ratings.html",
        user=user,
        site=site,
        day=day,
        sites=choices,
        tally=tally,
        negatives=negatives,
        pending=open_rows,
        flags=flags,
        saved=saved,
        can_follow=user.can("followup"),
    )


@router.post("/ratings/followups/{event_id}/{step}")
async def followup_form(request: Request, user: Me, event_id: EventId, step: str) -> Response:
    from broker.api.models import RectifyIn, ReplyIn
    from broker.api.routes import rectify_followup, reply_followup

    f = await form_fields(request)
    objective = {"yes": True, "no": False}.get(f.get("objective", ""))
    try:
        if step == "reply":
            row = await reply_followup(request, user, event_id, ReplyIn(text=f.get("text", ""), objective=objective))
        elif step == "rectify":
            row = await rectify_followup(request, user, event_id, RectifyIn(text=f.get("text", "")))
        else:
            raise HTTPException(404, f"no follow-up step {step}")
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
    day = row.rated_at.astimezone(views.HALL_ZONE).date()
    return RedirectResponse(f"/ratings?site={quote(row.site)}&day={day}&saved={quote(event_id)}", status_code=303)


@router.post("/ratings/flags/{event_id}/review")
async def review_form(request: Request, user: Me, event_id: EventId) -> Response:
    from broker.api.models import ReviewIn
    from broker.api.routes import review_flag

    f = await form_fields(request)
    try:
        body = ReviewIn.model_validate({"verdict": f.get("verdict", ""), "note": f.get("note", "")})
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
    rows = await review_flag(request, user, event_id, body)
    day = rows[0].rated_at.astimezone(views.HALL_ZONE).date()
    return RedirectResponse(f"/ratings?site={quote(rows[0].site)}&day={day}&saved={quote(event_id)}", status_code=303)


# -- users (IT section) -----------------------------------------------------------------------------------
@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request, user: Me) -> HTMLResponse:
    return await _users(request, user)


async def _users(request: Request, user: User, status: int = 200, **ctx: Any) -> HTMLResponse:
    from broker.api.routes import get_users

    if not user.can("users"):
        raise HTTPException(403, "not allowed")
    listed = await get_users(request, user, 1, 500)
    return render(request, "users.html", status, user=user, users=listed["items"], **ctx)


@router.post("/users")
async def create_user_form(request: Request, user: Me) -> Response:
    from broker.api.models import UserIn
    from broker.api.routes import create_user

    f = await form_fields(request)
    sites = [s.strip() for s in f.get("sites", "").split(",") if s.strip()]
    try:
        body = UserIn.model_validate({**{k: f.get(k, "") for k in ("username", "password", "role")}, "sites": sites})
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors())
        return await _users(request, user, 422, error=f"{words(language(request))['invalid']}: {fields}")
    try:
        await create_user(request, user, body)
    except HTTPException as exc:
        if exc.status_code not in (409, 422):
            raise
        return await _users(request, user, exc.status_code, error=str(exc.detail))
    return RedirectResponse("/users", status_code=303)


@router.post("/users/{name}/disable")
async def disable_user_form(request: Request, user: Me, name: UserName) -> Response:
    from broker.api.routes import disable

    try:
        await disable(request, user, name)
    except HTTPException as exc:
        if exc.status_code != 409:
            raise
        return await _users(request, user, 409, error=str(exc.detail))
    return RedirectResponse("/users", status_code=303)


@router.post("/users/{name}/password", response_class=HTMLResponse)
async def reset_password_form(request: Request, user: Me, name: UserName) -> HTMLResponse:
    """Answered with the page itself (not a redirect), so the generated password is never in a URL."""
    from broker.api.routes import reset_password

    done = await reset_password(request, user, name, None)
    return await _users(request, user, new_password=(name, done.password))
