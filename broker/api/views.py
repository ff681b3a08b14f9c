"""Rows as the dashboard shows them: one builder per table, used by the pages and by the live stream, so a row
pushed over the stream is the same HTML the page rendered."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from jinja2 import Environment

from broker.api import queries
from broker.api.svg import availability, level_svg, segments, timeline_svg
from broker.rules.consumables import consumable_label
from broker.rules.incidents import kind_label
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import presence_history
from protocol.clock import HALL_ZONE

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
                "role": r.role or "-",
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
    r: Any, sites: Sites, now: datetime, t: dict[str, str], lang: str, can_act: bool, can_command: bool
) -> dict[str, Any]:
    sla = queries.sla_of(r, sites, now)
    return {
        "dom_id": f"inc-{r.id}",
        "id": r.id,
        "key": r.key,
        "site": r.site,
        "device": r.device,
        "kind": kind_label(r.kind, lang),
        "severity": r.severity,
        "severity_label": t.get(r.severity, r.severity),
        "state": r.state,
        "state_label": t.get(r.state, r.state),
        "summary": r.summary,
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
        "name": r.name,
        "issuer": r.issuer,
        "issued": hall_time(r.issued_at),
        "state": r.state,
        "state_label": t.get(r.state, r.state),
        "detail": r.refusal or (json.dumps(result, ensure_ascii=False)[:200] if result else ""),
    }


def consumable_row(r: Any, lang: str) -> dict[str, Any]:
    zh, en = consumable_label(r.consumable)
    return {
        "key": r.key,
        "consumable": en if lang == "en" else zh,
        "state": r.state,
        "level": "-" if r.level_pct is None else f"{r.level_pct:.0f}%",
        "svg": level_svg(r.level_pct),
        "updated": hall_time(r.updated_at),
        "forecast": hall_time(r.empty_forecast, "%m-%d %H:%M"),
    }


def render_row(env: Environment, template: str, row: dict[str, Any], t: dict[str, str]) -> str:
    return env.get_template(template).render(row=row, t=t)
