"""Signals -> incidents, inside the consumer's batch transaction: an incident exists exactly when the event
that opened it is stored (peers.md lesson 5: one open alarm per device, created atomically).

A *signal* is a condition of one device switching on or off: offline (Will, clean shutdown of a 24-hour
device, heartbeat overdue), kiosk down or degraded, a fault, a consumable empty or jammed.

The rule this module keeps: **one outage is one incident with one clock.** Every condition the SLA clock runs
for (severity major or critical: offline, kiosk down or degraded, an application fault, a staff report) joins
the device's one open *outage* incident (``open_key`` ``{key}|outage``); the probe failures, the agent giving up
on restarts, the device dropping offline are its conditions (``incident_conditions``) and its timeline, not
incidents of their own. The outage starts when its first condition began (the device's ``since``), and it
clears only when its last condition clears. Lesser conditions (a printer's minor fault, a consumable) keep one
incident per (device, kind): they are a site-staff task, not an outage. A condition that goes away moves its
incident to ``recovering``; the SLA ticker (broker/rules/sla.py) closes it only once the recovery is verified.
A condition back within the flap window reopens the same incident with the same clock, so a flapping kiosk
pages once and breaches at most once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.calendar import Hours, WallClockHours
from broker.rules.consumables import LevelReading, consumable_label, record_levels
from broker.rules.incident_reads import BatchReads
from broker.rules.incident_writes import BatchWrites, Clear
from broker.rules.notices import Severity
from broker.sites import SiteConfig, Sites, SlaPolicy
from broker.store.schema import dispatches, incident_timeline, incidents
from protocol.envelope import Envelope, Frozen
from protocol.events import Fault, KioskConsumable, KioskState
from protocol.ids import uuid7

# Conditions during which a device cannot serve (SLA downtime, a device down for the hall-wide outage). A door
# controller or locker board that does not answer shuts the 24-hour area (SJ 001:451 opens it *through* them),
# as an offline kiosk does; their other alarms join the outage without being downtime (broker/access/signals.py).
OUTAGE_KINDS = ("offline", "kiosk_down", "reported", "door_offline", "locker_offline")
HALL_OUTAGE = "hall_outage"
OUTAGE = "outage"  # the incident key of a device's outage, whatever conditions make it up
REPLAY_HORIZON = timedelta(minutes=5)  # an older replayed state is history: the offline incident covered it
# How long before its report a condition may have begun (the agent gives up on restarts within its window,
# an hour by default): an older ``since`` is a wrong device clock, read by the lead it reports instead.
MAX_LEAD = timedelta(hours=12)

SEVERITY_RANK = {"critical": 3, "major": 2, "minor": 1, "info": 0}
SLA_SEVERITIES = ("critical", "major")  # conditions the SLA clock runs for: they make up the device's outage


def on_the_clock(severity: str) -> bool:
    """Whether a condition of this severity is part of an outage (SLA steps, breach, dispatch)."""
    return severity in SLA_SEVERITIES


KIND_ZH = {
    "offline": "离线",
    "kiosk_down": "停止服务",
    "kiosk_degraded": "部分功能不可用",
    "reported": "现场报障",
    HALL_OUTAGE: "大厅整体故障",
    "fault": "故障",
    "consumable": "耗材",
    # The 24-hour area's doors and lockers (broker/access/signals.py).
    "door_offline": "门禁控制器离线",
    "door_held_open": "门长时间未关",
    "door_forced": "门被强行打开",
    "door_lock_fault": "门锁故障",
    "locker_offline": "寄取柜离线",
    "locker_door_fault": "柜门故障",
    "locker_overdue": "物品超期未取",
}
KIND_EN = {
    "offline": "offline",
    "kiosk_down": "out of service",
    "kiosk_degraded": "partly out of service",
    "reported": "reported by site staff",
    HALL_OUTAGE: "hall-wide outage",
    "fault": "fault",
    "consumable": "consumable",
    "door_offline": "door controller offline",
    "door_held_open": "door held open",
    "door_forced": "door forced open",
    "door_lock_fault": "door lock fault",
    "locker_offline": "locker bank offline",
    "locker_door_fault": "locker compartment fault",
    "locker_overdue": "item left too long",
}


def kind_label(kind: str, lang: str = "zh-CN") -> str:
    """An incident kind in words, for pages, pages' timelines and pager texts alike; a consumable's kind names
    the consumable in words (``consumable.toner:black`` -> 耗材: 硒鼓（黑色）), never its code."""
    table = KIND_EN if lang == "en" else KIND_ZH
    head, _, rest = kind.partition(".")
    if head == "consumable" and rest:
        zh, en = consumable_label(rest)
        return f"{table[head]}: {en if lang == 'en' else zh}"
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
    began: datetime | None = None  # when the condition began, in centre time (the device's since); None: at

    @property
    def key(self) -> str:
        return f"{self.site}/{self.device}"

    @property
    def start(self) -> datetime:
        return self.began if self.began is not None and self.began < self.at else self.at

    @property
    def condition_key(self) -> str:
        return f"{self.key}|{self.kind}"

    @property
    def incident_key(self) -> str:
        """Every condition on the SLA clock shares the device's outage incident; a lesser one has its own."""
        return f"{self.key}|{OUTAGE}" if on_the_clock(self.severity) else self.condition_key


