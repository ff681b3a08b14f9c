"""Maintenance cadence: the daily exterior cleaning and the quarterly joint inspection of self-service devices
(requirements §2.5: WZ 每天至少进行一次外部清洁, 每季度至少进行一次设备联合巡检; §11.3; §11.4 item 4).

No sensor knows whether a machine was cleaned: people record it (``record_service``), and the rule reminds
when the record is missing. Cleaning is due by ``clean_due`` local time on the site's working days, and every
day for a 24-hour device, which is used every day. An inspection reminder comes in the last
``inspection_remind_days`` of a quarter without one recorded. A reminder is a site task
(broker/rules/tasks.py), raised once per device and period even if someone closes it and the count is still
short. An inspection task still open after its quarter raises one overdue notice and stays open until an
inspection is recorded. A day's cleaning task nobody closed is cancelled the next day: it cannot be done any
more, and the cancelled task is the record of the miss.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.calendar import CalendarError
from broker.rules.notices import Notice
from broker.rules.tasks import Device, claim_overdue_on_devices, close_tasks, load_devices, open_task, task_notice
from broker.sites import SiteConfig, Sites
from broker.store.schema import service_records, tasks

log = logging.getLogger(__name__)

CLEAN = "clean"
INSPECTION = "inspection"
SERVICE_KINDS = (CLEAN, INSPECTION)
RULES = "rules"
_DEFAULT_SITES = Sites({})


async def check_maintenance(conn: AsyncConnection, now: datetime, sites: Sites) -> list[Notice]:
    """Cleaning and inspection reminders due now, each once, and each overdue inspection's notice once."""
    by_site: dict[str, list[Device]] = defaultdict(list)
    for dev in (await load_devices(conn)).values():
        cfg = sites[dev.site]
        if cfg.device_class(dev.device, dev.role) in cfg.maintenance.device_classes:
            by_site[dev.site].append(dev)
    notices: list[Notice] = []
    for site, devs in sorted(by_site.items()):
        cfg = sites[site]
        try:
            notices += await _cleaning(conn, now, site, cfg, devs)
        except CalendarError as exc:
            log.error("cleaning check skipped for site %s: %s", site, exc)
        notices += await _inspection(conn, now, cfg, devs)
    return notices + await _inspection_overdue(conn, now, sites)


async def _cleaning(
    conn: AsyncConnection, now: datetime, site: str, cfg: SiteConfig, devs: list[Device]
) -> list[Notice]:
    pol = cfg.maintenance
    cal = cfg.site_calendar
    day = now.astimezone(cal.zone).date()
    await _cancel_missed_cleaning(conn, site, day, now)
    due = datetime.combine(day, time.fromisoformat(pol.clean_due), tzinfo=cal.zone)
    if pol.clean_per_day <= 0 or now < due:
        return []
    working = cal.is_working_day(day)
    todo = [d for d in devs if working or _cleaned_when_closed(cfg, d)]
    done = await _counts(conn, [d.key for d in todo], CLEAN, *_day_span(day, cal.zone))
    notices = []
    for dev in todo:
        count = done.get(dev.key, 0)
        if count >= pol.clean_per_day:
            continue
        zh = f"{day} 的外部清洁未记录：应在 {pol.clean_due} 前完成 {pol.clean_per_day} 次，已记录 {count} 次"
        en = f"Exterior cleaning of {day} not recorded: {pol.clean_per_day} due by {pol.clean_due}, {count} recorded"
        task_id = await open_task(
            conn,
            key=dev.key,
            site=site,
            kind=CLEAN,
            item=day.isoformat(),
            now=now,
            due_at=due,
            reason=zh,
            once_per_item=True,
        )
        if task_id is not None:
            facts = {"task_id": task_id, "day": day.isoformat(), "due_at": due.isoformat(), "recorded": count}
            notices.append(task_notice(task_id, "clean_due", CLEAN, "minor", cfg, dev, zh, en, now, facts))
    return notices


def _cleaned_when_closed(cfg: SiteConfig, dev: Device) -> bool:
    """On a day the hall is closed: the 24-hour area is open, so its devices are cleaned (WZ 002 「每天」)."""
    policy = cfg.maintenance.clean_closed_days
    return policy == "all" or (policy == "24h" and cfg.is_always_on(dev.device, dev.hours24))


async def _cancel_missed_cleaning(conn: AsyncConnection, site: str, today: date, now: datetime) -> None:
    c = tasks.c
    await conn.execute(
        tasks.update()
        .where(c.site == site, c.kind == CLEAN, c.state == "open", c.item < today.isoformat())
        .values(state="cancelled", done_at=now, done_by=RULES, open_key=None)
    )


