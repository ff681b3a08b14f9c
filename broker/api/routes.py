"""The REST API (OpenAPI at /docs and /openapi.json). Every route takes the user from the session and limits
what it reads or does to that user's role and sites: another site's device, incident or command is a 403."""

from __future__ import annotations

import json
import secrets
import tempfile
from dataclasses import asdict
from datetime import date, timedelta
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse

from broker.api import queries
from broker.api.audit import audit_query, staff_data_read, staff_rows_read
from broker.api.auth import (
    COOKIE,
    PasswordRefused,
    User,
    UserError,
    add_user,
    close_session,
    current_user,
    disable_user,
    list_users,
    need,
    request_token,
    same_origin,
    set_password,
)
from broker.api.dispatch import move_dispatch, open_dispatch
from broker.api.fleet_words import incident_kind_label
from broker.api.i18n import level_label
from broker.api.login import Failure, log_in
from broker.api.models import (
    AuditOut,
    CommandIn,
    CommandOut,
    ConsumableOut,
    DeviceOut,
    DispatchIn,
    DispatchOut,
    FlagOut,
    FollowupOut,
    IncidentDetail,
    IncidentOut,
    LoginIn,
    LoginOut,
    Page,
    PasswordIn,
    PasswordOut,
    PresenceChange,
    PresenceOut,
    RatingOut,
    RectifyIn,
    ReplyIn,
    ReviewIn,
    SlaOut,
    StaffDayOut,
    TimelineEntry,
    UserIn,
    UserOut,
)
from broker.api.params import (
    SEGMENT,
    CommandId,
    DayPath,
    DayQuery,
    DevicePath,
    DeviceQuery,
    EventId,
    IncidentId,
    MonthPath,
    PageNo,
    Site,
    SiteQuery,
    Size,
    UserName,
)
from broker.api.svg import availability, segments
from broker.commands import CommandError, command_row, issue_command
from broker.ratings import followups, proxy
from broker.ratings.model import Rating
from broker.ratings.policy import policy_of
from broker.rules import actions
from broker.rules.actions import ActionError
from broker.sites import Sites
from broker.store.schema import rating_flags, users
from runtime.clock import HALL_ZONE
from runtime.transport import MqttError

__all__ = ["SEGMENT", "router"]
Me = Annotated[User, Depends(current_user)]

router = APIRouter(prefix="/api", tags=["api"])


def _page(items: list[Any], total: int, page: int, size: int) -> dict[str, Any]:
    return {"items": items, "total": total, "page": page, "size": size}


def _scope(user: User, permission: str, site: str | None) -> list[str] | None:
    need(user, permission, site)
    return user.site_filter()


def not_found(what: str) -> HTTPException:
    return HTTPException(404, f"no {what}")


def need_own(user: User, permission: str, site: str, what: str) -> None:
    """For one thing named by id: another site's is "not found", word for word as one that does not exist, so
    ids cannot be probed across sites; within the user's sites a role that may not act gets the usual 403."""
    if not user.sees(site):
        raise not_found(what)
    need(user, permission, site)


# -- login -------------------------------------------------------------------------------------------
@router.post("/login", response_model=LoginOut, tags=["auth"])
async def login(body: LoginIn, request: Request, response: Response) -> LoginOut:
    same_origin(request)
    done = await log_in(request, body.username, body.password)
    if isinstance(done, Failure):
        raise login_refused(done)
    set_session_cookie(response, done.token, done.ttl, request.app.state.cfg.cookie_secure)
    user = done.user
    return LoginOut(
        token=done.token, expires_at=done.expires_at, username=user.name, role=user.role, sites=list(user.sites)
    )


def login_refused(failure: Failure) -> HTTPException:
    if failure.status == 429:
        return HTTPException(
            429,
            "too many failed logins from this address or for this name: wait and try again",
            headers={"Retry-After": str(failure.retry_after_s)},
        )
    return HTTPException(401, "wrong name or password")


@router.post("/logout", status_code=204, tags=["auth"])
async def logout(request: Request, response: Response) -> None:
    same_origin(request)
    token = request_token(request)
    if token:
        await close_session(request.app.state.store, token)
    response.delete_cookie(COOKIE, path="/")


