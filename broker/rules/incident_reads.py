"""What the incident rules read about a batch's devices, read once for the whole batch.

The rule this module keeps: **the answers are exactly what one query per signal would have returned.** A
device's first signal in a batch is answered from what was read for all of the batch's devices (one query per
kind of read, however many devices); once the rules have acted on a device (its first signal may have opened,
joined or cleared something), its later signals in the same batch read the store again, one query each, as
before. What the rules read of one device (its conditions, its incidents, its registration) never changes
through another device's signals, so the batch's answers stay exact for every device not yet acted on.

Why: after the commit's dedup a batch of 500 events carries a handful of state changes; read one signal at a
time, each cost a dozen statements and the rules stage cost half the throughput (issue 19).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.sites import Sites
from broker.store.schema import devices, incident_conditions, incidents

if TYPE_CHECKING:
    from broker.rules.incidents import Signal

CHUNK = 500  # values per IN list: well under any backend's bound-parameter limit


_ASKED = incident_conditions.alias("asked")


def _live_among(asked: sa.ColumnElement[bool]) -> sa.Select[Any]:
    """Every active condition of the incidents that have an active condition among the batch's (``asked``):
    the batch's own answer which are active, and, in the same read, what else keeps their incidents open (the
    answer ``active_kinds`` gives a device's first clear; one statement less per batch that acts)."""
    k = incident_conditions.c
    incidents_asked = sa.select(_ASKED.c.incident_id).where(asked)
    return (
        sa.select(k.open_key, k.id, k.incident_id, k.last_signal_at, k.kind)
        .where(k.incident_id.in_(incidents_asked), k.open_key.is_not(None))
        .order_by(k.id)
    )


# The batch's condition keys (a thousand for 500 kiosk snapshots) travel as one parameter, a text[] or a JSON
# array, not as an IN list: binding a thousand literals took more of the consumer's time than the query, and
# was most of what the rules cost a batch with nothing to do.
_LIVE_PG = _live_among(_ASKED.c.open_key == sa.any_(sa.bindparam("keys", type_=ARRAY(sa.String))))
_LIVE_SQLITE = _live_among(
    _ASKED.c.open_key.in_(sa.select(sa.column("value")).select_from(sa.func.json_each(sa.bindparam("keys"))))
)


# The batch's reads, built once: a statement made anew per batch cost more Python (construction, cache key) than
# the database took to answer it (issue 19). IN lists are expanding parameters, so any length is one statement.
def _newest_conditions() -> sa.Select[Any]:
    """Each (device, kind)'s newest condition's last signal, for the batch's devices and kinds."""
    k = incident_conditions.c
    newest = (
        sa.select(sa.func.max(k.id).label("id"))
        .where(k.key.in_(sa.bindparam("keys", expanding=True)), k.kind.in_(sa.bindparam("kinds", expanding=True)))
        .group_by(k.key, k.kind)
        .subquery()
    )
    return sa.select(k.key, k.kind, k.last_signal_at).join(newest, k.id == newest.c.id)


_LAST = _newest_conditions()
_INCIDENTS = (
    sa.select(incidents)
    .where(
        sa.or_(
            incidents.c.open_key.in_(sa.bindparam("open_keys", expanding=True)),
            incidents.c.key.in_(sa.bindparam("keys", expanding=True))
            & (incidents.c.closed_at >= sa.bindparam("since")),
        )
    )
    .order_by(incidents.c.closed_at.desc())
)
_HOURS24 = sa.select(devices.c.key, devices.c.hours24).where(devices.c.key.in_(sa.bindparam("keys", expanding=True)))
# One device's again, once the rules acted on it.
_LIVE_ONE = sa.select(
    incident_conditions.c.id, incident_conditions.c.incident_id, incident_conditions.c.last_signal_at
).where(incident_conditions.c.open_key == sa.bindparam("open_key"))
_LAST_ONE = (
    sa.select(incident_conditions.c.last_signal_at)
    .where(incident_conditions.c.key == sa.bindparam("key"), incident_conditions.c.kind == sa.bindparam("kind"))
    .order_by(incident_conditions.c.id.desc())
    .limit(1)
)
_OPEN_ONE = sa.select(incidents).where(incidents.c.open_key == sa.bindparam("open_key"))
_ACTIVE_OF = (
    sa.select(incident_conditions.c.kind)
    .where(incident_conditions.c.incident_id == sa.bindparam("id"), incident_conditions.c.open_key.is_not(None))
    .order_by(incident_conditions.c.id)
)


@dataclass(frozen=True, slots=True)
class LiveCondition:
    """An active condition (its ``open_key`` set), as the batch found it."""

    id: int
    incident_id: str
    last_signal_at: datetime


