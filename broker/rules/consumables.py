"""Consumables: levels from kiosk.consumable events, refills, and restock tasks raised before a kiosk runs dry
(requirements §2.3 duty 5: the site supplies thermal paper, A4 paper and toner; §2.7; §11.4 item 3; gap G7).

Why a forecast and not just the device's "low" flag: the seeds give no thresholds (G7), and a 24-hour kiosk
that reads low in the evening prints all night with nobody in the hall. What matters is whether it lasts
until staff are back, so each consumable gets an ``empty_forecast``:

- level consumables (toner, A4 trays) report ``level_pct``: the rate is the least-squares slope of the level
  over *counted* time (the hall's opening hours, or wall-clock time for a 24-hour device, as the SLA clock
  counts), from the readings of the last ``history_days`` since the last refill;
- thermal paper reports only ok / low (the near-end sensor) / empty: once low, the roll still prints about
  ``receipts_after_near_end`` receipts; what is left is that minus the usage counter's rise since it read
  low, used up at the counter's rate over the history.

No rate, no forecast: the rule never invents a number, but a low state still raises a task.

A restock task (broker/rules/tasks.py, once per device and consumable) opens when the consumable is low or
empty, when the forecast falls within ``restock_lead_h`` counted hours, or, for a 24-hour device, before the
next staffed opening + the lead (nobody refills at night or over a weekend). It is due a bit before the
forecast, moved back into staffed time where there is some: a 24-hour kiosk that will run dry at 03:00 is due
before staff leave. A refill, seen in the levels or recorded by a person, closes it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import groupby, pairwise
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.calendar import CalendarError, Hours, SiteCalendar
from broker.rules.notices import Notice, Severity
from broker.rules.tasks import (
    Device,
    claim_overdue_on_devices,
    close_tasks,
    load_devices,
    open_task,
    task_notice,
    task_open_key,
)
from broker.sites import SiteConfig, Sites
from broker.store.db import _insert_ignore, insert_ignoring
from broker.store.schema import consumable_levels, events, service_records, tasks

log = logging.getLogger(__name__)

RESTOCK = "restock"
LOW_STATES = frozenset({"low", "empty"})
THERMAL_PAPER = "thermal_paper"
REFILL_RISE_PCT = 20.0  # a level this much higher than the last reading is a refill, not sensor noise
MIN_SPAN_S = 3600.0  # a rate needs readings at least one counted hour apart
MAX_FORECAST_S = 366 * 86400.0  # slower than this is "not in the foreseeable future": no forecast
DUE_MARGIN = timedelta(hours=1)  # a task is due this long before the forecast...
DUE_MARGIN_SHARE = 0.1  # ...or this share of the time left, if less
USAGE_LOOKBACK = 50  # usage events scanned for the counter's value when a consumable first reads low
REFILL_NOTE = "detected from the level"

_NAMES = {
    "thermal_paper": ("热敏纸", "thermal paper"),
    "toner": ("硒鼓", "toner"),
    "a4_paper": ("A4纸", "A4 paper"),
    "ink": ("墨盒", "ink"),
    "drum": ("感光鼓", "drum"),
    "waste": ("废粉盒", "waste box"),
    "developer": ("显影剂", "developer"),
    "fuser": ("定影器", "fuser"),
    "transfer": ("转印组件", "transfer unit"),
    "staples": ("订书钉", "staples"),
    "ribbon": ("色带", "ribbon"),
    "cleaner": ("清洁组件", "cleaner unit"),
}
_COLOURS = {"black": "黑色", "cyan": "青色", "magenta": "品红", "yellow": "黄色"}
# PWG media-source keywords the printers name their trays by (printer-input-tray ``name=``).
_TRAYS = {
    "main": ("主纸盒", "main tray"), "by-pass-tray": ("手送纸盒", "by-pass tray"),
    "manual": ("手动进纸", "manual feed"), "auto": ("自动选纸", "auto select"),
    "large-capacity": ("大容量纸盒", "large-capacity tray"),
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class LevelReading:
    """One kiosk.consumable event."""

    key: str
    site: str
    device: str
    consumable: str
    state: str
    level_pct: float | None
    at: datetime  # device time, aware


def consumable_label(name: str) -> tuple[str, str]:
    """Chinese and English display names: "toner:black" -> 硒鼓（黑色）/ toner (black)."""
    head, _, detail = name.partition(":")
    zh, en = _NAMES.get(head, (head, head))
    if not detail:
        return zh, en
    if head == "a4_paper":
        if detail in _TRAYS:
            tray_zh, tray_en = _TRAYS[detail]
            return f"{zh}（{tray_zh}）", f"{en} ({tray_en})"
        return f"{zh}（{detail} 纸盒）", f"{en} (tray {detail})"
    return f"{zh}（{_COLOURS.get(detail, detail)}）", f"{en} ({detail})"


def _tickets(site: str) -> str:
    return "tickets"


# -- levels, inside the consumer's batch transaction -----------------------------------------------------
async def record_levels(
    conn: AsyncConnection, readings: list[LevelReading], *, usage_counter: Callable[[str], str] = _tickets
) -> None:
    """Upsert the levels; a reading older than the stored one (out-of-order delivery) changes nothing.
    Sorted by (device, consumable) so concurrent batches and the planner lock rows in one order. The stored
    levels of the batch's devices are read in one query: each (device, consumable)'s first reading uses it, a
    later one of the same pair reads its row again (the first may have changed it). The first readings of pairs
    with no row yet are inserted together first, in one statement: one insert per new pair made a fleet's first
    readings most of what the rules stage cost (issue 19). Only uncommitted new rows are locked by that insert and
    only committed ones by the updates after it, so the two phases cannot wait on each other across batches."""
    stored = await _stored_levels(conn, sorted({r.key for r in readings}))
    ordered = sorted(readings, key=lambda r: (r.key, r.consumable, r.at))
    firsts = _firsts(ordered, stored)
    done = await _insert_firsts(conn, firsts, usage_counter)
    sent = {id(r) for r in firsts if (r.key, r.consumable) in done}
    for r in ordered:
        if id(r) in sent:
            continue
        pair = (r.key, r.consumable)
        row = stored.get(pair) if pair not in done else await _level_row(conn, r)
        done.add(pair)
        await _record_level(conn, r, usage_counter(r.site), row)


def _firsts(ordered: list[LevelReading], stored: dict[tuple[str, str], Any]) -> list[LevelReading]:
    """The first reading of each (device, consumable) with no stored row, in order."""
    firsts: dict[tuple[str, str], LevelReading] = {}
    for r in ordered:
        if (r.key, r.consumable) not in stored:
            firsts.setdefault((r.key, r.consumable), r)
    return list(firsts.values())


async def _insert_firsts(
    conn: AsyncConnection, firsts: list[LevelReading], usage_counter: Callable[[str], str]
) -> set[tuple[str, str]]:
    """The new pairs' rows, as ``_record_level`` would insert each; returns the pairs inserted (a pair another
    batch inserted first is left to ``_record_level``, which updates that row). One fixed INSERT executed with
    the rows (SQLAlchemy's insertmanyvalues sends them as multi-row statements), not ``.values(rows)``: a
    statement whose text changes with its row count is compiled again every batch (issue 19)."""
    if not firsts:
        return set()
    rows = []
    for r in firsts:
        low = {"low_since": None, "usage_at_low": None} | await _low_values(conn, r, None, usage_counter(r.site))
        rows.append({"key": r.key, "consumable": r.consumable} | _reading(r) | low)
    c = consumable_levels.c
    stmt = insert_ignoring(conn, consumable_levels, c.key, c.consumable)
    return {(key, consumable) for key, consumable in await conn.execute(stmt, rows)}


def _reading(r: LevelReading) -> dict[str, Any]:
    return {"state": r.state, "level_pct": r.level_pct, "updated_at": r.at}


# Built once: an IN list as an expanding parameter is one cached statement whatever its length.
_STORED = sa.select(consumable_levels).where(consumable_levels.c.key.in_(sa.bindparam("keys", expanding=True)))


async def _stored_levels(conn: AsyncConnection, keys: list[str]) -> dict[tuple[str, str], Any]:
    rows: dict[tuple[str, str], Any] = {}
    for i in range(0, len(keys), 500):  # well under any backend's bound-parameter limit
        for row in await conn.execute(_STORED, {"keys": keys[i : i + 500]}):
            rows[(row.key, row.consumable)] = row
    return rows


async def _level_row(conn: AsyncConnection, r: LevelReading) -> Any:
    c = consumable_levels.c
    q = sa.select(consumable_levels).where(c.key == r.key, c.consumable == r.consumable)
    return (await conn.execute(q)).first()


async def _record_level(conn: AsyncConnection, r: LevelReading, counter: str, row: Any) -> None:
    """One reading, given its (device, consumable)'s stored row (None: none yet)."""
    c = consumable_levels.c
    where = (c.key == r.key) & (c.consumable == r.consumable)
    reading = _reading(r)
    if row is None:
        values = reading | await _low_values(conn, r, None, counter)
        stmt = _insert_ignore(conn, consumable_levels).values(key=r.key, consumable=r.consumable, **values)
        if (await conn.execute(stmt.returning(c.key))).first() is not None:
            return
        row = (await conn.execute(sa.select(consumable_levels).where(where))).one()  # another batch won
    if r.at <= row.updated_at:
        return
    refill = _is_refill(row.state, row.level_pct, r.state, r.level_pct)
    values = reading | await _low_values(conn, r, row, counter) | ({"empty_forecast": None} if refill else {})
    done = await conn.execute(consumable_levels.update().where(where, c.updated_at < r.at).values(**values))
    if done.rowcount == 1 and refill:
        await _add_record(conn, r.key, r.consumable, by="device", at=r.at, note=REFILL_NOTE)
        await close_tasks(conn, tasks.c.open_key == task_open_key(r.key, RESTOCK, r.consumable), by="device", at=r.at)


async def _low_values(conn: AsyncConnection, r: LevelReading, row: Any, counter: str) -> dict[str, Any]:
    """low_since and the usage counter then, set when the consumable first reads low; cleared when ok."""
    if r.state in LOW_STATES and (row is None or row.low_since is None):
        return {"low_since": r.at, "usage_at_low": await _counter_at(conn, r.site, r.device, counter, r.at)}
    if r.state == "ok":
        return {"low_since": None, "usage_at_low": None}
    return {}


def _is_refill(old_state: str, old_pct: float | None, new_state: str, new_pct: float | None) -> bool:
    """With levels on both sides only a real rise counts: a level wobbling across the printer's "low"
    threshold (15 % low, 16 % ok) is not a refill. Without levels (thermal paper), low/empty -> ok is."""
    if old_pct is not None and new_pct is not None:
        return new_pct - old_pct >= REFILL_RISE_PCT
    return old_state in LOW_STATES and new_state == "ok"


async def _counter_at(conn: AsyncConnection, site: str, device: str, counter: str, at: datetime) -> int | None:
    rows = await conn.execute(_USAGE, {"site": site, "device": device, "at": at})
    for row in rows:
        value = json.loads(row.data).get("counters", {}).get(counter)
        if isinstance(value, int):
            return value
    return None


# The device's newest usage events up to a reading (built once: see _STORED).
_USAGE = (
    sa.select(events.c.data)
    .where(
        events.c.site == sa.bindparam("site"),
        events.c.device == sa.bindparam("device"),
        events.c.type == "kiosk.usage",
        events.c.ts <= sa.bindparam("at"),
    )
    .order_by(events.c.ts.desc())
    .limit(USAGE_LOOKBACK)
)


# -- refills recorded by people ---------------------------------------------------------------------------
async def record_refill(
    conn: AsyncConnection, key: str, consumable: str, *, by: str, at: datetime, note: str = ""
) -> bool:
    """A person refilled ``consumable``: the service record, and the open restock task closed (True) if any."""
    await _add_record(conn, key, consumable, by=by, at=at, note=note)
    closed = await close_tasks(conn, tasks.c.open_key == task_open_key(key, RESTOCK, consumable), by=by, at=at)
    return bool(closed)


async def _add_record(conn: AsyncConnection, key: str, consumable: str, *, by: str, at: datetime, note: str) -> None:
    site, sep, _ = key.partition("/")
    if not sep:
        raise ValueError(f"device key {key!r} is not {{site}}/{{device}}")
    await conn.execute(
        service_records.insert().values(
            key=key, site=site, kind="refill", item=consumable, at=at, by=by[:64], note=note[:1000]
        )
    )


# -- the planner, on the SLA ticker ---------------------------------------------------------------------------
@dataclass(slots=True)
class _History:
    """One device's readings over the policy's history: level series per consumable, usage counters."""

    levels: dict[str, list[tuple[datetime, float]]] = field(default_factory=dict)
    usage: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)

    def counter(self, name: str) -> list[tuple[datetime, int]]:
        return [(t, v) for t, counters in self.usage if isinstance(v := counters.get(name), int)]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What one consumable needs: its forecast, and why a task is due (None: nothing to do)."""

    empty_at: datetime | None
    why: str | None  # empty | low | soon | unstaffed
    staffed_at: datetime | None = None  # the next staffed opening, for a 24-hour device


async def plan_restock(conn: AsyncConnection, now: datetime, sites: Sites) -> list[Notice]:
    """Forecasts for every consumable, restock tasks opened once, and each overdue task's notice once."""
    notices: list[Notice] = []
    devs = await load_devices(conn)
    c = consumable_levels.c
    rows = (await conn.execute(sa.select(consumable_levels).order_by(c.key, c.consumable))).all()
    for key, group in groupby(rows, key=lambda r: r.key):
        dev = devs.get(key)
        if dev is None:
            continue
        cfg = sites[dev.site]
        rows_of_device = list(group)
        history = _History()
        if any(_needs_history(r) for r in rows_of_device):
            history = await _load_history(conn, dev, now - timedelta(days=cfg.consumables.history_days), now)
        for row in rows_of_device:
            if row.consumable.partition(":")[0] == "waste":
                continue  # a waste receptacle fills up: it is emptied, not restocked
            try:
                notice = await _plan_one(conn, now, cfg, dev, row, history)
            except CalendarError as exc:
                log.error("restock planning skipped for %s %s: %s", key, row.consumable, exc)
                continue
            if notice is not None:
                notices.append(notice)
    return notices + await _overdue(conn, now, sites)