async def _inspection(conn: AsyncConnection, now: datetime, cfg: SiteConfig, devs: list[Device]) -> list[Notice]:
    pol = cfg.maintenance
    zone = cfg.site_calendar.zone
    start, end, quarter = _quarter(now.astimezone(zone).date(), zone)
    if pol.inspections_per_quarter <= 0 or now < end - timedelta(days=pol.inspection_remind_days):
        return []
    done = await _counts(conn, [d.key for d in devs], INSPECTION, start, end)
    notices = []
    for dev in devs:
        count = done.get(dev.key, 0)
        if count >= pol.inspections_per_quarter:
            continue
        need, last_day = pol.inspections_per_quarter, (end - timedelta(days=1)).date()
        zh = f"{quarter} 季度联合巡检未记录（应 {need} 次，已记录 {count} 次），请在 {last_day} 前完成"
        en = f"{quarter} joint inspection not recorded ({count} of {need}): due by {last_day}"
        task_id = await open_task(
            conn,
            key=dev.key,
            site=dev.site,
            kind=INSPECTION,
            item=quarter,
            now=now,
            due_at=end,
            reason=zh,
            once_per_item=True,
        )
        if task_id is not None:
            facts = {"task_id": task_id, "quarter": quarter, "due_at": end.isoformat(), "recorded": count}
            notices.append(task_notice(task_id, "inspection_due", INSPECTION, "minor", cfg, dev, zh, en, now, facts))
    return notices


async def _inspection_overdue(conn: AsyncConnection, now: datetime, sites: Sites) -> list[Notice]:
    notices = []
    for r, dev, cfg in await claim_overdue_on_devices(conn, INSPECTION, now, sites):
        zh = f"{r.item} 季度联合巡检已超期，仍未记录"
        en = f"{r.item} joint inspection overdue: none recorded"
        facts = {"task_id": r.id, "quarter": r.item, "due_at": r.due_at.isoformat()}
        notices.append(task_notice(r.id, "inspection_overdue", INSPECTION, "major", cfg, dev, zh, en, now, facts))
    return notices


async def record_service(
    conn: AsyncConnection, key: str, kind: str, *, by: str, at: datetime, note: str = "", sites: Sites | None = None
) -> list[str]:
    """A person cleaned or inspected the device at ``at``: the service record, and the ids of the tasks it
    closes: that local day's cleaning, or that quarter's inspection and any earlier one still open (a late
    inspection makes up for the missed one). ``sites`` gives the local day's zone (default: the default
    site's, Asia/Shanghai)."""
    if kind not in SERVICE_KINDS:
        raise ValueError(f"unknown service kind {kind!r}: record one of {', '.join(SERVICE_KINDS)}")
    if at.tzinfo is None:
        raise ValueError(f"naive time {at.isoformat()}: pass an aware one")
    site, sep, _ = key.partition("/")
    if not sep:
        raise ValueError(f"device key {key!r} is not {{site}}/{{device}}")
    zone = (sites or _DEFAULT_SITES)[site].site_calendar.zone
    local_day = at.astimezone(zone).date()
    item = local_day.isoformat() if kind == CLEAN else _quarter(local_day, zone)[2]
    await conn.execute(
        service_records.insert().values(key=key, site=site, kind=kind, item=item, at=at, by=by[:64], note=note[:1000])
    )
    c = tasks.c
    period = c.item == item if kind == CLEAN else c.item <= item
    return await close_tasks(conn, (c.key == key) & (c.kind == kind) & period, by=by, at=at)


async def _counts(conn: AsyncConnection, keys: list[str], kind: str, start: datetime, end: datetime) -> dict[str, int]:
    if not keys:
        return {}
    s = service_records.c
    rows = await conn.execute(
        sa.select(s.key, sa.func.count().label("n"))
        .where(s.key.in_(keys), s.kind == kind, s.at >= start, s.at < end)
        .group_by(s.key)
    )
    return {r.key: int(r.n) for r in rows}


def _day_span(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), tzinfo=zone)
    return start, datetime.combine(day + timedelta(days=1), time(), tzinfo=zone)


def _quarter(day: date, zone: ZoneInfo) -> tuple[datetime, datetime, str]:
    """The quarter holding ``day``: local start, local end (exclusive) and its label, "2026Q4"."""
    q = (day.month - 1) // 3
    first = date(day.year, 3 * q + 1, 1)
    after = date(day.year + 1, 1, 1) if q == 3 else date(day.year, 3 * q + 4, 1)
    return (
        datetime.combine(first, time(), tzinfo=zone),
        datetime.combine(after, time(), tzinfo=zone),
        f"{day.year}Q{q + 1}",
    )
