"""The dashboard's home: the fleet with its problems first, for 10,000 devices on one screen.

Hall tiles (devices online of all, open incidents and the soonest SLA breach, consumables that run out before
the hall's next restock window), then the problems sorted by urgency (what breaches or runs out first), then a
page of the filtered devices. The rule: the page's cost does not grow with the fleet. Filters and the page are
applied in SQL (broker/api/fleet_queries.py), only the page's devices get their 24-hour timelines, and every
parameter is bounded at the door (a 422 naming it), like broker/api/params.py's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from broker.api import fleet_queries as fq
from broker.api import queries, views
from broker.api.auth import User, current_user
from broker.api.fleet_words import ROLES, incident_kind_label
from broker.api.i18n import language, words
from broker.api.params import SEGMENT, PageNo
from broker.calendar import CalendarError
from broker.rules.consumables import consumable_label
from broker.rules.incidents import SEVERITY_RANK, on_the_clock
from broker.sites import Sites

Me = Annotated[User, Depends(current_user)]
DEVICES_PER_PAGE = 50
PROBLEMS_PER_PAGE = 15  # one screen: the three most urgent are at the top of it
LABEL = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}=[^\x00-\x1f=]{1,100}$"
SEARCH = r"^[^\x00-\x1f%_\\]{1,64}$"  # no LIKE wildcards: a search is a substring, never a pattern

router = APIRouter(include_in_schema=False)


def _or_empty(pattern: str) -> str:
    return f"^(?:{pattern[1:-1]})?$"


# The filter form sends its empty fields ("all"): an empty value is no filter, anything else must match.
HallQ = Annotated[str | None, Query(pattern=_or_empty(SEGMENT), description="Only this hall")]
KindQ = Annotated[str | None, Query(pattern=_or_empty(SEGMENT), description="Only this device kind (role)")]
StateQ = Annotated[
    Literal["online", "stale", "offline", "shutdown", "unknown", "registered", ""] | None,
    Query(description="Only devices in this state"),
]
LabelQ = Annotated[
    str | None, Query(pattern=_or_empty(LABEL), description="name=value, a label from the desired config")
]
SearchQ = Annotated[str | None, Query(pattern=_or_empty(SEARCH), description="Part of the device id")]


@dataclass(frozen=True, slots=True)
class Problem:
    """One line of the problems list: what, where, and by when it must be dealt with."""

    due: datetime | None  # breach or run-out time; None: no deadline known
    breached: bool
    rank: int  # severity: higher first at equal deadlines
    what: str  # "incident" | "consumable"
    site: str
    device: str
    title: str
    detail: str
    deadline: str
    incident_id: str | None = None

    def order(self) -> tuple[int, float, int]:
        return (0 if self.breached else 1, self.due.timestamp() if self.due else math.inf, -self.rank)


@router.get("/", response_class=HTMLResponse)
async def overview_page(
    request: Request,
    user: Me,
    hall: HallQ = None,
    kind: KindQ = None,
    state: StateQ = None,
    label: LabelQ = None,
    q: SearchQ = None,
    page: PageNo = 1,
    pp: PageNo = 1,
) -> HTMLResponse:
    from broker.api.pages import render

    if not user.can("devices"):
        raise HTTPException(403, "not allowed")
    hall, kind, state, label, q = hall or None, kind or None, state or None, label or None, q or None
    if hall is not None and not user.sees(hall):
        raise HTTPException(404, f"no hall {hall}")  # one answer for not-yours and missing
    app = request.app.state
    lang = language(request)
    t = words(lang)
    now = app.clock.now()
    name, _, value = (label or "").partition("=")
    visible = user.site_filter()
    f = fq.DeviceFilter(
        None if visible is None else tuple(visible), hall, kind, state, (name, value) if label else None, q
    )
    counts = await fq.hall_counts(app.store, f)
    windows = restock_windows(app.sites, set(counts) | ({hall} if hall else set()), now)
    problems = await _problems(app.store, app.sites, f, windows, now, t, lang)
    total = await fq.count_devices(app.store, f)
    rows = await app.store.fetch(fq.devices_page_query(f).limit(DEVICES_PER_PAGE).offset((page - 1) * DEVICES_PER_PAGE))
    built = await views.device_rows(app.store, rows, now, t)
    return render(
        request,
        "overview.html",
        user=user,
        tiles=_tiles(counts, problems, windows, app.sites, now, t),
        problems=_paged(problems, pp, PROBLEMS_PER_PAGE),
        devices=built,
        stream_devices=[d["key"] for d in built],
        device_pages=_pages(page, total, DEVICES_PER_PAGE),
        problem_pages=_pages(pp, len(problems), PROBLEMS_PER_PAGE),
        filters={"hall": hall or "", "kind": kind or "", "state": state or "", "label": label or "", "q": q or ""},
        halls=_hall_names(app.sites, sorted(set(app.sites.names()) | set(counts)) if user.all_sites else user.sites),
        kinds=[k for k in ROLES if k],  # every role an agent may have, the hall's own (door, queue ...) too
        states=["offline", "stale", "unknown", "shutdown", "registered", "online"],
    )


def restock_windows(sites: Sites, names: set[str], now: datetime) -> dict[str, datetime | None]:
    """Each hall's next restock window: its next staffed opening after today's close (None: no calendar)."""
    out: dict[str, datetime | None] = {}
    for site in names:
        cal = sites[site].site_calendar
        try:
            out[site] = cal.next_open(cal.end_of_working_day(now))
        except CalendarError:
            out[site] = None
    return out


async def _problems(
    store: Any, sites: Sites, f: fq.DeviceFilter, windows: dict[str, datetime | None], now: datetime,
    t: dict[str, str], lang: str,
) -> list[Problem]:  # fmt: skip
    found = [_incident_problem(r, sites, now, t, lang) for r in await store.fetch(fq.open_incidents_query(f))]
    latest = max([w for w in windows.values() if w is not None], default=now)
    for r in await store.fetch(fq.consumables_at_risk_query(f, latest)):
        p = _consumable_problem(r, windows.get(r.site), now, t, lang)
        if p is not None:
            found.append(p)
    return sorted(found, key=Problem.order)


def _incident_problem(r: Any, sites: Sites, now: datetime, t: dict[str, str], lang: str) -> Problem:
    sla = queries.sla_of(r, sites, now)
    clock = on_the_clock(r.severity)
    deadline = views.countdown(sla.breach_at, now, sla.breached, t) if clock else t.get(r.severity, r.severity)
    return Problem(
        due=sla.breach_at if clock else None,
        breached=clock and sla.breached,
        rank=SEVERITY_RANK.get(r.severity, 0),
        what="incident",
        site=r.site,
        device=r.device,
        title=incident_kind_label(r.kind, lang),
        detail=" · ".join(
            [t.get(r.severity, r.severity), t.get(r.state, r.state)] + ([t["acked"]] if r.acked_at else [])
        ),
        deadline=deadline,
        incident_id=r.id,
    )


def _consumable_problem(r: Any, window: datetime | None, now: datetime, t: dict[str, str], lang: str) -> Problem | None:
    """A consumable is a problem when it is low or empty, or forecast to run out before the hall's next
    restock window (staff will not be back before it does)."""
    forecast = r.empty_forecast
    late = forecast is not None and window is not None and forecast <= window
    if r.state not in fq.LOW_STATES and not late:
        return None
    zh, en = consumable_label(r.consumable)
    due: datetime | None
    if r.state == "empty":
        due, deadline = now, t["is_empty"]
    elif forecast is not None:
        due, deadline = forecast, t["runs_out"].format(at=views.hall_time(forecast, "%m-%d %H:%M"))
    else:
        due, deadline = window, t["is_low"]
    level = f" {r.level_pct:.0f}%" if r.level_pct is not None else ""
    detail = t.get(f"consumable_state.{r.state}", r.state) + level
    if forecast is not None:
        detail += f" · {t['estimate_forecast']}"
    if window is not None:
        detail += " · " + t["before_window"].format(at=views.hall_time(window, "%m-%d %H:%M"))
    return Problem(
        due=due,
        breached=False,
        rank=SEVERITY_RANK["major"] if r.state == "empty" else SEVERITY_RANK["minor"],
        what="consumable",
        site=r.site,
        device=r.device,
        title=f"{t['consumable']}: {en if lang == 'en' else zh}",
        detail=detail,
        deadline=deadline,
    )


def _hall_names(sites: Sites, ids: Iterable[str]) -> dict[str, str]:
    """The filter's halls by name (青浦区政务服务中心), as the tiles show them; the id where none is set."""
    return {site: sites[site].name or site for site in sorted(ids)}