def set_session_cookie(response: Response, token: str, ttl: timedelta, secure: bool) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        secure=secure,
        samesite="strict",
        path="/",
    )


# -- devices -----------------------------------------------------------------------------------------
@router.get("/devices", response_model=Page[DeviceOut])
async def list_devices(request: Request, user: Me, site: SiteQuery = None, page: PageNo = 1, size: Size = 50) -> Any:
    sites = _scope(user, "devices", site)
    rows, total = await queries.page_of(request.app.state.store, queries.devices_query(sites, site), page, size)
    return _page([DeviceOut.model_validate(r) for r in rows], total, page, size)


@router.get("/devices/{site}/{device}/presence", response_model=PresenceOut)
async def device_presence(
    request: Request,
    user: Me,
    site: Site,
    device: DevicePath,
    hours: Annotated[float, Query(gt=0, le=24 * 92, description="History this far back")] = 24,
) -> Any:
    need_own(user, "devices", site, f"device {site}/{device}")
    store = request.app.state.store
    row = await queries.device_row(store, f"{site}/{device}")
    if row is None:
        raise not_found(f"device {site}/{device}")
    now = request.app.state.clock.now()
    since = now - timedelta(hours=hours)
    changes = await queries.presence_changes(store, row.key, since)
    before = await queries.state_before(store, row.key, since)
    return PresenceOut(
        device=DeviceOut.model_validate(row),
        since=since,
        availability=availability(segments(before, changes, since, now)),
        history=[PresenceChange.model_validate(c) for c in changes],
    )


# -- incidents ---------------------------------------------------------------------------------------
def incident_out(row: Any, sites: Sites, now: Any, lang: str = "zh-CN") -> dict[str, Any]:
    sla = queries.sla_of(row, sites, now)
    return {
        **{k: getattr(row, k) for k in IncidentOut.model_fields if hasattr(row, k)},
        "kind_label": incident_kind_label(row.kind, lang),
        "sla": SlaOut.model_validate(asdict(sla)),
    }


@router.get("/incidents", response_model=Page[IncidentOut])
async def list_incidents(
    request: Request,
    user: Me,
    state: Annotated[
        Literal["open", "recovering", "closed", "all"], Query(description="open: not closed (recovering too)")
    ] = "open",
    site: SiteQuery = None,
    page: PageNo = 1,
    size: Size = 50,
) -> Any:
    sites = _scope(user, "incidents", site)
    app = request.app.state
    q = queries.incidents_query(sites, None if state == "all" else state, site)
    rows, total = await queries.page_of(app.store, q, page, size)
    now = app.clock.now()
    return _page([incident_out(r, app.sites, now) for r in rows], total, page, size)


async def _incident(request: Request, user: Me, incident_id: str, permission: str) -> Any:
    row = await queries.incident_row(request.app.state.store, incident_id)
    if row is None:
        raise not_found(f"incident {incident_id}")
    need_own(user, permission, row.site, f"incident {incident_id}")
    return row


@router.get("/incidents/{incident_id}", response_model=IncidentDetail)
async def get_incident(request: Request, user: Me, incident_id: IncidentId) -> Any:
    row = await _incident(request, user, incident_id, "incidents")
    app = request.app.state
    timeline = await queries.incident_timeline_rows(app.store, row.id)
    out = incident_out(row, app.sites, app.clock.now())
    return {**out, "timeline": [TimelineEntry.model_validate(t) for t in timeline]}


@router.post("/incidents/{incident_id}/ack", response_model=IncidentOut)
async def ack_incident(request: Request, user: Me, incident_id: IncidentId) -> Any:
    await _incident(request, user, incident_id, "ack")
    app = request.app.state
    await actions.ack(app.store, incident_id, by=user.name, at=app.clock.now(), via="api")
    row = await queries.incident_row(app.store, incident_id)
    return incident_out(row, app.sites, app.clock.now())


# -- commands ----------------------------------------------------------------------------------------
def command_out(row: Any) -> CommandOut:
    return CommandOut(
        id=row.id,
        key=row.key,
        name=row.name,
        args=json.loads(row.args),
        issuer=row.issuer,
        reason=row.reason,
        state=row.state,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        updated_at=row.updated_at,
        result=json.loads(row.result) if row.result else None,
        refusal=row.refusal,
    )


