"""Cleaning and inspection reminders (broker/rules/maintenance.py) against both stores.

The site is the default one: Asia/Shanghai, Monday to Friday with PRC holidays, cleaning due by 17:00,
one joint inspection a quarter with reminders in its last 14 days; ``k24h-1`` is registered as a 24-hour device.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from broker.rules.maintenance import check_maintenance, record_service
from broker.rules.notices import Notice
from broker.sites import MaintenancePolicy, SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import devices, service_records, tasks

SH = ZoneInfo("Asia/Shanghai")
SITES = Sites({})
K, K24 = "qp/k-1", "qp/k24h-1"


def at(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=SH)


TUE = (11, 24)
WED = (11, 25)
SAT = (11, 28)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A kiosk, a 24-hour kiosk (registered as one: devices.hours24, as `hallfleet provision sync` writes it), and
    an attendance terminal (not a class the cadence applies to)."""
    s = await Store.open(store_url)
    async with s.engine.begin() as conn:
        for device, role, hours24 in [("k-1", "kiosk", None), ("k24h-1", "kiosk", True), ("att-1", "attendance", None)]:
            row = {"key": f"qp/{device}", "site": "qp", "device": device, "role": role, "first_seen": at(1, 1)}
            await conn.execute(devices.insert().values(**row, hours24=hours24))
    try:
        yield s
    finally:
        await s.close()


async def check(store: Store, now: datetime, kind: str | None = None, sites: Sites = SITES) -> list[Notice]:
    """The notices of ``kind`` (all if None)."""
    async with store.engine.begin() as conn:
        notices = await check_maintenance(conn, now, sites)
    return [n for n in notices if kind in (None, n.kind)]


async def service(store: Store, key: str, kind: str, t: datetime, by: str = "li.si") -> list[str]:
    async with store.engine.begin() as conn:
        return await record_service(conn, key, kind, by=by, at=t)


async def task_rows(store: Store, kind: str) -> list[Any]:
    return await store.fetch(sa.select(tasks).where(tasks.c.kind == kind).order_by(tasks.c.key, tasks.c.item))


# -- daily cleaning -----------------------------------------------------------------------------------------
async def test_cleaning_not_recorded_by_17h_raises_one_task_and_notice_per_kiosk(store: Store) -> None:
    assert await check(store, at(*TUE, 16, 59)) == []

    notices = await check(store, at(*TUE, 17))
    again = await check(store, at(*TUE, 17, 30))

    assert sorted((n.device, n.step, n.kind, n.severity, n.device_class) for n in notices) == [
        ("k-1", "clean_due", "clean", "minor", "kiosk"),
        ("k24h-1", "clean_due", "clean", "minor", "kiosk"),
    ]
    assert again == []
    rows = await task_rows(store, "clean")
    assert [(t.key, t.item, t.due_at, t.state) for t in rows] == [
        (K, "2026-11-24", at(*TUE, 17), "open"),
        (K24, "2026-11-24", at(*TUE, 17), "open"),
    ]
    assert {n.ref for n in notices} == {f"task:{t.id}" for t in rows}
    assert "2026-11-24 的外部清洁未记录" in notices[0].summary_zh


async def test_cleaning_recorded_that_local_day_means_no_reminder(store: Store) -> None:
    """GIVEN k-1 cleaned at 07:30 Beijing time (still Monday in UTC), k24h-1 only on Monday
    WHEN checking at 17:00 THEN only k24h-1 is reminded."""
    await service(store, K, "clean", at(*TUE, 7, 30))
    await service(store, K24, "clean", at(11, 23, 18))

    notices = await check(store, at(*TUE, 17))

    assert [n.device for n in notices] == ["k24h-1"]


async def test_weekend_cleaning_only_for_24h_devices(store: Store) -> None:
    notices = await check(store, at(*SAT, 17, 30))

    assert [(n.device, n.step) for n in notices] == [("k24h-1", "clean_due")]


async def test_record_service_closes_that_days_cleaning_and_it_is_not_raised_again(store: Store) -> None:
    await check(store, at(*TUE, 17))
    k_task = next(t for t in await task_rows(store, "clean") if t.key == K)

    closed = await service(store, K, "clean", at(*TUE, 17, 20), by="wang.wu")

    assert closed == [k_task.id]
    done = next(t for t in await task_rows(store, "clean") if t.key == K)
    assert (done.state, done.done_by, done.done_at, done.open_key) == ("done", "wang.wu", at(*TUE, 17, 20), None)
    assert await check(store, at(*TUE, 17, 30)) == []
    assert await service(store, K, "clean", at(*TUE, 17, 40)) == []
    (rec, _) = await store.fetch(sa.select(service_records).where(service_records.c.key == K))
    assert (rec.kind, rec.item, rec.by) == ("clean", "2026-11-24", "wang.wu")


async def test_a_days_reminder_comes_once_even_if_closed_with_the_count_still_short(store: Store) -> None:
    """GIVEN two cleanings a day WHEN one is recorded after the reminder (closing it) THEN no second reminder
    that day: the closed task already told them."""
    twice = Sites({"qp": SiteConfig(maintenance=MaintenancePolicy(clean_per_day=2))})
    first = await check(store, at(*TUE, 17), sites=twice)
    await service(store, K, "clean", at(*TUE, 17, 10))

    again = await check(store, at(*TUE, 17, 20), sites=twice)

    assert "应在 17:00 前完成 2 次，已记录 0 次" in first[0].summary_zh
    assert again == []


