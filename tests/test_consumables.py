"""Consumable levels, refills and restock planning (broker/rules/consumables.py) against both stores.

The site is the default one: Asia/Shanghai, Monday to Friday 09:00-12:00 and 13:30-17:30, PRC holidays;
``k24h-1`` is registered as a 24-hour device (devices.hours24, as ``hallfleet provision sync`` writes it), not
named one. The week is 23-27 November 2026 (Monday to Friday).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from broker.rules.consumables import LevelReading, plan_restock, record_levels, record_refill
from broker.rules.notices import Notice
from broker.sites import ConsumablesPolicy, SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import consumable_levels, devices, events, service_records, tasks
from protocol.events import KioskConsumable, KioskUsage
from protocol.ids import uuid7

SH = ZoneInfo("Asia/Shanghai")
SITES = Sites({})
MON, TUE, WED, THU = 23, 24, 25, 26
_seq = itertools.count(1)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=SH)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    try:
        yield s
    finally:
        await s.close()


async def add_device(store: Store, device: str, hours24: bool | None = None) -> str:
    """A kiosk in service; ``hours24`` its registered 24-hour status (None: nobody registered it)."""
    row = {"key": f"qp/{device}", "site": "qp", "device": device, "role": "kiosk", "first_seen": at(1, 8)}
    async with store.engine.begin() as conn:
        await conn.execute(devices.insert().values(**row, hours24=hours24))
    return f"qp/{device}"


def _event(device: str, type_: str, data: str, ts: datetime) -> dict[str, Any]:
    return {
        "site": "qp",
        "device": device,
        "id": uuid7(),
        "type": type_,
        "seq": next(_seq),
        "boot_id": "b1",
        "ts": ts,
        "clock_synced": True,
        "replayed": False,
        "received_at": ts,
        "data": data,
    }


async def usage(store: Store, device: str, points: list[tuple[datetime, int]]) -> None:
    rows = [_event(device, "kiosk.usage", KioskUsage(counters={"tickets": n}).model_dump_json(), t) for t, n in points]
    async with store.engine.begin() as conn:
        await conn.execute(events.insert(), rows)


async def reading(store: Store, device: str, consumable: str, state: str, pct: float | None, t: datetime) -> None:
    """What the consumer does with a kiosk.consumable event: store it, then record the level, in one batch."""
    payload = KioskConsumable(consumable=consumable, state=state, level_pct=pct)
    async with store.engine.begin() as conn:
        await conn.execute(events.insert(), [_event(device, "kiosk.consumable", payload.model_dump_json(), t)])
        await record_levels(conn, [LevelReading(f"qp/{device}", "qp", device, consumable, state, pct, t)])


async def plan(store: Store, now: datetime, sites: Sites = SITES) -> list[Notice]:
    async with store.engine.begin() as conn:
        return await plan_restock(conn, now, sites)


async def level_row(store: Store, key: str, consumable: str) -> Any:
    c = consumable_levels.c
    rows = await store.fetch(sa.select(consumable_levels).where(c.key == key, c.consumable == consumable))
    return rows[0]


async def task_rows(store: Store) -> list[Any]:
    return await store.fetch(sa.select(tasks).order_by(tasks.c.created_at, tasks.c.key))


async def refill_records(store: Store) -> list[Any]:
    return await store.fetch(sa.select(service_records).where(service_records.c.kind == "refill"))


# -- forecasts ----------------------------------------------------------------------------------------------
async def test_toner_forecast_counts_opening_hours_across_the_night(store: Store) -> None:
    """GIVEN toner falling 1 % per opening hour (flat overnight and at lunch), 10 % left at Tuesday 15:30
    WHEN planning THEN it runs out after 10 more opening hours, Thursday 10:00, and a task is due by 09:00."""
    key = await add_device(store, "k-1")
    series = [
        (at(MON, 9), 22), (at(MON, 10), 21), (at(MON, 11), 20), (at(MON, 12), 19), (at(MON, 13, 30), 19),
        (at(MON, 14, 30), 18), (at(MON, 15, 30), 17), (at(MON, 16, 30), 16), (at(MON, 17, 30), 15),
        (at(MON, 20), 15), (at(TUE, 8), 15), (at(TUE, 9), 15), (at(TUE, 10), 14), (at(TUE, 11), 13),
        (at(TUE, 12), 12), (at(TUE, 13, 30), 12), (at(TUE, 14, 30), 11), (at(TUE, 15, 30), 10),
    ]  # fmt: skip
    for t, pct in series:
        await reading(store, "k-1", "toner:black", "ok", pct, t)

    notices = await plan(store, at(TUE, 15, 30))

    assert (await level_row(store, key, "toner:black")).empty_forecast == at(THU, 10)
    (task,) = await task_rows(store)
    assert (task.kind, task.item, task.due_at) == ("restock", "toner:black", at(THU, 9))
    (n,) = notices
    assert (n.ref, n.step, n.kind, n.severity) == (f"task:{task.id}", "restock", "restock", "minor")
    assert (n.site, n.device, n.device_class) == ("qp", "k-1", "kiosk")
    assert "硒鼓（黑色）余量 10%，预计 2026-11-26 10:00 用完" in n.summary_zh
    assert task.reason == n.summary_zh


async def test_toner_forecast_of_a_24h_kiosk_counts_wall_clock_and_is_due_before_staff_leave(store: Store) -> None:
    """GIVEN a 24-hour kiosk's toner falling 1 %/hour around the clock, 10 % at Tuesday 15:30
    WHEN planning THEN it runs out at 01:30 that night, and the task is due when staff leave, 17:30."""
    key = await add_device(store, "k24h-1", hours24=True)
    for h in range(11):
        await reading(store, "k24h-1", "toner:black", "ok", 20 - h, at(TUE, 5 + h, 30))

    await plan(store, at(TUE, 15, 30))

    assert (await level_row(store, key, "toner:black")).empty_forecast == at(WED, 1, 30)
    (task,) = await task_rows(store)
    assert task.due_at == at(TUE, 17, 30)


async def test_24h_kiosk_that_would_run_dry_before_staff_return_gets_a_task_now(store: Store) -> None:
    """GIVEN toner at 40 % (not low) falling 3 % per counted hour on a 24-hour kiosk and on an ordinary one,
    at Tuesday 16:00 WHEN planning THEN the 24-hour one, dry at 05:20 before staff are in (Wed 09:00), gets a
    task due before staff leave; the ordinary one, which only prints while the hall is open and lasts
    until Thursday afternoon, gets none."""
    k24 = await add_device(store, "k24h-1", hours24=True)
    k = await add_device(store, "k-2")
    for h in range(11):
        await reading(store, "k24h-1", "toner:black", "ok", 70 - 3 * h, at(TUE, 6 + h))
    for t, pct in [(at(TUE, 9), 56.5), (at(TUE, 12), 47.5), (at(TUE, 13, 30), 47.5), (at(TUE, 16), 40)]:
        await reading(store, "k-2", "toner:black", "ok", pct, t)

    notices = await plan(store, at(TUE, 16))

    assert (await level_row(store, k24, "toner:black")).empty_forecast == at(WED, 5, 20)
    assert (await level_row(store, k, "toner:black")).empty_forecast == at(THU, 15, 20)
    (task,) = await task_rows(store)
    assert (task.key, task.due_at) == (k24, at(TUE, 17, 30))
    (n,) = notices
    assert n.facts["why"] == "unstaffed"
    assert "早于下次有人值守的 2026-11-25 09:00" in n.summary_zh


def _usage_24h(until: datetime, per_half_hour: int = 10) -> list[tuple[datetime, int]]:
    """A day of ticket counts every 30 minutes up to ``until`` (20 an hour)."""
    start = until.timestamp() - 86400
    return [(datetime.fromtimestamp(start + i * 1800, SH), i * per_half_hour) for i in range(49)]


async def test_thermal_paper_low_24h_kiosk_due_before_staff_leave_ordinary_kiosk_after_next_opening(
    store: Store,
) -> None:
    """GIVEN thermal paper that read low at 15:30 on Tuesday, 10 receipts printed since, 230 receipts after
    near-end, 20 tickets per counted hour WHEN planning at 16:00 THEN the 24-hour kiosk runs dry at 03:00 and
    its task is due before staff leave (17:30); the ordinary kiosk lasts 11 opening hours, to Thursday 11:30,
    and its task is due Thursday 10:30, not before the next opening."""
    sites = Sites({"qp": SiteConfig(consumables=ConsumablesPolicy(receipts_after_near_end=230))})
    k24 = await add_device(store, "k24h-1", hours24=True)
    k = await add_device(store, "k-2")
    await usage(store, "k24h-1", _usage_24h(at(TUE, 16)))
    await usage(
        store,
        "k-2",
        [
            (at(MON, 9), 0), (at(MON, 12), 60), (at(MON, 13, 30), 60), (at(MON, 17, 30), 140), (at(TUE, 9), 140),
            (at(TUE, 12), 200), (at(TUE, 13, 30), 200), (at(TUE, 15, 30), 240), (at(TUE, 16), 250),
        ],
    )  # fmt: skip
    for device in ("k24h-1", "k-2"):
        await reading(store, device, "thermal_paper", "low", None, at(TUE, 15, 30))

    notices = await plan(store, at(TUE, 16), sites)

    assert (await level_row(store, k24, "thermal_paper")).usage_at_low == 470
    assert (await level_row(store, k24, "thermal_paper")).empty_forecast == at(WED, 3)
    assert (await level_row(store, k, "thermal_paper")).empty_forecast == at(THU, 11, 30)
    due = {t.key: t.due_at for t in await task_rows(store)}
    assert due == {k24: at(TUE, 17, 30), k: at(THU, 10, 30)}
    by_device = {n.device: n for n in notices}
    assert "热敏纸预计 2026-11-25 03:00 用完，请在 2026-11-24 17:30 前补充" in by_device["k24h-1"].summary_zh
    assert by_device["k-2"].severity == "minor"


async def test_thermal_paper_low_at_20h_on_a_24h_kiosk_is_due_before_it_runs_dry(store: Store) -> None:
    """GIVEN a 24-hour kiosk whose paper read low at 19:30, staff gone since 17:30, 140 receipts left at
    20 an hour WHEN planning at 20:00 THEN a task opens now, due 02:18 (a tenth of the 7 hours left) before
    it runs dry at 03:00: nobody is staffed before then, so whoever is on call has to go."""
    key = await add_device(store, "k24h-1", hours24=True)
    await usage(store, "k24h-1", _usage_24h(at(TUE, 20)))
    await reading(store, "k24h-1", "thermal_paper", "low", None, at(TUE, 19, 30))

    notices = await plan(store, at(TUE, 20))

    assert (await level_row(store, key, "thermal_paper")).empty_forecast == at(WED, 3)
    (task,) = await task_rows(store)
    assert task.due_at == at(WED, 2, 18)
    assert [n.step for n in notices] == ["restock"]


async def test_no_usage_history_means_no_forecast_but_low_still_raises_a_task(store: Store) -> None:
    """GIVEN thermal paper low with no usage counts at all, and toner with a single reading WHEN planning
    THEN neither has a forecast (no invented numbers); the low paper gets a task due by the end of the
    working day, the toner none."""
    key = await add_device(store, "k-1")
    await reading(store, "k-1", "thermal_paper", "low", None, at(TUE, 10))
    await reading(store, "k-1", "toner:black", "ok", 50, at(TUE, 10))

    notices = await plan(store, at(TUE, 10, 5))

    assert (await level_row(store, key, "thermal_paper")).empty_forecast is None
    assert (await level_row(store, key, "toner:black")).empty_forecast is None
    (task,) = await task_rows(store)
    assert (task.item, task.due_at) == ("thermal_paper", at(TUE, 17, 30))
    (n,) = notices
    assert "无法预测" in n.summary_zh and "预计" not in n.summary_zh
    assert n.facts["empty_forecast"] is None


async def test_empty_consumable_raises_a_major_task(store: Store) -> None:
    await add_device(store, "k-1")
    await reading(store, "k-1", "a4_paper:main", "empty", 0, at(TUE, 10))

    (n,) = await plan(store, at(TUE, 10, 5))

    assert (n.severity, n.facts["consumable"]) == ("major", "a4_paper:main")
    assert "A4纸（主纸盒）已用完" in n.summary_zh  # the tray by its PWG name in words


async def test_waste_receptacle_is_not_restocked(store: Store) -> None:
    """A waste-toner box at 5 % is nearly empty, which is good: it fills up and is emptied, not restocked."""
    await add_device(store, "k-1")
    await reading(store, "k-1", "waste:black", "ok", 5, at(TUE, 10))

    assert await plan(store, at(TUE, 10, 5)) == []
    assert await task_rows(store) == []


# -- levels -------------------------------------------------------------------------------------------------
async def test_out_of_order_reading_is_ignored(store: Store) -> None:
    """GIVEN a reading of 50 % at 10:00 WHEN an older one (80 %, 09:00) arrives late THEN the level stays
    50 % of 10:00, and the apparent rise is no refill."""
    key = await add_device(store, "k-1")
    await reading(store, "k-1", "toner:black", "ok", 50, at(TUE, 10))
    await reading(store, "k-1", "toner:black", "ok", 80, at(TUE, 9))

    row = await level_row(store, key, "toner:black")
    assert (row.level_pct, row.updated_at) == (50, at(TUE, 10))
    assert await refill_records(store) == []

    await reading(store, "k-1", "toner:black", "ok", 49, at(TUE, 11))
    assert (await level_row(store, key, "toner:black")).level_pct == 49


@pytest.mark.parametrize(
    ("consumable", "low", "refilled"),
    [("toner:black", ("low", 8.0), ("ok", 100.0)), ("thermal_paper", ("low", None), ("ok", None))],
)
async def test_refill_seen_in_the_level_is_recorded_and_closes_the_task(
    store: Store, consumable: str, low: tuple[str, float | None], refilled: tuple[str, float | None]
) -> None:
    key = await add_device(store, "k-1")
    await reading(store, "k-1", consumable, *low, at(TUE, 10))
    assert (await level_row(store, key, consumable)).low_since == at(TUE, 10)
    assert len(await plan(store, at(TUE, 10, 5))) == 1

    await reading(store, "k-1", consumable, *refilled, at(TUE, 11))

    (task,) = await task_rows(store)
    assert (task.state, task.done_by, task.done_at, task.open_key) == ("done", "device", at(TUE, 11), None)
    (rec,) = await refill_records(store)
    assert (rec.key, rec.item, rec.by, rec.at) == (key, consumable, "device", at(TUE, 11))
    assert rec.note == "detected from the level"
    assert (await level_row(store, key, consumable)).low_since is None
    assert await plan(store, at(TUE, 11, 5)) == []


async def test_level_wobbling_across_the_low_threshold_is_not_a_refill(store: Store) -> None:
    await add_device(store, "k-1")
    await reading(store, "k-1", "toner:black", "low", 14, at(TUE, 10))
    await reading(store, "k-1", "toner:black", "ok", 16, at(TUE, 10, 1))

    assert await refill_records(store) == []


# -- tasks: once, overdue, refilled by a person ---------------------------------------------------------------
async def test_a_task_opens_once_however_often_planning_runs(store: Store) -> None:
    await add_device(store, "k-1")
    await reading(store, "k-1", "thermal_paper", "low", None, at(TUE, 10))

    first = await plan(store, at(TUE, 10, 5))
    second = await plan(store, at(TUE, 10, 10))

    assert [n.step for n in first] == ["restock"] and second == []
    assert len(await task_rows(store)) == 1


@pytest.mark.postgres
async def test_concurrent_planners_open_one_task(pg_url: str) -> None:
    """GIVEN two consumers planning at once on PostgreSQL WHEN the second runs while the first's transaction
    (with the new task) is still open THEN the second waits for it and opens nothing: one task, one notice."""
    store = await Store.open(pg_url)
    try:
        await add_device(store, "k-1")
        await reading(store, "k-1", "thermal_paper", "low", None, at(TUE, 10))
        async with store.engine.begin() as conn:
            first = await plan_restock(conn, at(TUE, 10, 5), SITES)
            second = asyncio.create_task(plan(store, at(TUE, 10, 5)))
            await _until_waiting_on_a_lock(store, second)
        assert len(first) == 1
        assert await asyncio.wait_for(second, 10) == []
        assert len(await task_rows(store)) == 1
    finally:
        await store.close()


async def _until_waiting_on_a_lock(store: Store, other: asyncio.Task[Any]) -> None:
    query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    for _ in range(1000):
        assert not other.done(), "the second planner finished while the first one's task was uncommitted"
        if await store.scalar(query):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the second planner never waited for the first")


async def test_overdue_task_notifies_once(store: Store) -> None:
    await add_device(store, "k-1")
    await reading(store, "k-1", "thermal_paper", "low", None, at(TUE, 10))
    await plan(store, at(TUE, 10, 5))  # due by the end of the working day, 17:30

    assert await plan(store, at(TUE, 17, 30)) == []
    (n,) = await plan(store, at(TUE, 17, 31))
    again = await plan(store, at(TUE, 17, 45))

    (task,) = await task_rows(store)
    assert (n.ref, n.step, n.severity) == (f"task:{task.id}", "restock_overdue", "major")
    assert "热敏纸补充已超期" in n.summary_zh
    assert again == [] and task.overdue_notified


async def test_refill_recorded_by_a_person_closes_the_task_and_is_not_reopened_by_the_stale_level(
    store: Store,
) -> None:
    key = await add_device(store, "k-1")
    await reading(store, "k-1", "thermal_paper", "low", None, at(TUE, 10))
    await plan(store, at(TUE, 10, 5))

    async with store.engine.begin() as conn:
        closed = await record_refill(conn, key, "thermal_paper", by="zhang.san", at=at(TUE, 10, 30), note="新纸卷")
        again = await record_refill(conn, key, "thermal_paper", by="zhang.san", at=at(TUE, 10, 31))

    assert (closed, again) == (True, False)
    (task,) = await task_rows(store)
    assert (task.state, task.done_by) == ("done", "zhang.san")
    assert [(r.by, r.note) for r in await refill_records(store)] == [("zhang.san", "新纸卷"), ("zhang.san", "")]
    assert await plan(store, at(TUE, 10, 40)) == []  # the device has not read the new roll yet

    await reading(store, "k-1", "thermal_paper", "low", None, at(TUE, 16))  # a later low is a new task
    assert [n.step for n in await plan(store, at(TUE, 16, 5))] == ["restock"]
