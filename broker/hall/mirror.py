"""Hall autonomy: a hall's own consumer leads its site, and the centre mirrors what it decided.

The rule (docs/hall-autonomy.md): **a site whose hall consumer is present is hall-led, and then only the hall
acts on its incidents.** The hall consumer announces itself on ``hall/v1/{site}/_hall/lead`` (retained
``online``, its Will ``offline``), which the bridge carries to the centre. While a site is hall-led the centre
derives no incident from its devices' signals, takes no SLA step, sends no command and pages nobody for it;
it records the hall's incidents as the hall sends them: state snapshots on ``hall/v1/{site}/_hall/incident``,
each the whole row with its conditions, timeline and dispatch, upserted by the hall's incident id. One
incident (the hall's id), one clock (the hall's detection time, from the device's own report), one breach (the
hall's), so the centre's SLA report for the site is the hall's, however long the WAN was down and however
often a snapshot comes again: a snapshot is a state, so applying it twice is applying it once. When the lead
goes ``offline`` the centre acts as it always did.

``_hall`` cannot be a device id (a segment starts with a letter or digit), so these topics never reach the
device grammar.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from broker.store.schema import dispatches, incident_conditions, incident_timeline, incidents
from protocol import topics

log = logging.getLogger(__name__)

HALL = "_hall"
ALL_LEADS = f"{topics.PREFIX}/+/{HALL}/lead"
ALL_INCIDENTS = f"{topics.PREFIX}/+/{HALL}/incident"
TIMELINE_MAX = 200  # entries sent per incident: a flapping kiosk's timeline stays a bounded message
CONDITIONS_MAX = 500  # conditions sent per incident (the latest): each flap of a kiosk is one
RECENT = timedelta(hours=24)  # closed incidents still sent (and re-sent on a resync) this long
WILL_DELAY_S = 30  # the hall consumer's Will waits this long for it to come back (MQTT 5 will delay)
ONLINE, OFFLINE = b'{"state":"online"}', b'{"state":"offline"}'


def lead_topic(site: str) -> str:
    return f"{topics.PREFIX}/{topics.check_segment(site, 'site')}/{HALL}/lead"


def incident_topic(site: str) -> str:
    return f"{topics.PREFIX}/{topics.check_segment(site, 'site')}/{HALL}/incident"


def hall_topic(topic: str) -> tuple[str, str] | None:
    """``(site, 'lead' | 'incident')`` for a hall consumer's topic, None for anything else."""
    parts = topic.split("/")
    ours = len(parts) == 5 and f"{parts[0]}/{parts[1]}" == topics.PREFIX and parts[3] == HALL
    if ours and parts[4] in ("lead", "incident"):
        return parts[2], parts[4]
    return None


# -- what travels ------------------------------------------------------------------------------------
class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimelineEntry(_Frozen):
    at: datetime
    entry: str = Field(max_length=16)
    actor: str = Field(max_length=64)
    text: str = Field(max_length=1000)
    detail: str = Field(max_length=8000)


class IncidentRow(_Frozen):
    """An ``incidents`` row as the hall holds it (broker/store/schema.py names every column)."""

    id: str = Field(max_length=36)
    key: str = Field(max_length=140)
    site: str = Field(max_length=64)
    device: str = Field(max_length=64)
    kind: str = Field(max_length=64)
    severity: Literal["critical", "major", "minor", "info"]
    device_class: str = Field(max_length=32)
    hours24: bool
    state: Literal["open", "recovering", "closed"]
    open_key: str | None = Field(max_length=220)
    summary: str = Field(max_length=500)
    detected_at: datetime
    staff_reported_at: datetime | None
    last_signal_at: datetime
    cleared_at: datetime | None
    closed_at: datetime | None
    recovery: str = Field(max_length=16)
    recovered_by: str = Field(max_length=140)
    step: str = Field(max_length=16)
    next_step_at: datetime | None
    breached_at: datetime | None
    breach_reason: str = Field(max_length=500)
    notified_at: datetime | None
    acked_at: datetime | None
    acked_by: str = Field(max_length=64)
    escalation_level: int
    parent_id: str | None = Field(max_length=36)
    flaps: int


class ConditionRow(_Frozen):
    """An ``incident_conditions`` row: what the SLA report's downtime and the clock's remediation read."""

    key: str = Field(max_length=140)
    kind: str = Field(max_length=64)
    severity: Literal["critical", "major", "minor", "info"]
    began_at: datetime
    seen_at: datetime
    cleared_at: datetime | None
    last_signal_at: datetime
    open_key: str | None = Field(max_length=220)
    summary: str = Field(max_length=500)


class DispatchRow(_Frozen):
    """The incident's on-site dispatch (one at most): the SLA report counts them and their lateness."""

    id: str = Field(max_length=36)
    key: str = Field(max_length=140)
    site: str = Field(max_length=64)
    opened_at: datetime
    due_at: datetime
    state: str = Field(max_length=16)
    technician: str = Field(max_length=64)
    arrived_at: datetime | None
    done_at: datetime | None
    overdue_notified: bool
    note: str = Field(max_length=1000)


ENTRY_FIELDS = tuple(TimelineEntry.model_fields)
INCIDENT_FIELDS = tuple(IncidentRow.model_fields)  # a column added later travels once it is named here
CONDITION_FIELDS = tuple(ConditionRow.model_fields)
DISPATCH_FIELDS = tuple(DispatchRow.model_fields)