def _needs_history(row: Any) -> bool:
    """Only a level, or thermal paper once low, can be forecast: skip reading the events otherwise."""
    if row.state == "empty":
        return False
    return row.level_pct is not None or (row.consumable == THERMAL_PAPER and row.low_since is not None)


async def _load_history(conn: AsyncConnection, dev: Device, since: datetime, now: datetime) -> _History:
    e = events.c
    rows = await conn.execute(
        sa.select(e.ts, e.type, e.data)
        .where(e.site == dev.site, e.device == dev.device, e.type.in_(("kiosk.consumable", "kiosk.usage")))
        .where(e.ts >= since, e.ts <= now)
        .order_by(e.ts)
    )
    history = _History()
    for row in rows:
        data = json.loads(row.data)
        if row.type == "kiosk.usage":
            history.usage.append((row.ts, data.get("counters", {})))
        elif isinstance(data.get("level_pct"), int | float):
            history.levels.setdefault(data.get("consumable", ""), []).append((row.ts, float(data["level_pct"])))
    return history


async def _plan_one(
    conn: AsyncConnection, now: datetime, cfg: SiteConfig, dev: Device, row: Any, history: _History
) -> Notice | None:
    plan = _plan(row, history, now, cfg, dev)
    if plan.empty_at != row.empty_forecast:
        c = consumable_levels.c
        await conn.execute(
            consumable_levels.update()
            .where(c.key == row.key, c.consumable == row.consumable)
            .values(empty_forecast=plan.empty_at)
        )
    if plan.why is None or await _refilled_since(conn, row):
        return None
    due = _due(now, plan.empty_at, cfg.site_calendar)
    zh, en = _restock_text(row, plan, due, cfg.site_calendar)
    task_id = await open_task(
        conn, key=dev.key, site=dev.site, kind=RESTOCK, item=row.consumable, now=now, due_at=due, reason=zh
    )
    if task_id is None:
        return None
    severity: Severity = "major" if row.state == "empty" else "minor"
    facts = {"task_id": task_id, "consumable": row.consumable, "state": row.state, "level_pct": row.level_pct}
    facts |= {"empty_forecast": _iso(plan.empty_at), "due_at": due.isoformat(), "why": plan.why}
    return task_notice(task_id, RESTOCK, RESTOCK, severity, cfg, dev, zh, en, now, facts)


