"""The dashboard's queue page (排队叫号, issue 23 item 1): one hall's queue as the centre sees it now
(broker/queueing/board.py), kept live by its own server-sent stream, and the monthly queue report as XLSX.

``/queue?site=``: per service the tickets waiting and the longest wait against its class's limit (QP 000:368
「10,30,60」) with the day's figures, per window the ticket it serves, what its rating pad shows, whether its A/B
posts are both away and whether the centre tells window management of it (the combined alert), the hall's day.
``/queue/stream?site=``: the same board as one HTML fragment, sent when it changed.
``/api/reports/queue/{site}/{month}.xlsx``: the workbook ``hallfleet queue report`` writes (broker/queueing/report.py).

Who sees what: queue figures are device data (ticket numbers and service codes, no person), for everyone of the
site with the ``devices`` permission, scoped to the user's sites like the other pages (another site is 403).
Who is signed in on a window's pad and whether its A/B posts are at work are staff data: shown only to roles that
read attendance, as an audited read (``attendance.read``, as the attendance page); the combined alert is shown
with them, since it tells the same. A download is audited (``queue.export``) before it is answered, and like every
answer of the app it is ``Cache-Control: no-store`` (broker/api/app.py).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse

from broker.api.audit import record, source_of, staff_data_read
from broker.api.auth import User, current_user, need
from broker.api.i18n import language, words
from broker.api.live import END, LiveStream, still_valid
from broker.api.pages import TEMPLATES, render
from broker.api.params import SEGMENT, MonthPath, Site, SiteQuery
from broker.queueing.board import Board, board_of
from broker.queueing.policy import queue_policy_of
from broker.queueing.report import build_report, write_report

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api", tags=["queue"])
Me = Annotated[User, Depends(current_user)]
StreamSite = Annotated[str, Query(pattern=SEGMENT, description="The hall whose queue the stream sends")]
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BOARD = "queue_board.html"
MIN_REFRESH_S = 2.0  # the board reads the day's legs and staff-days: not more often than this per stream


@dataclass(frozen=True, slots=True)
class Scope:
    """The hall a request reads, the halls the user may pick from, and whether staff data is shown."""

    site: str | None
    sites: list[str]
    staff: bool


def _scope(request: Request, user: User, site: str | None) -> Scope:
    if not user.can("devices"):
        raise HTTPException(403, "not allowed")
    names = set(request.app.state.sites.names())
    choices = sorted(names if user.all_sites else names & set(user.sites))
    if site is not None and not user.sees(site):
        raise HTTPException(403, f"site {site} is not one of {user.name}'s sites")
    return Scope(site or (choices[0] if choices else None), choices, user.can("attendance"))


@router.get("/queue", response_class=HTMLResponse)
async def queue_page(request: Request, user: Me, site: SiteQuery = None) -> HTMLResponse:
    scope = _scope(request, user, site)
    app = request.app.state
    now = app.clock.now()
    ctx: dict[str, Any] = {"board": None}
    if scope.site is not None:
        board = await board_of(app.store, app.sites, scope.site, now)
        await _staff_read(request, user, scope, board)
        ctx = board_context(request, board, scope.staff)
    return render(request, "queue.html", user=user, site=scope.site, sites=scope.sites, stream_url=_stream(scope),
                  **ctx)  # fmt: skip


def _stream(scope: Scope) -> str | None:
    return None if scope.site is None else f"/queue/stream?site={scope.site}"


async def _staff_read(request: Request, user: User, scope: Scope, board: Board) -> bool:
    """The pad's staff and the A/B posts are about to be shown: recorded first, as the attendance page does.
    True when it recorded (False: no staff data is shown to this user, or there is none on this board)."""
    if not (scope.staff and scope.site is not None and board.windows):
        return False
    await staff_data_read(request, user, "attendance.read", scope.site, day=board.day.isoformat(), what="queue")
    return True


def board_context(request: Request, board: Board, staff: bool) -> dict[str, Any]:
    """What queue_board.html renders: the board, the words, the rule's limits and the report links."""
    cfg = request.app.state.sites[board.site]
    policy = queue_policy_of(cfg)
    t = words(language(request))
    limits = {k: f"{v:g}" for k, v in policy.limits_min.items()}
    month = f"{board.at.astimezone(cfg.site_calendar.zone):%Y-%m}"
    first = board.at.astimezone(cfg.site_calendar.zone).date().replace(day=1)
    last_month = f"{first.year - (first.month == 1)}-{(first.month - 2) % 12 + 1:02d}"
    return {
        "board": board,
        "staff": staff,
        "rule": t["q_rule"].format(**limits),
        "after_min": f"{policy.unattended_after_min:g}",
        "months": [(t["q_this_month"].format(month=month), month), (t["q_last_month"].format(month=last_month),
                                                                      last_month)],
    }  # fmt: skip


# -- live ----------------------------------------------------------------------------------------------------
@router.get("/queue/stream")
async def queue_stream(request: Request, user: Me, site: StreamSite) -> LiveStream:
    """Server-sent ``queue`` events: the board of ``site`` as the page shows it, whenever it differs from what
    this client was sent (the first round sends it, so a reconnecting client catches up). The session is
    checked before every round (broker/api/live.py), so the stream ends with it."""
    scope = _scope(request, user, site)
    app = request.app.state
    return LiveStream(_changes(request, user, scope), user, app.streams, app.cfg.streams_per_user)


async def _changes(request: Request, user: User, scope: Scope) -> AsyncIterator[str]:
    app = request.app.state
    every = max(app.cfg.stream_poll_s, MIN_REFRESH_S)
    sent = ""
    idle = 0.0
    audited = False  # one audit row per stream opened (as per page view), not one per minute the waits grow
    while scope.site is not None and not await request.is_disconnected():
        if not await still_valid(request, user):
            yield END
            return
        board = await board_of(app.store, app.sites, scope.site, app.clock.now())
        html = board_html(request, board, scope.staff)
        if html != sent:
            audited = audited or await _staff_read(request, user, scope, board)
            sent, idle = html, 0.0
            yield f"event: queue\ndata: {json.dumps({'id': 'q-board', 'html': html}, ensure_ascii=False)}\n\n"
        else:
            idle += every
        if idle >= 15:  # a comment now and then keeps proxies from closing an idle stream
            idle = 0.0
            yield ": ping\n\n"
        await asyncio.sleep(every)


def board_html(request: Request, board: Board, staff: bool) -> str:
    lang = language(request)
    ctx = board_context(request, board, staff)
    return TEMPLATES.env.get_template(BOARD).render(t=words(lang), lang=lang, **ctx)


# -- the monthly report --------------------------------------------------------------------------------------
@api_router.get(
    "/reports/queue/{site}/{month}.xlsx",
    response_class=Response,
    responses={200: {"content": {XLSX: {}}}},
)
async def queue_report(request: Request, user: Me, site: Site, month: MonthPath) -> Response:
    """The month's waits per service and window against QP 000:368 「10,30,60」 (the CLI's workbook)."""
    need(user, "devices", site)
    app = request.app.state
    detail = {"month": month, "source": source_of(request), "path": request.url.path}
    await record(app.store, app.clock.now(), user.name, "queue.export", site, detail)
    report = await build_report(app.store, app.sites, site, month)
    with tempfile.TemporaryDirectory() as tmp:
        path = FsPath(tmp) / "queue.xlsx"
        write_report(report, path, app.sites)
        body = path.read_bytes()
    return Response(body, media_type=XLSX,
                    headers={"Content-Disposition": f'attachment; filename="queue-{site}-{month}.xlsx"'})  # fmt: skip
