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
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE

TUESDAY = date(2026, 11, 24)
WEDNESDAY, THURSDAY, FRIDAY = date(2026, 11, 25), date(2026, 11, 26), date(2026, 11, 27)
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


async def test_window_management_hears_of_each_stretch_with_neither_post_at_the_window(jobs: AttendanceJobs) -> None:
    """QP 000:107, WZ 002:181: coverage is by time. W1's A and B are both away this morning (a gap even though
    both are back this afternoon); W2's A post is in."""
    await punch(jobs.store, "S3", at(TUESDAY, 8, 50))
    await jobs.tick(at(TUESDAY, 9, 10))  # 10 minutes uncovered: under ab.min_gap_min (15)
    assert await jobs.store.fetch(sa.select(notifications)) == []
    await jobs.tick(at(TUESDAY, 9, 20))  # 20 minutes: a gap
    await jobs.tick(at(TUESDAY, 10, 40))  # the same gap, still open: no second notice
    (n,) = await jobs.store.fetch(sa.select(notifications))
    assert (n.recipient, n.step, n.severity) == ("wm", "ab_uncovered", "major")
    assert "W1" in n.body and "W2" not in n.body and "09:00 起" in n.body
    # Both come in after lunch: this morning's gap stays what it was, and nothing new is said.
    await punch(jobs.store, "S1", at(TUESDAY, 13, 20))
    await punch(jobs.store, "S2", at(TUESDAY, 13, 25))
    await jobs.tick(at(TUESDAY, 14))
    assert len(await jobs.store.fetch(sa.select(notifications))) == 1
    # S1 signs out at 15:00, S2 goes at 16:00: a second gap from 16:00, told once it is 15 minutes long.
    await punch(jobs.store, "S1", at(TUESDAY, 15))
    await punch(jobs.store, "S2", at(TUESDAY, 16))
    await jobs.tick(at(TUESDAY, 16, 10))
    assert len(await jobs.store.fetch(sa.select(notifications))) == 1
    await jobs.tick(at(TUESDAY, 16, 20))
    second = (await jobs.store.fetch(sa.select(notifications).order_by(notifications.c.id)))[-1]
    assert "16:00 起" in second.body and "S1、S2" in second.body


async def test_one_post_at_work_covers_the_window(jobs: AttendanceJobs) -> None:
    await punch(jobs.store, "S2", at(TUESDAY, 8, 55))  # the B post covers W1
    await punch(jobs.store, "S3", at(TUESDAY, 8, 56))
    await jobs.tick(at(TUESDAY, 9, 40))
    assert await jobs.store.fetch(sa.select(notifications)) == []


async def test_days_past_their_correction_deadline_are_locked_by_the_tick(jobs: AttendanceJobs) -> None:
    """QP 000:43 locks at the deadline; an absence's deadline runs from the return to work (QP 000:40)."""
    await punch(jobs.store, "S1", at(TUESDAY, 9, 12))  # late, never explained
    await punch(jobs.store, "S1", at(TUESDAY, 17, 40))
    await punch(jobs.store, "S2", at(THURSDAY, 8, 55))  # S2 away Tuesday and Wednesday, back on Thursday
    await punch(jobs.store, "S2", at(THURSDAY, 17, 35))
    await jobs.tick(at(THURSDAY, 12))  # Thursday noon: Tuesday's deadline (2 working days) not yet
    assert await jobs.store.fetch(sa.select(attendance_locks)) == []
    await jobs.tick(at(FRIDAY, 9, 0))  # after Thursday's close
    assert await locked(jobs) == {("S1", TUESDAY, "late")}, "S2 back Thursday, S3 not back: both may still explain"
    await jobs.tick(at(date(2026, 12, 1), 9, 0))  # after Monday's close: S2's two working days since Thursday
    assert await locked(jobs) == {
        ("S1", TUESDAY, "late"),
        ("S2", TUESDAY, "absent"),
        ("S2", WEDNESDAY, "absent"),
    }, "S1 (away since Wednesday) and S3 (never came) are not back: their absences stay open"


async def locked(jobs: AttendanceJobs) -> set[tuple[str, date, str]]:
    return {(r.staff_id, r.day, r.verdict) for r in await jobs.store.fetch(sa.select(attendance_locks))}