def _plan(row: Any, history: _History, now: datetime, cfg: SiteConfig, dev: Device) -> _Plan:
    pol = cfg.consumables
    hours = cfg.hours_for(dev.device, dev.hours24)
    empty_at = _forecast(row, history, now, cfg, hours)
    if row.state == "empty":
        return _Plan(empty_at, "empty")
    if row.state in LOW_STATES or (row.level_pct is not None and row.level_pct <= pol.low_pct):
        return _Plan(empty_at, "low")
    if empty_at is None:
        return _Plan(None, None)
    lead_s = pol.restock_lead_h * 3600
    if empty_at <= hours.add_open_time(now, lead_s):
        return _Plan(empty_at, "soon")
    if cfg.is_always_on(dev.device, dev.hours24):
        cal = cfg.site_calendar
        staffed = cal.next_open(cal.end_of_working_day(now))
        if empty_at <= cal.add_open_time(staffed, lead_s):
            return _Plan(empty_at, "unstaffed", staffed)
    return _Plan(empty_at, None)


async def _refilled_since(conn: AsyncConnection, row: Any) -> bool:
    """A person recorded a refill after the newest reading: the level is stale, wait for the device's next
    reading rather than reopen the task just closed."""
    s = service_records.c
    last = await conn.execute(
        sa.select(sa.func.max(s.at)).where(s.key == row.key, s.kind == "refill", s.item == row.consumable)
    )
    at = last.scalar()
    return at is not None and at >= row.updated_at