@dataclass(slots=True)
class BatchReads:
    conn: AsyncConnection
    sites: Sites
    acted: set[str] = field(default_factory=set)  # device keys the rules acted on: their next signals ask again
    _live: dict[str, LiveCondition] = field(default_factory=dict)  # condition open_key -> the active condition
    _last: dict[tuple[str, str], datetime] = field(default_factory=dict)  # (key, kind) -> newest condition's signal
    _open: dict[str, Any] = field(default_factory=dict)  # incident open_key -> its row
    _closed: dict[str, list[Any]] = field(default_factory=dict)  # key -> closed incidents, newest first
    _conditions: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # incident -> (open_key, kind)
    _hours24: dict[str, bool | None] = field(default_factory=dict)  # device key -> registered 24-hour status

    # -- reads for the whole batch -----------------------------------------------------------------------
    async def live(self, condition_keys: Iterable[str]) -> set[str]:
        """Which of these conditions are active: the one read every batch makes, changes or not."""
        keys = sorted(set(condition_keys))
        if not keys:
            return set()
        if self.conn.dialect.name == "postgresql":
            rows = await self.conn.execute(_LIVE_PG, {"keys": keys})
        else:
            rows = await self.conn.execute(_LIVE_SQLITE, {"keys": json.dumps(keys)})
        asked = set(keys)
        active: dict[str, list[tuple[str, str]]] = defaultdict(list)
        for r in rows:
            active[r.incident_id].append((r.open_key, r.kind))
            if r.open_key in asked:
                self._live[r.open_key] = LiveCondition(r.id, r.incident_id, r.last_signal_at)
        self._conditions.update(active)
        return set(self._live)

    async def load(self, signals: Sequence[Signal]) -> None:
        """Everything the rules may read about these signals' devices (call ``live`` first)."""
        keys = sorted({s.key for s in signals})
        await self._load_last(keys, sorted({s.kind for s in signals}))
        await self._load_incidents(
            sorted({s.incident_key for s in signals}), keys, min(s.at - self._flap_window(s) for s in signals)
        )
        await self.load_hours24(keys)

    async def _load_last(self, keys: list[str], kinds: list[str]) -> None:
        for part in _chunks(keys):
            rows = await self.conn.execute(_LAST, {"keys": part, "kinds": kinds})
            self._last.update({(r.key, r.kind): r.last_signal_at for r in rows})

    async def _load_incidents(self, open_keys: list[str], keys: list[str], since: datetime) -> None:
        """The open incidents of these open_keys and the devices' incidents closed since ``since``, newest first:
        one query for both (a closed incident has no open_key, an open one no closed_at: no row is both)."""
        wanted, devices_ = set(open_keys), set(keys)
        closed: dict[str, list[Any]] = defaultdict(list)
        for i in range(0, max(len(open_keys), len(keys)), CHUNK):
            part = {"open_keys": open_keys[i : i + CHUNK], "keys": keys[i : i + CHUNK], "since": since}
            for r in await self.conn.execute(_INCIDENTS, part):
                if r.open_key in wanted:
                    self._open[r.open_key] = r
                if r.key in devices_ and r.closed_at is not None and r.closed_at >= since:
                    closed[r.key].append(r)
        self._closed.update(closed)

    async def load_hours24(self, keys: Iterable[str]) -> None:
        """The registered 24-hour status of these devices (not changed by the rules: never read again)."""
        wanted = sorted(set(keys) - set(self._hours24))
        self._hours24.update(dict.fromkeys(wanted))
        for part in _chunks(wanted):
            for key, hours24 in await self.conn.execute(_HOURS24, {"keys": part}):
                self._hours24[key] = hours24

    # -- answers for one signal ----------------------------------------------------------------------------
    async def live_condition(self, s: Signal) -> LiveCondition | None:
        if s.key not in self.acted:
            return self._live.get(s.condition_key)
        row = (await self.conn.execute(_LIVE_ONE, {"open_key": s.condition_key})).first()
        return None if row is None else LiveCondition(row.id, row.incident_id, row.last_signal_at)

    async def last_signal(self, s: Signal) -> datetime | None:
        """The device time of the newest signal applied to this (device, condition), active or cleared."""
        if s.key not in self.acted:
            return self._last.get((s.key, s.kind))
        return await self.conn.scalar(_LAST_ONE, {"key": s.key, "kind": s.kind})

    async def open_incident(self, s: Signal) -> Any:
        if s.key not in self.acted:
            return self._open.get(s.incident_key)
        return (await self.conn.execute(_OPEN_ONE, {"open_key": s.incident_key})).first()

    async def recently_closed(self, s: Signal, severities: tuple[str, ...] | None) -> Any:
        """The newest incident of the device closed within the flap window: one of these severities (a condition
        on the SLA clock: any outage), or with ``None`` one of the signal's own kind."""
        since = s.at - self._flap_window(s)
        if s.key not in self.acted:
            return next(
                (
                    r
                    for r in self._closed.get(s.key, ())
                    if r.closed_at >= since
                    and (r.severity in severities if severities is not None else r.kind == s.kind)
                ),
                None,
            )
        c = incidents.c
        alike = c.severity.in_(severities) if severities is not None else c.kind == s.kind
        q = sa.select(incidents).where(c.key == s.key, alike, c.closed_at >= since)
        return (await self.conn.execute(q.order_by(c.closed_at.desc()).limit(1))).first()

    async def active_kinds(self, incident_id: str, s: Signal, first: bool) -> list[str]:
        """The kinds of the incident's conditions still active once ``s`` cleared its own, oldest first.
        ``first``: ``s`` was the first signal the rules acted on for its device (its answer was read for the batch)."""
        if first and incident_id in self._conditions:
            return [kind for open_key, kind in self._conditions[incident_id] if open_key != s.condition_key]
        still = await self.conn.execute(_ACTIVE_OF, {"id": incident_id})
        return [r.kind for r in still]

    async def hours24(self, site: str, device: str) -> bool:
        """Whether a device's SLA counts wall-clock time: its registered 24-hour status (``devices.hours24``, the
        registry's copy, broker/rules/devices.py), else the site's deprecated name patterns."""
        key = f"{site}/{device}"
        if key not in self._hours24:
            await self.load_hours24([key])
        return self.sites[site].is_always_on(device, self._hours24[key])

    def _flap_window(self, s: Signal) -> timedelta:
        return timedelta(minutes=self.sites[s.site].sla.flap_window_min)


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(values), CHUNK):
        yield values[i : i + CHUNK]
