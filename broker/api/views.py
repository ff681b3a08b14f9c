"""Rows as the dashboard shows them: one builder per table, used by the pages and by the live stream, so a row
pushed over the stream is the same HTML the page rendered."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from jinja2 import Environment

from broker.api import queries
from broker.api.fleet_words import incident_kind_label, incident_summary
from broker.api.svg import availability, segments, timeline_svg
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import presence_history
from runtime.clock import HALL_ZONE

if TYPE_CHECKING:
    from broker.ratings.policy import RatingPolicy

WINDOW = timedelta(hours=24)


def hall_time(t: datetime | None, fmt: str = "%m-%d %H:%M:%S") -> str:
    return "-" if t is None else t.astimezone(HALL_ZONE).strftime(fmt)


async def _history(store: Store, keys: list[str], since: datetime) -> tuple[dict[str, str], dict[str, list[Any]]]:
    """For each key: its presence just before ``since`` and its changes since then (two queries in all)."""
    if not keys:
        return {}, {}
    h = presence_history.c
    last_ids = sa.select(sa.func.max(h.id)).where(h.key.in_(keys), h.at < since).group_by(h.key)
    before = {r.key: r.state for r in await store.fetch(sa.select(h.key, h.state).where(h.id.in_(last_ids)))}
    changes: dict[str, list[Any]] = {k: [] for k in keys}
    rows = await store.fetch(
        sa.select(presence_history).where(h.key.in_(keys), h.at >= since).order_by(h.at, h.id).limit(20_000)
    )
    for r in rows:
        changes[r.key].append(r)
    return before, changes


async def device_rows(store: Store, rows: list[Any], now: datetime, t: dict[str, str]) -> list[dict[str, Any]]:
    since = now - WINDOW
    before, changes = await _history(store, [r.key for r in rows], since)
    out = []
    for r in rows:
        # A device younger than the window is drawn over its life: hours before it existed say nothing.
        start = min(max(since, r.first_seen), now)
        segs = segments(before.get(r.key, "unknown"), changes.get(r.key, []), start, now)
        avail = availability(segs)
        out.append(
            {
                "dom_id": "dev-" + r.key.replace("/", "--"),
                "key": r.key,
                "site": r.site,
                "device": r.device,
                "role": t.get(f"role.{r.role}", r.role or "-"),
                "href": f"/devices/{r.site}/{r.device}",
                "presence": r.presence,
                "presence_label": t.get(r.presence, r.presence),
                "since": hall_time(r.presence_since),
                "last_seen": hall_time(r.last_seen),
                "availability": "-" if avail is None else f"{avail * 100:.1f}%",
                "svg": timeline_svg(segs, start, now, t),
            }
        )
    return out


def incident_row(
    r: Any,
    sites: Sites,
    now: datetime,
    t: dict[str, str],
    lang: str,
    can_act: bool,
    can_command: bool,
    dispatch: Any = None,
    can_dispatch: bool = False,
) -> dict[str, Any]:
    sla = queries.sla_of(r, sites, now)
    return {
        **dispatch_cells(dispatch, t),
        "can_dispatch": can_dispatch,
        "dom_id": f"inc-{r.id}",
        "id": r.id,
        "key": r.key,
        "site": r.site,
        "device": r.device,
        "kind": incident_kind_label(r.kind, lang),
        "severity": r.severity,
        "severity_label": t.get(r.severity, r.severity),
        "state": r.state,
        "state_label": t.get(r.state, r.state),
        "summary": incident_summary(r.summary, lang, t),
        "detected": hall_time(r.detected_at),
        "breach_at": sla.breach_at.isoformat(),
        "countdown": countdown(sla.breach_at, now, sla.breached, t),
        "breached": sla.breached,
        "acked": r.acked_at is not None,
        "acked_by": r.acked_by,
        "is_device": r.device != "*",
        "can_act": can_act,
        "can_command": can_command,
    }


def dispatch_cells(d: Any, t: dict[str, str]) -> dict[str, Any]:
    """The incident row's on-site dispatch: its state, who, and by when (None: not dispatched)."""
    if d is None:
        return {"dispatch": None}
    return {
        "dispatch": d.state,
        "dispatch_label": t.get(f"dispatch_{d.state}", d.state),
        "dispatch_due": hall_time(d.due_at, "%m-%d %H:%M"),
        "dispatch_by": d.technician,
    }


def countdown(deadline: datetime, now: datetime, breached: bool, t: dict[str, str]) -> str:
    """What the page's script shows each second, rendered once here so a row never arrives blank."""
    left = round((deadline - now).total_seconds())
    a = abs(left)
    text = f"{a // 3600}:{a // 60 % 60:02d}:{a % 60:02d}"
    return f"{t['breached']} +{text}" if left < 0 or breached else text