async def test_a_days_missed_cleaning_is_cancelled_the_next_day(store: Store) -> None:
    await check(store, at(*TUE, 17))

    await check(store, at(*WED, 9))

    rows = await task_rows(store, "clean")
    assert {(t.state, t.done_by, t.open_key) for t in rows} == {("cancelled", "rules", None)}


# -- quarterly joint inspection -------------------------------------------------------------------------------
async def test_inspection_reminder_in_the_last_14_days_of_the_quarter(store: Store) -> None:
    """GIVEN Q3 2026 (ends 1 October 00:00 local), k-1 inspected in July, k24h-1 only in June (Q2)
    WHEN checking THEN nothing before 17 September; from then one reminder for k24h-1, due at the quarter's end."""
    await service(store, K, "inspection", at(7, 10, 10))
    await service(store, K24, "inspection", at(6, 30, 23))

    assert await check(store, at(9, 16, 23, 59), "inspection") == []
    notices = await check(store, at(9, 17), "inspection")
    again = await check(store, at(9, 20, 10), "inspection")

    assert [(n.device, n.step, n.kind, n.severity) for n in notices] == [
        ("k24h-1", "inspection_due", "inspection", "minor")
    ]
    assert again == []
    (task,) = await task_rows(store, "inspection")
    assert (task.key, task.item, task.due_at) == (K24, "2026Q3", at(10, 1))
    assert "2026Q3 季度联合巡检未记录" in notices[0].summary_zh


async def test_inspection_overdue_once_after_the_quarter_ends(store: Store) -> None:
    await check(store, at(9, 20, 10), "inspection")
    assert len(await task_rows(store, "inspection")) == 2

    assert await check(store, at(10, 1), "inspection") == []
    overdue = await check(store, at(10, 1, 0, 1), "inspection")
    again = await check(store, at(10, 2, 10), "inspection")

    assert sorted((n.device, n.step, n.severity) for n in overdue) == [
        ("k-1", "inspection_overdue", "major"),
        ("k24h-1", "inspection_overdue", "major"),
    ]
    assert again == []
    assert all(t.overdue_notified and t.state == "open" for t in await task_rows(store, "inspection"))


async def test_record_service_closes_the_quarters_inspection_and_a_late_one_closes_the_overdue_task(
    store: Store,
) -> None:
    await check(store, at(9, 20, 10), "inspection")
    tasks_by_key = {t.key: t.id for t in await task_rows(store, "inspection")}

    in_time = await service(store, K, "inspection", at(9, 25, 14))
    late = await service(store, K24, "inspection", at(10, 12, 10))

    assert (in_time, late) == ([tasks_by_key[K]], [tasks_by_key[K24]])
    assert {t.state for t in await task_rows(store, "inspection")} == {"done"}
    assert await check(store, at(10, 12, 11), "inspection") == []


async def test_record_service_rejects_an_unknown_kind(store: Store) -> None:
    with pytest.raises(ValueError, match=r"'refill'.*clean, inspection"):
        await service(store, K, "refill", at(*TUE, 10))
    assert await store.fetch(sa.select(service_records)) == []


# (case, maintenance.clean_closed_days, day, devices.hours24 as registered (None: not registered), reminded at 17:30)
CLOSED_DAY_CASES = [
    ("WZ002:489 每天: default 24h, an ordinary Saturday", "24h", SAT, {}, ["k24h-1"]),
    ("WZ002:489 default 24h, National Day (QP000:282 closed)", "24h", (10, 1), {}, ["k24h-1"]),
    ("G13 the 调休 Saturday 2026-10-10 is a working day: every kiosk", "24h", (10, 10), {}, ["k-1", "k24h-1"]),
    ("all: every kiosk on a Saturday too", "all", SAT, {}, ["k-1", "k24h-1"]),
    ("none: nobody on a Saturday", "none", SAT, {}, []),
    ("the registered 24-hour status decides, not the name", "24h", SAT, {K: True, K24: False}, ["k-1"]),
    ("a name is not a status: k24h-1 unregistered on a default site", "24h", SAT, {K24: None}, []),
]


@pytest.mark.parametrize(
    ("case", "policy", "day", "hours24", "reminded"), CLOSED_DAY_CASES, ids=[c[0] for c in CLOSED_DAY_CASES]
)
async def test_cleaning_on_days_the_hall_is_closed_follows_the_site_setting(
    store: Store, case: str, policy: str, day: tuple[int, int], hours24: dict[str, bool | None], reminded: list[str]
) -> None:
    """maintenance.clean_closed_days (docs/sla-settings.md): on a day the hall is closed the 24-hour area stays
    open and WZ 002:489 asks 「每天至少进行一次外部清洁」, so by default only the 24-hour devices are cleaned; which
    devices are 24-hour is what IT registered (devices.hours24); one nobody registered is not, whatever its name."""
    for key, on in hours24.items():
        async with store.engine.begin() as conn:
            await conn.execute(devices.update().where(devices.c.key == key).values(hours24=on))
    sites = Sites({"qp": SiteConfig(maintenance=MaintenancePolicy(clean_closed_days=policy))})
    notices = await check(store, at(*day, 17, 30), "clean", sites)
    assert sorted(n.device for n in notices) == reminded, case