async def send_command(request: Request, user: User, body: CommandIn) -> CommandOut:
    """Shared by the API and the dashboard's buttons: checks, then broker.commands.issue_command."""
    site = body.device.partition("/")[0]
    need(user, "command", site)
    app = request.app.state
    if await queries.device_row(app.store, body.device) is None:
        raise HTTPException(404, f"no device {body.device}")
    mqtt = app.mqtt
    if mqtt is None or not mqtt.is_connected:
        raise HTTPException(503, "the API has no MQTT connection right now: try again shortly")
    try:
        cmd = await issue_command(
            app.store,
            mqtt,
            body.device,
            body.name,
            body.args,
            issuer=user.name,
            reason=body.reason,
            ttl_s=body.ttl_s or app.cfg.command_ttl_s,
            clock=app.clock,
        )
    except CommandError as exc:
        raise HTTPException(422, str(exc)) from None
    except (MqttError, TimeoutError) as exc:
        # The command is stored (queued): the consumer re-sends queued commands, so it is not lost.
        raise HTTPException(502, f"stored, but the broker did not confirm it ({exc}); it will be re-sent") from None
    return command_out(await command_row(app.store, cmd.id))


@router.post("/commands", response_model=CommandOut, status_code=201)
async def post_command(request: Request, user: Me, body: CommandIn) -> CommandOut:
    return await send_command(request, user, body)


@router.get("/commands/{command_id}", response_model=CommandOut)
async def get_command(request: Request, user: Me, command_id: CommandId) -> CommandOut:
    row = await command_row(request.app.state.store, command_id)
    if row is None:
        raise not_found(f"command {command_id}")
    need_own(user, "commands.read", row.key.partition("/")[0], f"command {command_id}")
    return command_out(row)


# -- consumables -------------------------------------------------------------------------------------
@router.get("/consumables", response_model=Page[ConsumableOut])
async def list_consumables(
    request: Request, user: Me, site: SiteQuery = None, page: PageNo = 1, size: Size = 100
) -> Any:
    sites = _scope(user, "consumables", site)
    q = queries.consumables_query(sites, site)
    rows, total = await queries.page_of(request.app.state.store, q, page, size)
    return _page([ConsumableOut.model_validate(r) for r in rows], total, page, size)


# -- attendance --------------------------------------------------------------------------------------
async def attendance_day(request: Request, site: str, day: date, lang: str = "zh-CN") -> list[StaffDayOut]:
    from broker.attendance.labels import labels
    from broker.attendance.reports import reason_text
    from broker.attendance.service import load_period

    app = request.app.state
    period = await load_period(app.store, app.sites, site, day, day, now=app.clock.now())
    people = {m.staff_id: m for m in period.members}
    w = labels(lang)
    out = []
    for d in period.days:
        m = people.get(d.staff_id)
        out.append(
            StaffDayOut(
                staff_id=d.staff_id,
                name=m.name if m else "",
                unit=m.unit if m else "",
                day=d.day,
                verdict=d.verdict.value,
                verdict_label=w.verdict(d.verdict),
                reason=reason_text(d),  # as the workbook's detail sheet words it
                late_min=d.late_min,
                early_min=d.early_min,
                untrusted=d.untrusted,
                locked=d.locked,
                punches=[p.at for p in d.punches],
            )
        )
    return out


@router.get("/attendance/{site}/{day}", response_model=list[StaffDayOut])
async def get_attendance(request: Request, user: Me, site: Site, day: DayPath) -> list[StaffDayOut]:
    need(user, "attendance", site)
    await staff_data_read(request, user, "attendance.read", site, day=day.isoformat())
    return await attendance_day(request, site, day)


