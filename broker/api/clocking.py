"""Suspected proxy clocking on the API and the dashboard (broker/attendance/proxy_clocking.py): the flags nobody has
reviewed yet, and a reviewer's verdict. Reading them is an audited read of staff data under the ``attendance``
permission; a verdict needs ``followup`` (window management), as for proxy ratings. A flag of another site is "not
found", word for word as one that does not exist."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from broker.api import queries
from broker.api.audit import staff_data_read
from broker.api.auth import User, current_user, need
from broker.api.limits import form_fields
from broker.api.models import Out, Page
from broker.api.params import EventId, PageNo, SiteQuery, Size
from broker.api.views import HALL_ZONE
from broker.attendance.proxy_clocking import ClockingFlagError, flags_query, review
from broker.store.schema import clocking_flags
from protocol.bounds import Prose

router = APIRouter(tags=["attendance"])
Me = Annotated[User, Depends(current_user)]
PAGE_LIMIT = 200  # flags shown on the attendance page; the API pages through all of them


class ClockingFlagOut(Out):
    event_id: str = Field(description="The attendance.punch event")
    pattern: str = Field(description="chain, too_fast, after_refusal, on_leave")
    site: str
    device: str
    staff_id: str
    method: str = Field(description="face, fingerprint, qr, card")
    punched_at: datetime
    detail: str = Field(description="What was seen, in Chinese")
    flagged_at: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None
    verdict: str | None = Field(description="proxy (属实代打卡) | honest (正常打卡); null until reviewed")
    note: str


class ClockingReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["proxy", "honest"] = Field(
        description="proxy: 属实代打卡 (where the site says so the punch stops counting); honest: 正常打卡"
    )
    note: Prose = Field(default="", max_length=500, description="What the reviewer saw (video, witness ...)")


@router.get("/api/attendance/clocking-flags", response_model=Page[ClockingFlagOut])
async def list_clocking_flags(
    request: Request, user: Me, site: SiteQuery = None, page: PageNo = 1, size: Size = 50
) -> dict[str, Any]:
    """Suspected proxy clocking nobody has reviewed yet, newest first (one row per pattern)."""
    need(user, "attendance", site)
    await staff_data_read(request, user, "attendance.read", site or "*", what="clocking_flags")
    scope = user.site_filter() if site is None else [site]
    rows, total = await queries.page_of(request.app.state.store, flags_query(scope), page, size)
    return {"items": [ClockingFlagOut.model_validate(r) for r in rows], "total": total, "page": page, "size": size}


@router.post("/api/attendance/clocking-flags/{event_id}/review", response_model=list[ClockingFlagOut])
async def review_clocking_flag(
    request: Request, user: Me, event_id: EventId, body: ClockingReviewIn
) -> list[ClockingFlagOut]:
    """A person's verdict on a flagged punch, all its patterns at once (a later review replaces it; both stay in the
    audit log). Confirmed proxy clocking stops counting where the site's policy says so (the default): the day is
    then judged without the punch."""
    store = request.app.state.store
    rows = await store.fetch(sa.select(clocking_flags).where(clocking_flags.c.event_id == event_id).limit(1))
    if not rows or not user.sees(rows[0].site):
        raise HTTPException(404, f"no flagged punch {event_id}")
    need(user, "followup", rows[0].site)
    try:
        done = await review(store, event_id, body.verdict, by=user.name, at=request.app.state.clock.now(),
                            note=body.note)  # fmt: skip
    except ClockingFlagError as exc:
        raise HTTPException(409, str(exc)) from None
    return [ClockingFlagOut.model_validate(r) for r in done]


@router.post("/attendance/clocking-flags/{event_id}/review", include_in_schema=False)
async def review_clocking_form(request: Request, user: Me, event_id: EventId) -> RedirectResponse:
    """The attendance page's buttons: the same review, then back to the page of that day."""
    f = await form_fields(request)
    try:
        body = ClockingReviewIn.model_validate({"verdict": f.get("verdict", ""), "note": f.get("note", "")})
    except ValidationError as exc:
        raise HTTPException(422, exc.errors(include_url=False, include_context=False)) from None
    rows = await review_clocking_flag(request, user, event_id, body)
    day = rows[0].punched_at.astimezone(HALL_ZONE).date()
    return RedirectResponse(f"/attendance?site={quote(rows[0].site)}&day={day}", status_code=303)


async def open_flags(request: Request, user: User, site: str) -> list[Any]:
    """For the attendance page: the site's flags awaiting review, newest first (the caller has checked the site and
    recorded the read)."""
    if not user.can("attendance"):
        return []
    return list(await request.app.state.store.fetch(flags_query([site]).limit(PAGE_LIMIT)))
