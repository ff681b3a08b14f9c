"""When a site's attendance terminals could not take punches: from presence history and incident conditions.

SJ E.1.3 (001:1040): staff who cannot punch because the device failed are not to be punished; the
verdicts need the windows in which each terminal was offline, stale (connected but silent), shut down,
or had an active condition that stops punching (an outage or a fault; read per condition, not per
incident). Presence is read as transitions: a non-online state lasts until the next ``online`` one, and
a terminal already down before the span counts from its start.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.attendance.model import FaultWindow
from broker.rules.incidents import kind_label
from broker.store.schema import devices, incident_conditions, presence_history

ROLE = "attendance"
STATE_ZH = {"offline": "离线", "stale": "心跳中断", "shutdown": "关机", "unknown": "状态未知"}

_Span = tuple[datetime, datetime, str]


async def fault_windows(conn: AsyncConnection, site: str, start: datetime, end: datetime) -> list[FaultWindow]:
    """Per attendance terminal of the site, the merged periods within [start, end] it could not take punches."""
    if end <= start:
        return []
    d = devices.c
    rows = (await conn.execute(sa.select(d.key, d.device).where(d.site == site, d.role == ROLE))).all()
    out: list[FaultWindow] = []
    for row in sorted(rows, key=lambda r: r.device):
        spans = await _presence_spans(conn, row.key, start, end) + await _incident_spans(conn, row.key, start, end)
        out += [FaultWindow(row.device, s, e, why) for s, e, why in _merge(spans)]
    return out


async def _presence_spans(conn: AsyncConnection, key: str, start: datetime, end: datetime) -> list[_Span]:
    h = presence_history.c
    before = (
        await conn.execute(
            sa.select(h.state, h.reason).where(h.key == key, h.at < start).order_by(h.at.desc(), h.id.desc()).limit(1)
        )
    ).first()
    changes = (
        await conn.execute(
            sa.select(h.state, h.at, h.reason).where(h.key == key, h.at >= start, h.at < end).order_by(h.at, h.id)
        )
    ).all()
    spans: list[_Span] = []
    down: tuple[datetime, str] | None = None
    if before is not None and before.state != "online":
        down = (start, _why(before))
    for c in changes:
        if c.state == "online":
            if down is not None and c.at > down[0]:
                spans.append((down[0], c.at, down[1]))
            down = None
        elif down is None:
            down = (c.at, _why(c))
    if down is not None:
        spans.append((down[0], end, down[1]))
    return spans


def _why(row: Any) -> str:
    label = STATE_ZH.get(row.state, row.state)
    return f"考勤终端{label}" + (f" ({row.reason})" if row.reason else "")


async def _incident_spans(conn: AsyncConnection, key: str, start: datetime, end: datetime) -> list[_Span]:
    """Read per *condition*, not per incident: since one outage is one incident (broker/rules/incidents.py), an
    incident's span runs from its first condition to its last, and may hold conditions that leave punching
    alone (an overdue gallery revocation is major, so it joins the outage). Each condition that stops punching
    counts from when it began (the device's ``since``) until it cleared."""
    k = incident_conditions.c
    q = (
        sa.select(k.kind, k.summary, k.began_at, k.cleared_at)
        .where(k.key == key, k.began_at < end, sa.or_(k.cleared_at.is_(None), k.cleared_at > start))
        .order_by(k.began_at, k.id)
    )
    spans: list[_Span] = []
    for r in (await conn.execute(q)).all():
        if not _stops_punching(r.kind):
            continue
        s, e = max(r.began_at, start), min(r.cleared_at or end, end)
        if e > s:
            spans.append((s, e, f"故障单: {kind_label(r.kind)}" + (f" ({r.summary})" if r.summary else "")))
    return spans


def _stops_punching(kind: str) -> bool:
    """An outage or a fault does; an overdue gallery revocation or a consumable does not."""
    return kind in ("offline", "reported", "kiosk_down") or kind.startswith("fault.")


def _merge(spans: list[_Span]) -> list[_Span]:
    """Overlapping or touching periods become one, keeping each distinct reason once."""
    out: list[_Span] = []
    for s, e, why in sorted(spans, key=lambda x: (x[0], x[1])):
        if out and s <= out[-1][1]:
            ps, pe, pwhy = out[-1]
            out[-1] = (ps, max(pe, e), pwhy if why in pwhy.split("; ") else f"{pwhy}; {why}")
        else:
            out.append((s, e, why))
    return out