def command_row(r: Any, t: dict[str, str]) -> dict[str, Any]:
    result = json.loads(r.result) if r.result else None
    return {
        "dom_id": f"cmd-{r.id}",
        "id": r.id,
        "key": r.key,
        "name": t.get(f"command.{r.name}", r.name),
        "issuer": r.issuer,
        "issued": hall_time(r.issued_at),
        "state": r.state,
        "state_label": t.get(r.state, r.state),
        "detail": r.refusal or (json.dumps(result, ensure_ascii=False)[:200] if result else ""),
    }


def render_row(env: Environment, template: str, row: dict[str, Any], t: dict[str, str]) -> str:
    return env.get_template(template).render(row=row, t=t)


# -- attendance: a month per unit ----------------------------------------------------------------------------
def attendance_kind(day: Any) -> str | None:
    """The chart's kind of a staff-day (None: nothing expected, or leave and the like)."""
    from broker.attendance.model import PROVISIONAL, Verdict
    from broker.attendance.verdicts import is_attendance, is_excused

    v = day.verdict
    if v in PROVISIONAL:  # the day is not over: neither normal nor an exception yet
        return "provisional"
    if v == Verdict.DEVICE_FAULT:
        return "device_fault"
    if is_excused(day):
        return "normal" if is_attendance(day) else None
    if v == Verdict.ABSENT:
        return "absent"
    if v in (Verdict.MISSING_IN, Verdict.MISSING_OUT):
        return "missing"
    if v in (Verdict.LATE, Verdict.LATE_AND_EARLY):
        return "late"
    if v == Verdict.EARLY:
        return "early"
    return "normal" if is_attendance(day) else None


def attendance_bars(days: list[Any], members: list[Any], unknown: str) -> list[tuple[str, dict[str, int]]]:
    """Staff-days of the month per dispatching unit and kind, units in name order."""
    unit_of = {m.staff_id: m.unit or unknown for m in members}
    bars: dict[str, dict[str, int]] = {}
    for d in days:
        kind = attendance_kind(d)
        if kind is None:
            continue
        counts = bars.setdefault(unit_of.get(d.staff_id, unknown), {})
        counts[kind] = counts.get(kind, 0) + 1
    return sorted(bars.items())


# -- ratings ---------------------------------------------------------------------------------------------------
def window_tally(ratings: list[Any], policy: RatingPolicy, flags: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Per (window, staff) of one site: the monthly report's own tally (broker/ratings/report.py), so a confirmed
    proxy rating is left out here as there; the satisfaction rate is the share of counted ratings not negative,
    with the report's rounding."""
    from collections import Counter

    from broker.ratings.report import Tally, count_rating, pct, proxy_verdicts

    verdicts = proxy_verdicts(f for rows in flags.values() for f in rows)
    tallies: dict[tuple[str, str], Tally] = {}
    for r in ratings:
        count_rating(tallies.setdefault((r.window, r.staff_id), Tally(Counter())), r, verdicts.get(r.event_id))
    out = []
    for (window, staff_id), t in sorted(tallies.items()):
        negative = t.negative(policy)
        satisfied = pct(t.total - negative, t.total)
        out.append(
            {
                "window": window,
                "staff_id": staff_id,
                "count": t.total,
                "negative": negative,
                "proxy": t.proxy,
                "satisfaction": "-" if satisfied is None else f"{satisfied:.1f}%",
            }
        )
    return out


def followup_row(row: Any, now: datetime, t: dict[str, str], lang: str) -> dict[str, Any]:
    from broker.api.i18n import level_label

    state = queries.followup_state(row)
    return {
        "dom_id": f"fu-{row.event_id}",
        "id": row.event_id,
        "key": f"{row.site}/{row.device}",
        "window": row.window,
        "staff_id": row.staff_id,
        "service_id": row.service_id or "-",
        "level": level_label(row.level, lang),
        "rated": hall_time(row.rated_at, "%m-%d %H:%M"),
        "reply_due": hall_time(row.reply_due, "%m-%d %H:%M"),
        "rectify_due": hall_time(row.rectify_due, "%m-%d %H:%M"),
        "state": state,
        "state_label": t[f"fu_{state}"],
        "overdue": queries.followup_overdue(row, now),
        "reply_text": row.reply_text or "",
        "replied_by": row.replied_by or "",
        "rectify_text": row.rectify_text or "",
        "objective": row.objective,
    }