def _tiles(
    counts: dict[str, dict[str, int]], problems: list[Problem], windows: dict[str, datetime | None],
    sites: Sites, now: datetime, t: dict[str, str],
) -> list[dict[str, Any]]:  # fmt: skip
    """One tile per hall with devices under the filter, the halls in trouble first."""
    tiles = []
    for site, by_state in counts.items():
        mine = [p for p in problems if p.site == site]
        incidents = [p for p in mine if p.what == "incident"]
        clocked = [p for p in incidents if p.due is not None]
        soonest = min(clocked, key=Problem.order, default=None)
        tiles.append(
            {
                "site": site,
                "name": sites[site].name or site,
                "online": by_state.get("online", 0),
                "total": sum(by_state.values()),
                "incidents": len(incidents),
                "breached": sum(p.breached for p in incidents),
                "soonest": soonest.deadline if soonest else t["none"],
                "soonest_breached": bool(soonest and soonest.breached),
                "at_risk": sum(p.what == "consumable" for p in mine),
                "window": views.hall_time(windows.get(site), "%m-%d %H:%M"),
            }
        )
    return sorted(tiles, key=lambda x: (-x["breached"], -x["incidents"], -x["at_risk"], x["site"]))


def _paged(items: list[Problem], page: int, size: int) -> list[Problem]:
    start = (page - 1) * size
    return items[start : start + size] if start < len(items) else []


def _pages(page: int, total: int, size: int) -> dict[str, int]:
    return {"page": page, "pages": max(1, math.ceil(total / size)), "total": total}
