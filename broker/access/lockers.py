"""Items left in a locker too long (policy ``duties.locker_max_hold_h``): a ``minor`` condition per compartment
(a site-staff task, not an outage: broker/rules/incidents.py), opened and cleared through the same incident
rules as every other condition, from each bank's newest ``locker.bank`` state (the hall's limit, not the
device's, decides). Site staff hear of each such incident once (step ``locker_overdue``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.access.status import held_too_long
from broker.alerts.messages import local
from broker.api.fleet_words import incident_kind_label
from broker.rules.incidents import IncidentRules, Signal
from broker.rules.notices import Notice
from broker.sites import Sites
from broker.store.schema import devices, events, incidents


def overdue_signals(
    site: str, device: str, bank: dict[str, Any], ts: datetime, now: datetime, limit: timedelta
) -> list[Signal]:
    """One signal per compartment of the bank: active when its item has stayed longer than ``limit``."""
    out = []
    for box in bank.get("compartments", []):
        since = datetime.fromisoformat(box["occupied_since"]) if box.get("occupied_since") else None
        active = held_too_long(bool(box["occupied"]), since, now, limit)
        kind = f"locker_overdue.{bank['bank']}.{box['no']}"
        summary = f"柜 {bank['bank']} {box['no']} 号格: 物品自 {since:%m-%d %H:%M} 未取" if active and since else ""
        out.append(Signal(site, device, kind[:64], active, "minor", now, ts, summary, {"since": since}, since))
    return out


async def check_lockers(conn: AsyncConnection, sites: Sites, rules: IncidentRules, now: datetime) -> list[Notice]:
    """Apply the overdue conditions of every locker bank's newest state; the notices of those newly open."""
    d, e = devices.c, events.c
    signals: list[Signal] = []
    for row in await conn.execute(sa.select(d.site, d.device).where(d.role == "locker")):
        newest = (
            await conn.execute(
                sa.select(e.ts, e.data)
                .where(e.site == row.site, e.device == row.device, e.type == "locker.bank")
                .order_by(e.seq.desc())
                .limit(1)
            )
        ).first()
        if newest is None:
            continue
        limit = timedelta(hours=sites[row.site].duties.locker_max_hold_h)
        signals += overdue_signals(row.site, row.device, json.loads(newest.data), newest.ts, now, limit)
    await rules.apply(conn, signals)
    c = incidents.c
    opened = await conn.execute(
        sa.select(incidents).where(c.state == "open", c.kind.like("locker_overdue.%")).limit(500)
    )
    return [overdue_notice(r) for r in opened]


def overdue_notice(r: Any) -> Notice:
    """Site staff's notice of one overdue item (an ``incidents`` row): which compartment, since when."""
    since = local(r.detected_at)  # the incident began when the item was deposited (the signal's ``began``)
    return Notice(
        ref=f"incident:{r.id}",
        step="locker_overdue",
        site=r.site,
        device=r.device,
        device_class=r.device_class,
        kind="locker_overdue",
        severity="minor",
        summary_zh=f"{r.summary}, 请联系寄件人或按规定处理",
        summary_en=f"{incident_kind_label(r.kind, 'en')} (in since {since}): contact the depositor or follow the"
        " hall's rules",
        facts={"detected_at": r.detected_at.isoformat()},
    )
