"""Signals -> incidents, inside the consumer's batch transaction: an incident exists exactly when the event
that opened it is stored (peers.md lesson 5: one open alarm per device and kind, created atomically).

A *signal* is a condition of one device switching on or off: offline (Will, clean shutdown of a 24-hour
device, heartbeat overdue), kiosk down or degraded, a fault, a consumable empty or jammed. At most one
incident per (device, kind) is open: the unique ``open_key`` holds ``{key}|{kind}`` until the incident
closes. A condition that goes away moves its incident to ``recovering``; the SLA ticker
(broker/rules/sla.py) closes it only once the recovery is verified. A condition back within the flap
window reopens the same incident, so a flapping kiosk keeps one clock and pages once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.rules.consumables import LevelReading, record_levels
from broker.rules.notices import Severity
from broker.sites import Sites
from broker.store.schema import incident_timeline, incidents
from protocol.envelope import Envelope, Frozen
from protocol.events import Fault, KioskConsumable, KioskState
from protocol.ids import uuid7

log = logging.getLogger(__name__)

OUTAGE_KINDS = ("offline", "kiosk_down", "reported")
HALL_OUTAGE = "hall_outage"
REPLAY_HORIZON = timedelta(minutes=5)  # an older replayed state is history: the offline incident covered it

SEVERITY_RANK = {"critical": 3, "major": 2, "minor": 1, "info": 0}

KIND_ZH = {
    "offline": "离线",
    "kiosk_down": "停止服务",
    "kiosk_degraded": "部分功能不可用",
    "reported": "现场报障",
    HALL_OUTAGE: "大厅整体故障",
    "fault": "故障",
    "consumable": "耗材",
}
KIND_EN = {
    "offline": "offline",
    "kiosk_down": "out of service",
    "kiosk_degraded": "partly out of service",
    "reported": "reported by site staff",
    HALL_OUTAGE: "hall-wide outage",
    "fault": "fault",
    "consumable": "consumable",
}


def kind_label(kind: str, lang: str = "zh-CN") -> str:
    table = KIND_EN if lang == "en" else KIND_ZH
    head, _, rest = kind.partition(".")
    return table.get(kind) or (f"{table.get(head, head)} {rest}".strip())


@dataclass(frozen=True, slots=True)
class Signal:
    site: str
    device: str
    kind: str
    active: bool
    severity: Severity
    at: datetime  # when the centre learnt it: the SLA starts here (device clocks may be wrong)
    device_ts: datetime  # orders the signals of one (device, kind)
    summary: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.site}/{self.device}"


def signals_from_event(env: Envelope, payload: Frozen, received_at: datetime) -> list[Signal]:
    """The signals an event carries (most carry none: heartbeats, punches, ratings)."""
    if env.replayed and received_at - env.ts > REPLAY_HORIZON:
        return []

    def sig(kind: str, active: bool, severity: Severity, summary: str, **detail: Any) -> Signal:
        detail["event_id"] = env.id
        return Signal(env.site, env.device, kind, active, severity, received_at, env.ts, summary, detail)

    if isinstance(payload, KioskState):
        lost = ",".join(payload.functions_affected)
        return [
            sig("kiosk_down", payload.state == "down", "critical", f"kiosk.state={payload.state} {lost}".strip()),
            sig("kiosk_degraded", payload.state == "degraded", "major", f"kiosk.state={payload.state} {lost}".strip()),
        ]
    if isinstance(payload, Fault):
        severity: Severity = "major" if payload.component == "app" else "minor"
        kind = f"fault.{payload.component}.{payload.code}"[:64]
        return [sig(kind, payload.active, severity, payload.detail or payload.code, since=payload.since)]
    if isinstance(payload, KioskConsumable):
        active = payload.state in ("empty", "jam", "full")  # full: a waste receptacle
        kind = f"consumable.{payload.consumable}"[:64]
        return [sig(kind, active, "minor", f"{payload.consumable}={payload.state}", level_pct=payload.level_pct)]
    return []


def presence_signal(site: str, device: str, state: str, reason: str, at: datetime, always_on: bool) -> Signal | None:
    """Presence transitions as signals. A clean shutdown is an outage only for a 24-hour device: others
    are switched off every evening (WZ daily power cycle, QP's power-off rule)."""
    if state == "online":
        return Signal(site, device, "offline", False, "critical", at, at, reason)
    if state == "shutdown" and not always_on:
        return None
    return Signal(site, device, "offline", True, "critical", at, at, f"{state}: {reason}")


# -- applying signals ----------------------------------------------------------------------------------
async def timeline(
    conn: AsyncConnection, incident_id: str, at: datetime, entry: str, text: str, actor: str = "rules", **detail: Any
) -> None:
    await conn.execute(
        incident_timeline.insert().values(
            incident_id=incident_id,
            at=at,
            entry=entry,
            actor=actor[:64],
            text=text[:1000],
            detail=json.dumps(detail, ensure_ascii=False, default=str),
        )
    )


class IncidentRules:
    """Applies signals on the batch's connection. ``roles`` knows each device's role (from its birth)."""

    def __init__(self, sites: Sites, roles: dict[str, str]) -> None:
        self.sites = sites
        self.roles = roles
        self.applied = 0

    async def apply_batch(
        self, conn: AsyncConnection, signals: list[Signal], transitions: list[Any], levels: list[LevelReading]
    ) -> None:
        """Everything a committed batch means: presence transitions and event signals become incidents,
        consumable readings become levels (and refills)."""
        presence: list[Signal] = []
        for t in transitions:
            site, _, device = t.key.partition("/")
            s = presence_signal(site, device, t.state, t.reason, t.at, self.sites[site].is_always_on(device))
            if s is not None:
                presence.append(s)
        await self.apply(conn, presence + signals)
        if levels:
            await record_levels(conn, levels, usage_counter=lambda site: self.sites[site].consumables.usage_counter)

    async def apply(self, conn: AsyncConnection, signals: list[Signal]) -> None:
        """Most signals say "still fine" (a healthy kiosk's snapshot): one query finds which of the
        batch's (device, kind) pairs have an open incident, and only those, and new trouble, cost more."""
        if not signals:
            return
        c = incidents.c
        keys = sorted({f"{s.key}|{s.kind}" for s in signals})
        live: set[str] = set()
        for i in range(0, len(keys), 500):  # well under any backend's bound-parameter limit
            rows = await conn.execute(sa.select(c.open_key).where(c.open_key.in_(keys[i : i + 500]), c.state == "open"))
            live.update(r.open_key for r in rows)
        for s in signals:
            key = f"{s.key}|{s.kind}"
            if s.active:
                await self._activate(conn, s)
                live.add(key)
            elif key in live:
                await self._clear(conn, s)
                live.discard(key)
            self.applied += 1

    async def _activate(self, conn: AsyncConnection, s: Signal) -> None:
        c = incidents.c
        open_key = f"{s.key}|{s.kind}"
        row = (await conn.execute(sa.select(c.id, c.state, c.last_signal_at).where(c.open_key == open_key))).first()
        if row is not None:
            await self._still_active(conn, s, row)
            return
        site = self.sites[s.site]
        flap_since = s.at - timedelta(minutes=site.sla.flap_window_min)
        recent = (
            await conn.execute(
                sa.select(c.id)
                .where(c.key == s.key, c.kind == s.kind, c.closed_at >= flap_since)
                .order_by(c.closed_at.desc())
                .limit(1)
            )
        ).first()
        if recent is not None and await self._reopen(conn, s, recent.id, open_key):
            return
        await self._open(conn, s, open_key)

    async def _still_active(self, conn: AsyncConnection, s: Signal, row: Any) -> None:
        c = incidents.c
        if row.state == "recovering" and s.device_ts >= row.last_signal_at:
            await conn.execute(
                incidents.update()
                .where(c.id == row.id, c.state == "recovering")
                .values(state="open", cleared_at=None, flaps=c.flaps + 1, last_signal_at=s.device_ts)
            )
            await timeline(conn, row.id, s.at, "signal", f"再次出现: {s.summary}", **s.detail)
        elif s.device_ts > row.last_signal_at:
            await conn.execute(incidents.update().where(c.id == row.id).values(last_signal_at=s.device_ts))

    async def _reopen(self, conn: AsyncConnection, s: Signal, incident_id: str, open_key: str) -> bool:
        """Flap: the same incident again, its clock running from the first detection."""
        c = incidents.c
        try:
            async with conn.begin_nested():
                result = await conn.execute(
                    incidents.update()
                    .where(c.id == incident_id, c.open_key.is_(None))
                    .values(
                        state="open",
                        open_key=open_key,
                        closed_at=None,
                        cleared_at=None,
                        recovery="",
                        recovered_by="",
                        flaps=c.flaps + 1,
                        last_signal_at=s.device_ts,
                    )
                )
        except IntegrityError:  # another consumer opened it a moment ago
            return True
        if result.rowcount != 1:
            return False
        await timeline(
            conn,
            incident_id,
            s.at,
            "state",
            f"抖动: 关闭后 {self.sites[s.site].sla.flap_window_min:g} 分钟内再次出现, 重新打开: {s.summary}",
            **s.detail,
        )
        return True

    async def _open(self, conn: AsyncConnection, s: Signal, open_key: str) -> None:
        site = self.sites[s.site]
        incident_id = uuid7()
        with_steps = SEVERITY_RANK[s.severity] >= SEVERITY_RANK["major"]
        values = {
            "id": incident_id,
            "key": s.key,
            "site": s.site,
            "device": s.device,
            "kind": s.kind,
            "severity": s.severity,
            "device_class": site.device_class(s.device, self.roles.get(s.key, "")),
            "hours24": site.is_always_on(s.device),
            "state": "open",
            "open_key": open_key,
            "summary": s.summary[:500],
            "detected_at": s.at,
            "last_signal_at": s.device_ts,
            "step": "new",
            # T+0 counts SLA time too: a non-24-hour kiosk failing at night is acted on at opening.
            "next_step_at": site.hours_for(s.device).add_open_time(s.at, site.sla.act_after_s) if with_steps else None,
        }
        try:
            async with conn.begin_nested():
                await conn.execute(incidents.insert().values(**values))
        except IntegrityError:  # opened by another consumer in the meantime: one incident, not two
            return
        log.info("incident %s opened: %s %s (%s)", incident_id, s.key, s.kind, s.summary)
        await timeline(conn, incident_id, s.at, "signal", f"检测到{kind_label(s.kind)}: {s.summary}", **s.detail)

    async def _clear(self, conn: AsyncConnection, s: Signal) -> None:
        c = incidents.c
        rows = await conn.execute(
            incidents.update()
            .where(c.open_key == f"{s.key}|{s.kind}", c.state == "open", c.last_signal_at <= s.device_ts)
            .values(state="recovering", cleared_at=s.at, last_signal_at=s.device_ts)
            .returning(c.id)
        )
        for r in rows:
            await timeline(conn, r.id, s.at, "signal", f"已恢复, 待确认: {s.summary}", **s.detail)