@router.get(
    "/reports/attendance/{site}/{month}.xlsx",
    response_class=Response,
    responses={200: {"content": {"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {}}}},
)
async def attendance_report(
    request: Request,
    user: Me,
    site: Site,
    month: MonthPath,
    lang: Annotated[Literal["zh-CN", "en"], Query()] = "zh-CN",
) -> Response:
    need(user, "attendance", site)
    await staff_data_read(request, user, "attendance.export", site, month=month)
    body = await monthly_xlsx(request, site, month, lang)
    return Response(
        body,
        media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        headers={"Content-Disposition": f'attachment; filename="attendance-{site}-{month}.xlsx"'},
    )


async def monthly_xlsx(request: Request, site: str, month: str, lang: str) -> bytes:
    """The workbook ``hallfleet attendance month`` writes, assembled by the same function (month_report.py): the
    bulletin with where judging starts, the details, the suspected proxy clockings and the month's chain heads."""
    from broker.attendance.month_report import month_workbook
    from broker.attendance.reports import write_xlsx

    app = request.app.state
    book = await month_workbook(app.store, app.sites, site, month, now=app.clock.now())
    with tempfile.TemporaryDirectory() as tmp:
        path = FsPath(tmp) / "report.xlsx"
        write_xlsx(book.tables, path, lang, book.heads)
        return path.read_bytes()


# -- audit -------------------------------------------------------------------------------------------
@router.get("/audit", response_model=Page[AuditOut])
async def list_audit(
    request: Request,
    user: Me,
    device: DeviceQuery = None,
    page: PageNo = 1,
    size: Size = 50,
) -> Any:
    """The rows this user's role may read (staff, ratings and user rows only for roles that see that data), of
    their sites."""
    site = device.partition("/")[0] if device else None
    _scope(user, "audit", site)
    rows, total = await queries.page_of(request.app.state.store, audit_query(user, device), page, size)
    # Leave reasons, roster changes, rating reviews: reading them here is a read of staff data like any other.
    await staff_rows_read(request, user, site or "*", "audit log", [r.action for r in rows], events=False)
    items = [AuditOut.model_validate({**r._mapping, "detail": _json(r.detail)}) for r in rows]
    return _page(items, total, page, size)


def _json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"text": text}
    return value if isinstance(value, dict) else {"value": value}


def unauthorized(detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


# -- on-site dispatch --------------------------------------------------------------------------------
@router.post("/incidents/{incident_id}/dispatch", response_model=DispatchOut)
async def dispatch_incident(
    request: Request, user: Me, incident_id: IncidentId, body: Annotated[DispatchIn | None, Body()] = None
) -> Any:
    """Send a technician on site (``open``, due by the end of the working day), or record that they arrived
    (``on_site``) or finished (``done``). Technicians and the IT section of the incident's site; audited."""
    await _incident(request, user, incident_id, "dispatch")
    body = body or DispatchIn()
    app = request.app.state
    now = app.clock.now()
    try:
        if body.state == "open":
            row = await open_dispatch(
                app.store, app.sites, incident_id, by=user.name, at=now, note=body.note, router=app.router
            )
        else:
            row = await move_dispatch(app.store, incident_id, body.state, by=user.name, at=now, note=body.note)
    except ActionError as exc:
        raise HTTPException(409, str(exc)) from None
    return DispatchOut.model_validate(row)


# -- ratings (好差评) ---------------------------------------------------------------------------------
Window = Annotated[str | None, Query(min_length=1, max_length=32, description="Only this window")]
Level = Annotated[int | None, Query(ge=1, le=5, description="Only this level (5 非常满意 ... 1 非常不满意)")]


def hall_today(request: Request) -> date:
    return request.app.state.clock.now().astimezone(HALL_ZONE).date()


async def rating_sites(request: Request, user: User, site: str | None) -> list[str]:
    sites = _scope(user, "ratings", site)
    if site is not None:
        return [site]
    return sites if sites is not None else await queries.known_sites(request.app.state.store, request.app.state.sites)


def rating_out(r: Rating, sites: Sites, flags: dict[str, list[Any]], ledger: dict[str, Any], lang: str) -> RatingOut:
    followup = ledger.get(r.event_id)
    return RatingOut(
        event_id=r.event_id,
        site=r.site,
        device=r.device,
        window=r.window,
        staff_id=r.staff_id,
        service_id=r.service_id,
        level=r.level,
        level_label=level_label(r.level, lang),
        negative=r.level in policy_of(sites[r.site]).negative_levels,
        at=r.at,
        received_at=r.received_at,
        pad_state=r.pad_state,
        flags=sorted(f.pattern for f in flags.get(r.event_id, [])),
        followup=None if followup is None else queries.followup_state(followup),
    )


@router.get("/ratings", response_model=Page[RatingOut], tags=["ratings"])
async def list_ratings(
    request: Request,
    user: Me,
    site: SiteQuery = None,
    day: DayQuery = None,
    window: Window = None,
    level: Level = None,
    page: PageNo = 1,
    size: Size = 100,
) -> Any:
    site_ids = await rating_sites(request, user, site)
    app = request.app.state
    for s in site_ids:
        await staff_data_read(request, user, "ratings.read", s, day=str(day or hall_today(request)))
    found = await queries.ratings_on(app.store, app.sites, site_ids, day or hall_today(request))
    found = [r for r in found if (window is None or r.window == window) and (level is None or r.level == level)]
    chunk = found[(page - 1) * size : page * size]
    flags, ledger = await queries.rating_marks(app.store, [r.event_id for r in chunk])
    return _page([rating_out(r, app.sites, flags, ledger, "zh-CN") for r in chunk], len(found), page, size)


def followup_out(row: Any, now: Any) -> FollowupOut:
    fields = {k: getattr(row, k) for k in FollowupOut.model_fields if hasattr(row, k)}
    return FollowupOut(**fields, state=queries.followup_state(row), overdue=queries.followup_overdue(row, now))


@router.get("/ratings/followups", response_model=Page[FollowupOut], tags=["ratings"])
async def list_followups(
    request: Request,
    user: Me,
    site: SiteQuery = None,
    state: Annotated[
        Literal["open", "done", "all"], Query(description="open: still owes a reply, a decision or a rectification")
    ] = "open",
    page: PageNo = 1,
    size: Size = 50,
) -> Any:
    sites = _scope(user, "ratings", site)
    app = request.app.state
    await staff_data_read(request, user, "ratings.read", site or "*", what="followups", state=state)
    rows, total = await queries.page_of(app.store, queries.followups_query(sites, site, state), page, size)
    now = app.clock.now()
    return _page([followup_out(r, now) for r in rows], total, page, size)


async def _followup(request: Request, user: User, event_id: str) -> Any:
    row = await queries.followup_row(request.app.state.store, event_id)
    if row is None:
        raise not_found(f"negative-rating follow-up {event_id}")
    need_own(user, "followup", row.site, f"negative-rating follow-up {event_id}")
    return row


@router.post("/ratings/followups/{event_id}/reply", response_model=FollowupOut, tags=["ratings"])
async def reply_followup(request: Request, user: Me, event_id: EventId, body: ReplyIn) -> FollowupOut:
    """Record the reply to the citizen (once), and optionally whether the rating is objective. Window management
    and the IT section of the rating's site; audited."""
    row = await _followup(request, user, event_id)
    app = request.app.state
    now = app.clock.now()
    try:
        done = await followups.reply(
            app.store, app.sites, row.event_id, body.text, by=user.name, at=now, objective=body.objective
        )
    except followups.FollowupError as exc:
        raise HTTPException(409, str(exc)) from None
    return followup_out(done, now)


@router.post("/ratings/followups/{event_id}/rectify", response_model=FollowupOut, tags=["ratings"])
async def rectify_followup(request: Request, user: Me, event_id: EventId, body: RectifyIn) -> FollowupOut:
    """Record the rectification of an objective negative rating (once); audited."""
    row = await _followup(request, user, event_id)
    app = request.app.state
    now = app.clock.now()
    try:
        done = await followups.rectify(app.store, app.sites, row.event_id, body.text, by=user.name, at=now)
    except followups.FollowupError as exc:
        raise HTTPException(409, str(exc)) from None
    return followup_out(done, now)


@router.get("/ratings/flags", response_model=Page[FlagOut], tags=["ratings"])
async def list_flags(request: Request, user: Me, site: SiteQuery = None, page: PageNo = 1, size: Size = 50) -> Any:
    """Suspected proxy ratings nobody has reviewed yet, newest first (one row per pattern)."""
    sites = _scope(user, "ratings", site)
    await staff_data_read(request, user, "ratings.read", site or "*", what="flags")
    rows, total = await queries.page_of(request.app.state.store, queries.flags_query(sites, site), page, size)
    return _page([FlagOut.model_validate(r) for r in rows], total, page, size)


@router.post("/ratings/flags/{event_id}/review", response_model=list[FlagOut], tags=["ratings"])
async def review_flag(request: Request, user: Me, event_id: EventId, body: ReviewIn) -> list[FlagOut]:
    """A person's verdict on a flagged rating, all its patterns at once (a later review replaces it; both stay
    in the audit log). A confirmed proxy rating is left out of the month's statistics."""
    store = request.app.state.store
    rows = await store.fetch(sa.select(rating_flags).where(rating_flags.c.event_id == event_id).limit(1))
    if not rows:
        raise not_found(f"flagged rating {event_id}")
    need_own(user, "followup", rows[0].site, f"flagged rating {event_id}")
    done = await proxy.review(store, event_id, body.verdict, by=user.name, at=request.app.state.clock.now(),
                              note=body.note)  # fmt: skip
    return [FlagOut.model_validate(r) for r in done]


# -- users -------------------------------------------------------------------------------------------
def user_out(row: Any) -> UserOut:
    return UserOut(
        username=row.username,
        role=row.role,
        sites=[s for s in row.sites.split(",") if s],
        created_at=row.created_at,
        updated_at=row.updated_at,
        disabled_at=row.disabled_at,
    )


def _may_manage(user: User, sites: list[str]) -> None:
    """The IT section manages users; one scoped to some sites grants and manages only those."""
    need(user, "users")
    if not user.all_sites and any(s == "*" or s not in user.sites for s in sites):
        raise HTTPException(403, f"{user.name} manages users of {', '.join(user.sites)} only")


async def _user_row(request: Request, user: User, name: str) -> Any:
    need(user, "users")
    rows = await request.app.state.store.fetch(sa.select(users).where(users.c.username == name))
    if not rows or not _manages(user, rows[0]):
        raise not_found(f"user {name}")  # another site's user is as unknown as a name nobody has
    return rows[0]


@router.get("/users", response_model=Page[UserOut], tags=["users"])
async def get_users(request: Request, user: Me, page: PageNo = 1, size: Size = 100) -> Any:
    need(user, "users")
    rows = [r for r in await list_users(request.app.state.store) if _manages(user, r)]
    return _page([user_out(r) for r in rows[(page - 1) * size : page * size]], len(rows), page, size)


def _manages(user: User, row: Any) -> bool:
    return user.all_sites or all(s in user.sites for s in row.sites.split(",") if s)


@router.post("/users", response_model=UserOut, status_code=201, tags=["users"])
async def create_user(request: Request, user: Me, body: UserIn) -> UserOut:
    """Create a user with a role scoped to sites (IT section only; audited)."""
    _may_manage(user, body.sites)
    app = request.app.state
    try:
        await add_user(app.store, body.username, body.password, body.role, tuple(body.sites), app.clock.now(),
                       by=user.name)  # fmt: skip
    except PasswordRefused as exc:
        raise HTTPException(422, str(exc)) from None
    except UserError as exc:
        raise HTTPException(409, str(exc)) from None
    return user_out(await _user_row(request, user, body.username))


@router.post("/users/{name}/disable", response_model=UserOut, tags=["users"])
async def disable(request: Request, user: Me, name: UserName) -> UserOut:
    """The user can no longer log in and their sessions end at once (audited)."""
    await _user_row(request, user, name)
    if name == user.name:
        raise HTTPException(409, "you cannot disable yourself: ask another administrator")
    app = request.app.state
    await disable_user(app.store, name, app.clock.now(), by=user.name)
    return user_out(await _user_row(request, user, name))


@router.post("/users/{name}/password", response_model=PasswordOut, tags=["users"])
async def reset_password(
    request: Request, user: Me, name: UserName, body: Annotated[PasswordIn | None, Body()] = None
) -> PasswordOut:
    """Set a new password (or have one generated, answered this once); the user's sessions end (audited)."""
    await _user_row(request, user, name)
    chosen = body.password if body is not None else None
    password = chosen or secrets.token_urlsafe(12)
    app = request.app.state
    try:
        await set_password(app.store, name, password, app.clock.now(), by=user.name)
    except UserError as exc:
        raise HTTPException(422, str(exc)) from None
    return PasswordOut(username=name, password=None if chosen else password)