# -- forecasts --------------------------------------------------------------------------------------------
def _forecast(row: Any, history: _History, now: datetime, cfg: SiteConfig, hours: Hours) -> datetime | None:
    """When it runs out, in counted time from the last observation; None when no rate is known."""
    if row.state == "empty":
        return None
    if row.level_pct is not None:
        rate = _level_rate(history.levels.get(row.consumable, []), hours)
        if rate is None:
            return None
        anchor, seconds = row.updated_at, row.level_pct / rate
    elif row.consumable == THERMAL_PAPER:
        counter = history.counter(cfg.consumables.usage_counter)
        left = _receipts_left(row, counter, cfg.consumables.receipts_after_near_end)
        rate = _usage_rate(counter, hours)
        if left is None or rate is None:
            return None
        anchor, seconds = counter[-1][0], left / rate
    else:
        return None
    if seconds > MAX_FORECAST_S:
        return None
    return _to_minute(max(hours.add_open_time(anchor, seconds), now))


def _level_rate(points: Sequence[tuple[datetime, float]], hours: Hours) -> float | None:
    """Percent per counted second: minus the least-squares slope since the last refill, if it falls."""
    start = max((i for i in range(1, len(points)) if points[i][1] - points[i - 1][1] >= REFILL_RISE_PCT), default=0)
    segment = points[start:]
    if len(segment) < 2:
        return None
    t0 = segment[0][0]
    xs = [hours.open_seconds(t0, t) for t, _ in segment]
    if xs[-1] < MIN_SPAN_S:
        return None
    slope = _slope(xs, [level for _, level in segment])
    return -slope if slope < 0 else None


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return sxy / sxx if sxx > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ReceiptEstimate:
    """What a near-end roll still prints, as the forecast reckons it: an estimate (the printer only says
    ok / near end / end), shown labelled as one."""

    left: int
    printed_since_low: int
    after_near_end: int