def signals_from_event(env: Envelope, payload: Frozen, received_at: datetime) -> list[Signal]:
    """The signals an event carries (most carry none: heartbeats, punches, ratings)."""
    if env.replayed and received_at - env.ts > REPLAY_HORIZON:
        return []

    def sig(
        kind: str, active: bool, severity: Severity, summary: str, began: datetime | None = None, **detail: Any
    ) -> Signal:
        detail["event_id"] = env.id
        return Signal(env.site, env.device, kind, active, severity, received_at, env.ts, summary, detail, began)

    if isinstance(payload, KioskState):
        lost = ",".join(payload.functions_affected)
        return [
            sig("kiosk_down", payload.state == "down", "critical", f"kiosk.state={payload.state} {lost}".strip()),
            sig("kiosk_degraded", payload.state == "degraded", "major", f"kiosk.state={payload.state} {lost}".strip()),
        ]
    if isinstance(payload, Fault):
        severity: Severity = "major" if payload.component == "app" else "minor"
        kind = f"fault.{payload.component}.{payload.code}"[:64]
        began = began_at(env, payload.since, received_at) if payload.active else None
        return [sig(kind, payload.active, severity, payload.detail or payload.code, began, since=payload.since)]
    if isinstance(payload, KioskConsumable):
        active = payload.state in ("empty", "jam", "full")  # full: a waste receptacle
        kind = f"consumable.{payload.consumable}"[:64]
        return [sig(kind, active, "minor", f"{payload.consumable}={payload.state}", level_pct=payload.level_pct)]
    return []


def began_at(env: Envelope, since: datetime | None, received_at: datetime) -> datetime:
    """When a condition began, in the centre's time: the device's ``since`` where it is plausible (not after
    the centre heard of it, not more than MAX_LEAD before); from a device whose clock is off, the lead it
    reports on its own clock (event time minus since) counted back from the receipt."""
    if since is None or since.tzinfo is None:
        return received_at
    if received_at - MAX_LEAD <= since <= received_at:
        return since
    lead = min(max(env.ts - since, timedelta(0)), MAX_LEAD)
    return received_at - lead


def step_due(sla: SlaPolicy, hours: Hours, detected_at: datetime, step: str) -> datetime | None:
    """When the step after ``step`` is due on the incident's one clock, counted from the outage's start:
    new -> T+0 (act), acted -> warning, warned -> breach; None once breached."""
    after_s = {"new": sla.act_after_s, "acted": sla.warn_after_min * 60, "warned": sla.breach_after_min * 60}
    return hours.add_open_time(detected_at, after_s[step]) if step in after_s else None


def hours_of(site: SiteConfig, hours24: bool) -> Hours:
    """What an incident's clock counts, as decided when it opened: wall-clock time or opening hours."""
    return WallClockHours() if hours24 else site.site_calendar


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
    await conn.execute(incident_timeline.insert().values(timeline_row(incident_id, at, entry, text, actor, **detail)))


def timeline_row(
    incident_id: str, at: datetime, entry: str, text: str, actor: str = "rules", **detail: Any
) -> dict[str, Any]:
    """One incident_timeline row, for ``timeline`` or for many written at once (``timelines``)."""
    return {
        "incident_id": incident_id,
        "at": at,
        "entry": entry,
        "actor": actor[:64],
        "text": text[:1000],
        "detail": json.dumps(detail, ensure_ascii=False, default=str),
    }