class Snapshot(_Frozen):
    v: Literal[1] = 1
    incident: IncidentRow
    timeline: tuple[TimelineEntry, ...] = Field(max_length=TIMELINE_MAX)
    conditions: tuple[ConditionRow, ...] = Field(default=(), max_length=CONDITIONS_MAX)
    dispatch: DispatchRow | None = None


class BadSnapshot(ValueError):
    """A hall message the centre cannot take: dead-lettered with this reason."""


def parse_snapshot(site: str, raw: bytes) -> Snapshot:
    try:
        snap = Snapshot.model_validate_json(raw)
    except ValidationError as exc:
        raise BadSnapshot(str(exc.errors(include_url=False)[:2])) from None
    if snap.incident.site != site:
        raise BadSnapshot(f"incident of site {snap.incident.site!r} on the topic of site {site!r}")
    return snap


def lead_online(raw: bytes) -> bool:
    try:
        return bool(json.loads(raw).get("state") == "online")
    except (ValueError, AttributeError):
        return False


# -- the centre --------------------------------------------------------------------------------------
@dataclass(slots=True)
class Leads:
    """The sites whose hall consumer is present now (from its retained lead status, so a restarted centre
    consumer knows them again as soon as it subscribes)."""

    sites: set[str] = field(default_factory=set)

    def note(self, site: str, raw: bytes) -> None:
        online = lead_online(raw)
        if online and site not in self.sites:
            log.info("site %s is hall-led: its hall consumer acts on its incidents", site)
            self.sites.add(site)
        elif not online and site in self.sites:
            log.warning("site %s: its hall consumer is gone; the centre acts on the site's incidents again", site)
            self.sites.discard(site)

    def __contains__(self, site: object) -> bool:
        return site in self.sites

    def current(self) -> frozenset[str]:
        return frozenset(self.sites)


async def apply_snapshots(conn: AsyncConnection, snaps: Sequence[Snapshot]) -> None:
    """Each hall incident upserted by its id, its conditions, timeline and dispatch as the hall holds them, in the
    commit's transaction; one that clashes with the centre's own open incident is skipped whole (logged)."""
    for snap in snaps:
        try:
            async with conn.begin_nested():
                await _apply(conn, snap)
        except IntegrityError:
            # The centre holds its own open incident for this outage (opened before the site was hall-led):
            # that one stays the record (docs/hall-autonomy.md, limits).
            i = snap.incident
            log.warning("hall incident %s not mirrored: the centre holds its own %s", i.id, i.open_key)


async def _apply(conn: AsyncConnection, snap: Snapshot) -> None:
    values = snap.incident.model_dump()
    incident_id = values["id"]
    changes = dict(values)
    if changes["acked_at"] is None:  # an acknowledgement made at the centre stays (the hall cannot know it)
        del changes["acked_at"], changes["acked_by"]
    done = await conn.execute(incidents.update().where(incidents.c.id == incident_id).values(**changes))
    if done.rowcount == 0:
        await conn.execute(incidents.insert().values(**values))
    for table in (incident_conditions, incident_timeline):
        await conn.execute(table.delete().where(table.c.incident_id == incident_id))
    for table, items in ((incident_conditions, snap.conditions), (incident_timeline, snap.timeline)):
        rows = [{"incident_id": incident_id, **item.model_dump()} for item in items]
        if rows:
            await conn.execute(table.insert(), rows)
    if snap.dispatch is not None:
        d = {"incident_id": incident_id, **snap.dispatch.model_dump()}
        moved = await conn.execute(dispatches.update().where(dispatches.c.id == d["id"]).values(**d))
        if moved.rowcount == 0:
            await conn.execute(dispatches.insert().values(**d))


# -- the hall ----------------------------------------------------------------------------------------
async def snapshots(engine: AsyncEngine, now: datetime) -> list[tuple[str, bytes]]:
    """(incident id, snapshot) of every incident not closed or closed within RECENT."""
    c = incidents.c
    async with engine.connect() as conn:
        recent = sa.or_(c.state != "closed", c.closed_at >= now - RECENT)
        rows = (await conn.execute(sa.select(incidents).where(recent).order_by(c.id))).all()
        ids = [r.id for r in rows]
        entries = await _by_incident(conn, incident_timeline, ids)
        conditions = await _by_incident(conn, incident_conditions, ids)
        visits = await _by_incident(conn, dispatches, ids)
    out = []
    for r in rows:
        snap = Snapshot(
            incident=IncidentRow.model_validate(_pick(r, INCIDENT_FIELDS)),
            timeline=tuple(TimelineEntry.model_validate(_pick(e, ENTRY_FIELDS)) for e in entries[r.id][-TIMELINE_MAX:]),
            conditions=tuple(
                ConditionRow.model_validate(_pick(k, CONDITION_FIELDS)) for k in conditions[r.id][-CONDITIONS_MAX:]
            ),
            dispatch=DispatchRow.model_validate(_pick(visits[r.id][0], DISPATCH_FIELDS)) if visits[r.id] else None,
        )
        out.append((r.id, snap.model_dump_json().encode()))
    return out


async def _by_incident(conn: AsyncConnection, table: sa.Table, ids: list[str]) -> dict[str, list[Any]]:
    """The table's rows of these incidents, in insertion order, 500 ids a query (under any bound-parameter limit)."""
    out: dict[str, list[Any]] = defaultdict(list)
    for i in range(0, len(ids), 500):
        q = sa.select(table).where(table.c.incident_id.in_(ids[i : i + 500])).order_by(table.c.id)
        for row in await conn.execute(q):
            out[row.incident_id].append(row)
    return out


def _pick(row: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    return {k: row._mapping[k] for k in fields}


def digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()