def receipt_estimate(row: Any, latest_counter: int | None, after_near_end: int) -> ReceiptEstimate | None:
    """The same reckoning as the forecast (_receipts_left), for the page: None where the rule has none."""
    if latest_counter is None or row.consumable != THERMAL_PAPER or row.state == "empty":
        return None
    left = _receipts_left(row, [(row.updated_at, latest_counter)], after_near_end)
    if left is None:
        return None
    return ReceiptEstimate(left, latest_counter - row.usage_at_low, after_near_end)


def _receipts_left(row: Any, counter: Sequence[tuple[datetime, int]], after_near_end: int) -> int | None:
    """Receipts the roll still prints: the near-end allowance minus what was printed since it read low.
    A counter below its value at low was reset (application reinstall): what it printed is unknown."""
    if row.low_since is None or row.usage_at_low is None or not counter:
        return None
    latest = counter[-1][1]
    if latest < row.usage_at_low:
        return None
    return max(after_near_end - (latest - row.usage_at_low), 0)


def _usage_rate(counter: Sequence[tuple[datetime, int]], hours: Hours) -> float | None:
    """Counts per counted second over the history; a counter reset restarts from zero, not minus."""
    if len(counter) < 2:
        return None
    used = sum(b - a if b >= a else b for (_, a), (_, b) in pairwise(counter))
    span = hours.open_seconds(counter[0][0], counter[-1][0])
    if span < MIN_SPAN_S or used <= 0:
        return None
    return used / span


