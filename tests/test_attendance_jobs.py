"""The consumer's own attendance jobs: A/B coverage notices to window management, locks at the deadline."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, datetime

import pytest
import sqlalchemy as sa

from broker.alerts.routing import AlertsConfig, Router
from broker.attendance.jobs import AttendanceJobs
from broker.attendance.roster import StaffMember, import_roster
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import attendance_locks, events, notifications
from protocol.clock import HALL_ZONE
from protocol.ids import uuid7

TUESDAY = date(2026, 11, 24)
SITES = Sites({"qp": SiteConfig()})  # default calendar: 09:00-12:00, 13:30-17:30
ALERTS = AlertsConfig.model_validate(
    {
        "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
        "recipients": {"wm": {"role": "window_management", "channel": "hook"}},
    }
)


def at(day: date, h: int, m: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, tzinfo=HALL_ZONE)


@pytest.fixture
async def jobs(store_url: str) -> AsyncIterator[AttendanceJobs]:
    store = await Store.open(store_url)
    members = [
        StaffMember("qp", "S1", "张三", "市监局", "W1", "A", TUESDAY),
        StaffMember("qp", "S2", "李四", "市监局", "W1", "B", TUESDAY),
        StaffMember("qp", "S3", "王五", "税务局", "W2", "A", TUESDAY),
    ]
    await import_roster(store, members, by="wm", at=at(TUESDAY, 8))
    try:
        yield AttendanceJobs(store, SITES, Router(ALERTS))
    finally:
        await store.close()


async def punch(store: Store, staff: str, when: datetime) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            events.insert().values(
                site="qp", device="att-1", id=uuid7(), type="attendance.punch", seq=int(when.timestamp()),
                boot_id="b", ts=when, clock_synced=True, replayed=False, received_at=when,
                data=json.dumps({"staff_id": staff, "method": "face"}),
            )
        )  # fmt: skip


async def test_window_management_hears_of_a_window_with_neither_post_at_work(jobs: AttendanceJobs) -> None:
    await punch(jobs.store, "S3", at(TUESDAY, 8, 50))  # W2's A post is in; W1 has nobody
    await jobs.tick(at(TUESDAY, 9, 20))  # before 09:30 nobody is judged yet
    assert await jobs.store.fetch(sa.select(notifications)) == []
    await jobs.tick(at(TUESDAY, 9, 40))
    await jobs.tick(at(TUESDAY, 10, 40))  # once a day, not every tick
    (n,) = await jobs.store.fetch(sa.select(notifications))
    assert (n.recipient, n.step, n.severity) == ("wm", "ab_uncovered", "major")
    assert "W1" in n.body and "W2" not in n.body


async def test_one_post_at_work_covers_the_window(jobs: AttendanceJobs) -> None:
    await punch(jobs.store, "S2", at(TUESDAY, 8, 55))  # the B post covers W1
    await punch(jobs.store, "S3", at(TUESDAY, 8, 56))
    await jobs.tick(at(TUESDAY, 9, 40))
    assert await jobs.store.fetch(sa.select(notifications)) == []


async def test_days_past_their_correction_deadline_are_locked_by_the_tick(jobs: AttendanceJobs) -> None:
    await punch(jobs.store, "S1", at(TUESDAY, 9, 12))  # late, never explained
    await punch(jobs.store, "S1", at(TUESDAY, 17, 40))
    await jobs.tick(at(date(2026, 11, 26), 12))  # Thursday noon: Tuesday's deadline (2 working days) not yet
    assert await jobs.store.fetch(sa.select(attendance_locks)) == []
    await jobs.tick(at(date(2026, 11, 27), 9, 0))  # after Thursday's close
    locked = {(r.staff_id, r.day, r.verdict) for r in await jobs.store.fetch(sa.select(attendance_locks))}
    assert locked == {("S1", TUESDAY, "late"), ("S2", TUESDAY, "absent"), ("S3", TUESDAY, "absent")}