async def timelines(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Timeline rows in one executemany, in the order given (an incident's entries keep their order)."""
    if rows:
        await conn.execute(incident_timeline.insert(), rows)


def _note(b: BatchWrites, incident_id: str, s: Signal, entry: str, text: str) -> None:
    """A timeline entry of the signal, sent with the batch's others."""
    b.timeline.append(timeline_row(incident_id, s.at, entry, text, kind=s.kind, **s.detail))


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
        reads = BatchReads(conn, self.sites)
        await reads.load_hours24(t.key.text for t in transitions)
        presence: list[Signal] = []
        for t in transitions:
            key = t.key
            always_on = await reads.hours24(key.site, key.device)
            s = presence_signal(key.site, key.device, t.state, t.reason, t.at, always_on)
            if s is not None:
                presence.append(s)
        await self.apply(conn, presence + signals, reads)
        if levels:
            await record_levels(conn, levels, usage_counter=lambda site: self.sites[site].consumables.usage_counter)

    async def apply(self, conn: AsyncConnection, signals: list[Signal], reads: BatchReads | None = None) -> None:
        """Most signals say "still fine" (a healthy kiosk's snapshot): one query finds which of the batch's
        conditions are active, and only those, and new trouble, cost more: what they read is read once for
        the batch (broker/rules/incident_reads.py), what they write sent in a few statements for all of them
        (broker/rules/incident_writes.py)."""
        if not signals:
            return
        b = BatchWrites(conn, reads or BatchReads(conn, self.sites), self._cleared)
        keys = [s.condition_key for s in signals]  # a property that formats: once per signal
        live = await b.reads.live(keys)
        acting: list[tuple[Signal, bool]] = []  # (signal, whether its condition was active before it)
        for s, key in zip(signals, keys, strict=True):
            if s.active:
                acting.append((s, key in live))
                live.add(key)
            elif key in live:
                acting.append((s, True))
                live.discard(key)
        self.applied += len(signals)
        if not acting:
            return
        await b.reads.load([s for s, _ in acting])
        for s, was_live in acting:
            await b.settle(s.key)
            if s.active:
                await self._activate(b, s, was_live)
            else:
                self._clear(b, s)
            b.reads.acted.add(s.key)
        await b.flush()

    # -- a condition begins ------------------------------------------------------------------------
    async def _activate(self, b: BatchWrites, s: Signal, live: bool) -> None:
        if live:
            row = await b.reads.live_condition(s)
            if row is not None:
                if s.device_ts > row.last_signal_at:  # sent with the batch's others
                    b.seen.append({"b_id": row.id, "b_ts": s.device_ts})
                    b.waiting.add(s.key)
                return
        last = await b.reads.last_signal(s)
        if last is not None and last > s.device_ts:
            return  # older than the signal that cleared it (delivered out of order): history
        incident_id = await self._incident_for(b, s)
        if incident_id is None:
            return
        # Another consumer recording the same condition a moment ago wins; this one then records nothing.
        b.conditions.append(
            {
                "incident_id": incident_id,
                "key": s.key,
                "kind": s.kind,
                "severity": s.severity,
                "began_at": s.start,
                "seen_at": s.at,
                "last_signal_at": s.device_ts,
                "open_key": s.condition_key,
                "summary": s.summary[:500],
            }
        )
        b.waiting.add(s.key)

    async def _incident_for(self, b: BatchWrites, s: Signal) -> str | None:
        """The incident this condition belongs to: the device's open one, one closed within the flap window
        (reopened), or a new one."""
        row = await b.reads.open_incident(s)
        if row is not None:
            await self._join(b, s, row)
            return str(row.id)
        recent = await b.reads.recently_closed(s, SLA_SEVERITIES if on_the_clock(s.severity) else None)
        if recent is not None and await self._reopen(b, s, recent):
            return str(recent.id)
        return await self._open(b, s)

    def _widen(self, row: Any, s: Signal) -> dict[str, Any]:
        """A graver condition names the outage; an earlier start moves its one clock back (the steps' due
        times with it, so a condition reported late does not buy the vendor time)."""
        values: dict[str, Any] = {}
        if SEVERITY_RANK[s.severity] > SEVERITY_RANK[row.severity]:
            values.update(severity=s.severity, kind=s.kind, summary=s.summary[:500])
        detected = min(row.detected_at, s.start)
        if detected < row.detected_at:
            values["detected_at"] = detected
        if on_the_clock(values.get("severity", row.severity)):
            hours = hours_of(self.sites[row.site], row.hours24)
            values["next_step_at"] = step_due(self.sites[row.site].sla, hours, detected, row.step)
        return values

    async def _join(self, b: BatchWrites, s: Signal, row: Any) -> None:
        """Another condition of the device's open outage (or the same one back while recovering)."""
        c = incidents.c
        values = self._widen(row, s) | {"last_signal_at": max(row.last_signal_at, s.device_ts)}
        if row.state == "recovering":
            values.update(state="open", cleared_at=None, flaps=c.flaps + 1)
            text = f"再次出现: {kind_label(s.kind)}: {s.summary}"
        else:
            text = f"同一故障的又一表现: {kind_label(s.kind)}: {s.summary}"
        await b.conn.execute(incidents.update().where(c.id == row.id, c.state == row.state).values(**values))
        if "detected_at" in values:
            text += f" (故障始于 {values['detected_at'].isoformat(timespec='seconds')}, 计时起点前移)"
        _note(b, row.id, s, "signal", text)

    async def _reopen(self, b: BatchWrites, s: Signal, row: Any) -> bool:
        """Flap: the same incident again, its clock running from the first detection; a dispatch cancelled
        when it closed is open again."""
        c = incidents.c
        values = self._widen(row, s)
        try:
            async with b.conn.begin_nested():
                result = await b.conn.execute(
                    incidents.update()
                    .where(c.id == row.id, c.open_key.is_(None))
                    .values(
                        state="open",
                        open_key=s.incident_key,
                        closed_at=None,
                        cleared_at=None,
                        recovery="",
                        recovered_by="",
                        flaps=c.flaps + 1,
                        last_signal_at=s.device_ts,
                        **values,
                    )
                )
        except IntegrityError:  # another consumer opened it a moment ago
            return False
        if result.rowcount != 1:
            return False
        d = dispatches.c
        await b.conn.execute(
            dispatches.update()
            .where(d.incident_id == row.id, d.state == "cancelled", d.arrived_at.is_(None))
            .values(state="open", note="")
        )
        flap_min = self.sites[s.site].sla.flap_window_min
        _note(
            b,
            row.id,
            s,
            "state",
            f"抖动: 关闭后 {flap_min:g} 分钟内再次出现, 重新打开 ({kind_label(s.kind)}): {s.summary}",
        )
        return True

    async def _open(self, b: BatchWrites, s: Signal) -> str:
        """A new incident (sent with the batch's others)."""
        site = self.sites[s.site]
        incident_id = uuid7()
        hours24 = await b.reads.hours24(s.site, s.device)
        values = {
            "id": incident_id,
            "key": s.key,
            "site": s.site,
            "device": s.device,
            "kind": s.kind,
            "severity": s.severity,
            "device_class": site.device_class(s.device, self.roles.get(s.key, "")),
            "hours24": hours24,
            "state": "open",
            "open_key": s.incident_key,
            "summary": s.summary[:500],
            "detected_at": s.start,
            "last_signal_at": s.device_ts,
            "step": "new",
            # T+0 counts SLA time too: a non-24-hour kiosk failing at night is acted on at opening.
            "next_step_at": step_due(site.sla, hours_of(site, hours24), s.start, "new")
            if on_the_clock(s.severity)
            else None,
        }
        b.incidents.append(values)  # if another consumer opens it first, the condition joins theirs
        b.waiting.add(s.key)
        text = f"检测到{kind_label(s.kind)}: {s.summary}"
        if s.start < s.at:
            text += f" (始于 {s.start.isoformat(timespec='seconds')})"
        _note(b, incident_id, s, "signal", text)
        return incident_id

    # -- a condition clears ------------------------------------------------------------------------
    def _clear(self, b: BatchWrites, s: Signal) -> None:
        """Sent with the batch's other clears (broker/rules/incident_writes.py), which hands what they cleared
        to ``_cleared``."""
        b.clears.append(Clear(s, first=s.key not in b.reads.acted))
        b.waiting.add(s.key)

    async def _cleared(self, b: BatchWrites, cleared: list[tuple[Clear, str]]) -> None:
        """A cleared condition: its incident still has others active (a note), or it recovers."""
        for c, incident_id in cleared:
            s = c.signal
            left = [kind_label(kind) for kind in await b.reads.active_kinds(incident_id, s, c.first)]
            if left:
                _note(b, incident_id, s, "signal", f"{kind_label(s.kind)}已恢复, 仍有: {', '.join(left)}")
                continue
            b.recovering.append({"b_id": incident_id, "b_at": s.at})
            _note(b, incident_id, s, "signal", f"已恢复, 待确认: {s.summary}")