def _due(now: datetime, empty_at: datetime | None, cal: SiteCalendar) -> datetime:
    """A bit before the forecast, never after it, moved back to the last staffed moment before it if
    staff are in before then; with no forecast, by the end of the (next) working day."""
    if empty_at is None:
        return cal.end_of_working_day(now)
    margin = min(DUE_MARGIN, max(empty_at - now, timedelta()) * DUE_MARGIN_SHARE)
    target = max(empty_at - margin, now)
    if cal.is_open(target):
        return target
    day, first = target.astimezone(cal.zone).date(), now.astimezone(cal.zone).date()
    while day >= first:
        for start, end in reversed(cal.sessions_on(day)):
            if start < target and end > now:
                return min(end, target)
        day -= timedelta(days=1)
    return target


def _to_minute(t: datetime) -> datetime:
    """Forecasts to the minute: sub-second float noise must not rewrite the row on every tick."""
    return (t + timedelta(seconds=30)).replace(second=0, microsecond=0)


# -- notices ----------------------------------------------------------------------------------------------
def _restock_text(row: Any, plan: _Plan, due: datetime, cal: SiteCalendar) -> tuple[str, str]:
    zh, en = consumable_label(row.consumable)
    by = _local(due, cal)
    if plan.why == "empty":
        return f"{zh}已用完，请尽快补充（{by} 前）", f"{en} is empty: refill as soon as possible (by {by})"
    level_zh = f"余量 {row.level_pct:.0f}%，" if row.level_pct is not None else ""
    level_en = f" at {row.level_pct:.0f}%" if row.level_pct is not None else ""
    if plan.empty_at is None:
        return (
            f"{zh}余量不足，{level_zh}暂无用量数据，无法预测用完时间，请在 {by} 前补充",
            f"{en} is low{level_en}; no usage data to forecast when it runs out: refill by {by}",
        )
    empty = _local(plan.empty_at, cal)
    zh_text = f"{zh}{level_zh}预计 {empty} 用完，请在 {by} 前补充"
    en_text = f"{en}{level_en} is forecast to run out at {empty}: refill by {by}"
    if plan.staffed_at is not None:
        staffed = _local(plan.staffed_at, cal)
        zh_text += f"（24小时设备，早于下次有人值守的 {staffed}）"
        en_text += f" (24-hour device; before staff are next in at {staffed})"
    return zh_text, en_text


async def _overdue(conn: AsyncConnection, now: datetime, sites: Sites) -> list[Notice]:
    notices = []
    for r, dev, cfg in await claim_overdue_on_devices(conn, RESTOCK, now, sites):
        zh, en = consumable_label(r.item)
        due = _local(r.due_at, cfg.site_calendar)
        facts = {"task_id": r.id, "consumable": r.item, "due_at": r.due_at.isoformat()}
        zh_text = f"{zh}补充已超期（应在 {due} 前补充），仍未记录补充"
        en_text = f"{en} restock overdue (was due {due}); no refill recorded"
        notices.append(task_notice(r.id, "restock_overdue", RESTOCK, "major", cfg, dev, zh_text, en_text, now, facts))
    return notices


def _local(t: datetime, cal: SiteCalendar) -> str:
    return t.astimezone(cal.zone).strftime("%Y-%m-%d %H:%M")


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()
