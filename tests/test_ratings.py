"""好差评 at the centre, on both stores: proxy-rating patterns flagged (and honest sequences not), negative-rating
follow-ups with working-day deadlines and one notice per missed deadline, pause alerts during opening hours only
and not while the window's B post is at work, the monthly rates against SJ's 100 % targets, and the CLI."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import openpyxl
import pytest
import sqlalchemy as sa

import hallfleet.cli
from broker.alerts.routing import AlertsConfig, RouteConfig, Router
from broker.attendance.roster import StaffMember, import_roster
from broker.ratings import followups as fu
from broker.ratings.jobs import RatingJobs
from broker.ratings.model import ratings_between, ratings_of
from broker.ratings.policy import RatingPolicy, policy_of
from broker.ratings.proxy import detect, review
from broker.ratings.report import build_report, write_csv, write_xlsx
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import audit_log, events, notifications, rating_flags, rating_followups
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE
from tests.support.procs import write_toml

SITE = "qp"
NAME = "青浦区政务服务中心"
SITES = Sites({SITE: SiteConfig(name=NAME)})  # default calendar: Mon-Fri 09:00-12:00, 13:30-17:30
TUE, WED, FRI = date(2026, 11, 24), date(2026, 11, 25), date(2026, 11, 27)
# The route the integrator adds to the defaults: rating pads' notices go to window management.
RATING_ROUTE = RouteConfig(
    device_classes=["rating"],
    steps=["negative", "proxy_suspect", "reply_overdue", "rectify_overdue", "pad_paused"],
    roles=["window_management"],
)
ALERTS = AlertsConfig.model_validate(
    {
        "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
        "recipients": {"wm": {"role": "window_management", "channel": "hook"}},
        "routes": [r.model_dump() for r in [*AlertsConfig().routes, RATING_ROUTE]],
    }
)


def at(day: date, h: int, m: int = 0, s: float = 0) -> datetime:
    return datetime(day.year, day.month, day.day, h, m, tzinfo=HALL_ZONE) + timedelta(seconds=s)


def rating(
    when: datetime,
    level: int = 5,
    *,
    window: str = "W1",
    staff: str = "S1",
    service: str | None = "auto",
    delay: float | None = 8.0,
    pad_state: str = "awaiting",
    since_key: float | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    data = {
        "window": window,
        "staff_id": staff,
        "service_id": f"T{when:%H%M%S}" if service == "auto" else service,
        "level": level,
        "delay_s": delay,
        "pad_state": pad_state,
        "since_staff_key_s": since_key,
    }
    return _event("rating.submitted", when, device or f"pad-{window.lower()}", data)


def pad(when: datetime, state: str, *, window: str = "W1", staff: str | None = "S1") -> dict[str, Any]:
    data = {"window": window, "state": state, "staff_id": staff, "service_id": None}
    return _event("rating.pad_state", when, f"pad-{window.lower()}", data)


def punch(when: datetime, staff: str) -> dict[str, Any]:
    return _event("attendance.punch", when, "att-1", {"staff_id": staff, "method": "face"})


def _event(kind: str, when: datetime, device: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "site": SITE, "device": device, "id": uuid7(), "type": kind, "seq": int(when.timestamp() * 1000),
        "boot_id": "b", "ts": when, "clock_synced": True, "replayed": False, "received_at": when,
        "data": json.dumps(data),
    }  # fmt: skip


async def insert(store: Store, *rows: dict[str, Any]) -> list[str]:
    async with store.engine.begin() as conn:
        await conn.execute(events.insert(), list(rows))
    return [r["id"] for r in rows]


async def rows(store: Store, table: sa.Table, *where: Any) -> list[Any]:
    return await store.fetch(sa.select(table).where(*where))


async def sent(store: Store, step: str) -> list[Any]:
    return await rows(store, notifications, notifications.c.step == step)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def jobs(store: Store) -> RatingJobs:
    return RatingJobs(store, SITES, Router(ALERTS))


async def flagged(store: Store) -> set[tuple[str, str]]:
    return {(r.event_id, r.pattern) for r in await rows(store, rating_flags)}


# -- proxy ratings ---------------------------------------------------------------------------------------
async def test_each_proxy_pattern_is_flagged_with_its_reason(store: Store, jobs: RatingJobs) -> None:
    # Each case on its own pad, minutes apart, so that only its own pattern can match.
    (paused,) = await insert(store, rating(at(TUE, 9, 10), window="W1", pad_state="paused"))
    (no_ticket,) = await insert(store, rating(at(TUE, 9, 20), window="W2", service=None))
    (idle,) = await insert(store, rating(at(TUE, 9, 30), window="W3", pad_state="idle"))
    (fast,) = await insert(store, rating(at(TUE, 9, 40), window="W4", delay=0.3))
    (key,) = await insert(store, rating(at(TUE, 9, 50), window="W5", since_key=2.0))
    # Five ratings in 40 s on one pad, different people and levels; four 非常满意 for S9 in 30 s on another.
    burst = await insert(
        store, *(rating(at(TUE, 10, 0, 10 * i), level=3 + i % 3, window="W6", staff=f"S{i}") for i in range(5))
    )
    top = await insert(store, *(rating(at(TUE, 10, 30, 10 * i), window="W7", staff="S9") for i in range(4)))
    # An idle pad's rating without a service: the service that ended 45 s earlier was rated already; and one
    # coming a quarter of an hour after the last service ended.
    (rated_again,) = (
        await insert(
            store,
            rating(at(TUE, 11), window="W8"),
            rating(at(TUE, 11, 0, 40), window="W8", service=None, pad_state="idle", delay=45.0),
        )
    )[1:]
    (long_after,) = await insert(store, rating(at(TUE, 11, 30), window="W9", service=None, pad_state="idle", delay=900))

    await jobs.tick(at(TUE, 11, 35))

    expected = {(paused, "paused"), (no_ticket, "no_service"), (idle, "no_service"), (fast, "too_fast")}
    expected |= {(rated_again, "no_service"), (long_after, "no_service")}
    expected |= {(key, "staff_key")} | {(e, "burst") for e in burst} | {(e, "burst_top") for e in top}
    assert await flagged(store) == expected
    details = {r.event_id + r.pattern: r.detail for r in await rows(store, rating_flags)}
    assert "暂停服务" in details[paused + "paused"]
    assert "未关联票号或办件编号" in details[no_ticket + "no_service"]
    assert "空闲" in details[idle + "no_service"]
    assert "0.3 秒" in details[fast + "too_fast"]
    assert "2.0 秒" in details[key + "staff_key"]
    assert "40 秒内收到 5 条评价" in details[burst[0] + "burst"]
    assert "S9" in details[top[0] + "burst_top"] and "4 个非常满意" in details[top[0] + "burst_top"]
    notices = await sent(store, "proxy_suspect")
    assert sorted(json.loads(n.data)["window"] for n in notices) == [f"W{i}" for i in range(1, 10)]
    assert all(n.recipient == "wm" for n in notices)


async def test_honest_sequences_are_not_flagged(store: Store, jobs: RatingJobs) -> None:
    honest = [
        # a morning at one window: a rating every few minutes, each a few seconds after its service ended
        *(rating(at(TUE, 9, 5 + 4 * i), level=5 - i % 3, delay=3.0 + i, since_key=60.0 + i) for i in range(12)),
        # a fast pick-up window: three ratings within a minute is at the limit, not over it
        *(rating(at(TUE, 10, 0, 25 * i), window="W2", staff="S2") for i in range(3)),
        # two more windows as busy in the same minute: bursts are counted per pad, not per hall
        *(rating(at(TUE, 10, 0, 5 + 25 * i), window=w, staff=w) for i in range(3) for w in ("W4", "W5")),
        # at the thresholds themselves: 1.0 s after the service, 5.0 s after a staff key
        rating(at(TUE, 11, 0), window="W3", delay=1.0, since_key=5.0),
        # the pad lost its link to the queue system but the rating is bound to a service
        rating(at(TUE, 11, 10), window="W3", pad_state="offline"),
        # no delay or staff-key timing reported at all
        rating(at(TUE, 11, 20), window="W3", delay=None, since_key=None),
        # a pad on its own staff keys: the 办结 key ended the service 3 s before the citizen rated
        rating(at(TUE, 11, 40), window="W3", delay=3.0, since_key=3.0),
        # the pad's prompt timed out and the citizen rated 90 s after the service ended: that service's late
        # rating (the one before it, at 14:00, rated the previous service)
        rating(at(TUE, 14), window="W6"),
        rating(at(TUE, 14, 11, 30), window="W6", service=None, pad_state="idle", delay=90.0),
    ]
    await insert(store, *honest)
    await jobs.tick(at(TUE, 11, 30))
    assert await flagged(store) == set()
    assert await sent(store, "proxy_suspect") == []


async def test_a_burst_arriving_over_two_ticks_is_flagged_once_complete(store: Store, jobs: RatingJobs) -> None:
    first = await insert(store, *(rating(at(TUE, 10, 0, 10 * i), staff="S1") for i in range(2)))
    await jobs.tick(at(TUE, 10, 1))
    await jobs.tick(at(TUE, 10, 15))  # the first two are behind the job's cursor now
    assert await flagged(store) == set()
    # Two more from the same pad, delivered late (the pad was offline): four 非常满意 for S1 within 30 s.
    late = [rating(at(TUE, 10, 0, 20 + 10 * i), staff="S1") for i in range(2)]
    for row in late:
        row["received_at"] = at(TUE, 10, 20)
    second = await insert(store, *late)
    await jobs.tick(at(TUE, 10, 21))
    assert await flagged(store) == {(e, "burst_top") for e in first + second}


async def test_an_idle_rating_delivered_late_is_judged_against_the_pads_earlier_ratings(
    store: Store, jobs: RatingJobs
) -> None:
    await insert(store, rating(at(TUE, 10, 0, 30)))  # the service that ended at 10:00 was rated at 10:00:30
    await jobs.tick(at(TUE, 10, 1))
    await jobs.tick(at(TUE, 10, 15))
    again = rating(at(TUE, 10, 4), service=None, pad_state="idle", delay=240.0)  # "late" for the same service
    again["received_at"] = at(TUE, 10, 20)
    (event,) = await insert(store, again)
    await jobs.tick(at(TUE, 10, 21))
    assert await flagged(store) == {(event, "no_service")}


def test_burst_limits_follow_the_site_policy() -> None:
    five = ratings_of(SimpleNamespace(**rating(at(TUE, 10, 0, 10 * i), level=4)) for i in range(5))
    assert detect(five, RatingPolicy(burst_count=5)) == []
    assert detect(five, RatingPolicy(burst_count=4, burst_window_s=30)) == []  # no 30 s holds more than 4
    assert {(f.pattern, f.rating.event_id) for f in detect(five, RatingPolicy(burst_count=4))} == {
        ("burst", r.event_id) for r in five
    }


def test_the_policy_refuses_levels_that_cannot_be_negative() -> None:
    assert RatingPolicy().negative_levels == [1, 2]
    assert RatingPolicy(negative_levels=[3, 1]).negative_levels == [1, 3]
    with pytest.raises(ValueError, match=r"5 \(非常满意\) cannot be a negative level"):
        RatingPolicy(negative_levels=[4, 5])
    with pytest.raises(ValueError, match=r"\[0\] are not rating levels"):
        RatingPolicy(negative_levels=[0, 1])
    assert policy_of(SiteConfig()) == RatingPolicy()  # until SiteConfig has its ratings section


# -- follow-ups ------------------------------------------------------------------------------------------
async def test_negative_ratings_open_one_followup_each_due_after_the_weekend(store: Store, jobs: RatingJobs) -> None:
    real, anonymous, _fair = await insert(
        store,
        rating(at(FRI, 16), level=1, service="T-1001"),
        rating(at(FRI, 16, 5), level=2, window="W2", service=None),
        rating(at(FRI, 16, 10), level=3, window="W3"),
    )
    await jobs.tick(at(FRI, 16, 15))
    await jobs.tick(at(FRI, 16, 20))
    await RatingJobs(store, SITES, Router(ALERTS)).tick(at(FRI, 16, 25))  # a restarted consumer reads back
    opened = {r.event_id: r for r in await rows(store, rating_followups)}
    assert set(opened) == {real, anonymous}
    # Friday 16:00 + 2 working days: Monday, Tuesday -> Tuesday's close; the anonymous one owes no reply.
    assert opened[real].reply_due == at(date(2026, 12, 1), 17, 30)
    assert (opened[real].real_name, opened[anonymous].real_name, opened[anonymous].reply_due) == (True, False, None)
    assert len(await sent(store, "negative")) == 2

    await jobs.tick(at(date(2026, 12, 1), 17, 29))
    assert await sent(store, "reply_overdue") == []
    await jobs.tick(at(date(2026, 12, 1), 17, 31))
    await jobs.tick(at(date(2026, 12, 2), 9, 30))
    (late,) = await sent(store, "reply_overdue")
    assert (
        json.loads(late.data)["event"] == real and late.severity == "major" and "未在 12-01 17:30 前回复" in late.body
    )

    # Judged objective on Monday: rectified by the close of the 10th working day after Friday (Dec 11).
    await fu.classify(store, SITES, real[:24], True, by="王科长", at=at(date(2026, 11, 30), 10))
    (row,) = await rows(store, rating_followups, rating_followups.c.event_id == real)
    assert row.rectify_due == at(date(2026, 12, 11), 17, 30)
    await jobs.tick(at(date(2026, 12, 11), 17, 0))
    assert await sent(store, "rectify_overdue") == []
    await jobs.tick(at(date(2026, 12, 11), 17, 31))
    await jobs.tick(at(date(2026, 12, 14), 9, 30))
    assert len(await sent(store, "rectify_overdue")) == 1


async def test_a_reply_and_a_rectification_are_recorded_once_and_audited(store: Store, jobs: RatingJobs) -> None:
    (event,) = await insert(store, rating(at(TUE, 10), level=1))
    await jobs.tick(at(TUE, 10, 5))
    row = await fu.reply(
        store, SITES, event[:24], "已电话致歉并说明材料要求", by="王科长", at=at(TUE, 15), objective=False
    )
    assert (row.replied_by, row.objective, row.rectify_due) == ("王科长", False, None)
    with pytest.raises(fu.FollowupError, match="answered already"):
        await fu.reply(store, SITES, event, "again", by="x", at=at(TUE, 16))
    with pytest.raises(fu.FollowupError, match="not objective"):
        await fu.rectify(store, SITES, event, "改了", by="x", at=at(TUE, 16))
    await fu.classify(store, SITES, event, True, by="王科长", at=at(WED, 9))
    row = await fu.rectify(store, SITES, event, "增设材料清单提示", by="李主任", at=at(WED, 10))
    assert (row.objective, row.rectified_by, row.rectify_text) == (True, "李主任", "增设材料清单提示")
    actions = [r.action for r in await store.fetch(sa.select(audit_log).order_by(audit_log.c.id))]
    assert actions == ["rating.reply", "rating.classify", "rating.classify", "rating.rectify"]


@pytest.mark.postgres
async def test_jobs_running_concurrently_open_each_followup_and_flag_once(pg_url: str) -> None:
    stores = [await Store.open(pg_url) for _ in range(3)]
    try:
        ids = await insert(
            stores[0],
            *(rating(at(TUE, 9, 2 * i), level=1 + i % 2, window=f"W{i}", pad_state="paused") for i in range(20)),
        )
        for _ in range(2):
            runners = [RatingJobs(s, SITES, Router(ALERTS)) for s in stores]
            await asyncio.gather(*(j.tick(at(TUE, 10)) for j in runners))
        assert {r.event_id for r in await rows(stores[0], rating_followups)} == set(ids)
        assert len(await rows(stores[0], rating_followups)) == 20
        assert await flagged(stores[0]) == {(e, "paused") for e in ids}
        assert len(await sent(stores[0], "negative")) == 20
        assert len(await sent(stores[0], "proxy_suspect")) == 20  # one window each
        # Every reply deadline passed (Thursday's close): each is announced by exactly one of them.
        runners = [RatingJobs(s, SITES, Router(ALERTS)) for s in stores]
        claimed = await asyncio.gather(*(j.announce_overdue(at(date(2026, 11, 27), 9)) for j in runners))
        assert sum(claimed) == 20
        assert len(await sent(stores[0], "reply_overdue")) == 20
    finally:
        for s in stores:
            await s.close()


# -- pauses ----------------------------------------------------------------------------------------------
async def test_a_pad_paused_too_long_in_opening_hours_alerts_once_per_pause(store: Store, jobs: RatingJobs) -> None:
    await insert(store, pad(at(TUE, 9, 50), "awaiting"), pad(at(TUE, 10), "paused"))
    await jobs.tick(at(TUE, 10, 14))
    assert await sent(store, "pad_paused") == []
    await jobs.tick(at(TUE, 10, 16))
    await jobs.tick(at(TUE, 10, 30))
    (n,) = await sent(store, "pad_paused")
    assert (n.recipient, n.severity) == ("wm", "major")
    assert "W1 窗口评价器" in n.body and "暂停服务" in n.body and "未登记 B 岗" in n.body
    # Back, then paused again: a new pause, a new notice.
    await insert(store, pad(at(TUE, 10, 40), "serving"), pad(at(TUE, 11), "please_wait"))
    await jobs.tick(at(TUE, 11, 10))
    assert len(await sent(store, "pad_paused")) == 1
    await jobs.tick(at(TUE, 11, 16))
    assert len(await sent(store, "pad_paused")) == 2


async def test_pause_time_counts_only_while_the_hall_is_open(store: Store, jobs: RatingJobs) -> None:
    await insert(store, pad(at(TUE, 11, 50), "paused"))
    await jobs.tick(at(TUE, 12, 40))  # 50 minutes, but the hall closed at 12:00
    await jobs.tick(at(TUE, 13, 34))  # 10 + 4 minutes of opening time
    assert await sent(store, "pad_paused") == []
    await jobs.tick(at(TUE, 13, 36))
    assert len(await sent(store, "pad_paused")) == 1

    await insert(store, pad(at(TUE, 17, 20), "paused", window="W2"))
    await jobs.tick(at(TUE, 21))  # the night: closed
    await jobs.tick(at(WED, 9, 4))  # 10 minutes yesterday + 4 this morning
    assert len(await sent(store, "pad_paused")) == 1
    await jobs.tick(at(WED, 9, 6))
    (_, w2) = sorted(await sent(store, "pad_paused"), key=lambda n: n.id)
    assert "W2 窗口评价器" in w2.body


async def test_nobody_is_told_while_the_hall_is_closed(store: Store, jobs: RatingJobs) -> None:
    await insert(store, pad(at(TUE, 10), "paused"))
    await jobs.tick(at(TUE, 12, 30))  # first look at lunch: two hours of opening time, but the hall is closed
    assert await sent(store, "pad_paused") == []
    await jobs.tick(at(TUE, 13, 30))
    assert len(await sent(store, "pad_paused")) == 1
    await insert(store, pad(at(TUE, 15), "paused", window="W2"))
    await jobs.tick(at(TUE, 20))  # first look in the evening: the hall is closed
    assert len(await sent(store, "pad_paused")) == 1
    await jobs.tick(at(WED, 9))
    assert len(await sent(store, "pad_paused")) == 2


async def test_no_pause_alert_while_the_windows_b_post_is_at_work(store: Store, jobs: RatingJobs) -> None:
    members = [
        StaffMember(SITE, "S1", "张三", "区市场监管局", "W1", "A", date(2026, 1, 1)),
        StaffMember(SITE, "S2", "李四", "区市场监管局", "W1", "B", date(2026, 1, 1)),
        StaffMember(SITE, "S3", "王五", "区税务局", "W2", "A", date(2026, 1, 1)),
        StaffMember(SITE, "S4", "赵六", "区税务局", "W2", "B", date(2026, 1, 1)),
    ]
    await import_roster(store, members, by="wm", at=at(TUE, 8))
    # W1's B post punched in; W2's did not come.
    await insert(store, punch(at(TUE, 8, 50), "S1"), punch(at(TUE, 8, 52), "S2"), punch(at(TUE, 8, 53), "S3"))
    await insert(store, pad(at(TUE, 10), "paused", window="W1"), pad(at(TUE, 10), "paused", window="W2", staff="S3"))
    await jobs.tick(at(TUE, 10, 20))
    (n,) = await sent(store, "pad_paused")
    assert "W2 窗口评价器" in n.body and "B 岗不在岗" in n.body
    assert json.loads(n.data)["b_posts"] == ["S4"]


# -- the monthly report ----------------------------------------------------------------------------------
@pytest.fixture
async def november(store: Store, jobs: RatingJobs) -> dict[str, str]:
    """Three real-name negative ratings, one anonymous, positives, one confirmed and one suspected proxy rating."""
    ids = dict(
        zip(
            ["neg1", "neg2", "neg3", "anon", "good1", "good2", "fair", "proxy", "suspect"],
            await insert(
                store,
                rating(at(TUE, 9, 10), level=1),
                rating(at(TUE, 9, 30), level=2),
                rating(at(WED, 14), level=1, window="W2", staff="S3"),
                rating(at(WED, 14, 20), level=2, window="W2", staff="S3", service=None, pad_state="idle", delay=None),
                rating(at(TUE, 10), level=5),
                rating(at(WED, 10), level=4),
                rating(at(WED, 10, 30), level=3),
                rating(at(WED, 11), level=5, pad_state="paused"),
                rating(at(WED, 11, 30), level=5, since_key=1.5),
            ),
            strict=True,
        )
    )
    await jobs.tick(at(WED, 17))
    await review(store, ids["proxy"], "proxy", by="王科长", at=at(WED, 17, 10), note="监控显示工作人员自评")
    await fu.reply(store, SITES, ids["neg1"], "已回访", by="王科长", at=at(WED, 17, 30), objective=True)
    await fu.reply(store, SITES, ids["neg3"], "已回访", by="王科长", at=at(date(2026, 11, 30), 9), objective=True)
    await fu.rectify(store, SITES, ids["neg1"], "调整叫号顺序", by="李主任", at=at(date(2026, 11, 26), 10))
    return ids


async def test_month_report_gives_the_reply_and_rectification_rates(store: Store, november: dict[str, str]) -> None:
    report = await build_report(store, SITES, SITE, "2026-11", now=at(date(2026, 12, 2), 9))
    t = report.targets
    assert (t.negatives, t.real_name, t.replied, t.reply_pct) == (4, 3, 2, 66.7)
    assert t.replied_on_time == 1  # neg3 (Wednesday) answered the next Monday: after Friday's close
    assert (t.objective, t.rectified, t.rectify_pct) == (2, 1, 50.0)
    assert (t.ratings, t.proxy, t.suspect) == (8, 1, 2)  # the confirmed proxy rating is left out, and said so
    assert t.undecided == 2  # neg2 and the anonymous one
    s1 = report.monthly[("W1", "S1")]
    assert (s1.total, s1.levels[5], s1.proxy, s1.negative(report.policy)) == (6, 2, 1, 2)
    assert report.daily[(WED, "W2", "S3")].total == 2


async def test_report_files_are_in_chinese_with_rates_as_numbers(
    store: Store, november: dict[str, str], tmp_path: Path
) -> None:
    report = await build_report(store, SITES, SITE, "2026-11", now=at(date(2026, 12, 2), 9))
    write_xlsx(report, tmp_path / "r.xlsx")
    book = openpyxl.load_workbook(tmp_path / "r.xlsx")
    assert book.sheetnames == ["达标情况", "月度统计", "每日统计", "差评台账"]
    summary = {row[0]: row[1:] for row in book["达标情况"].iter_rows(min_row=3, values_only=True)}
    assert summary["实名差评回复率(%)"] == (66.7, 100, "否")
    assert summary["客观差评整改率(%)"] == (50.0, 100, "否")
    highlighted = [
        row[0].value for row in book["达标情况"].iter_rows(min_row=3) if row[0].fill.fgColor.rgb.endswith("FFC7CE")
    ]
    assert highlighted == ["实名差评回复率(%)", "客观差评整改率(%)"]
    assert book["达标情况"]["A1"].value == f"{NAME} 2026-11 好差评达标情况"
    assert book["月度统计"]["E2"].value == "非常满意"
    ledger = list(book["差评台账"].iter_rows(min_row=3, values_only=True))
    assert len(ledger) == 4 and ledger[0][0] == datetime(2026, 11, 24, 9, 10)
    late = [row[0].value for row in book["差评台账"].iter_rows(min_row=3) if row[0].fill.fgColor.rgb.endswith("FFC7CE")]
    assert late == [datetime(2026, 11, 24, 9, 30), datetime(2026, 11, 25, 14)]  # neg2 never answered, neg3 late

    write_csv(report, tmp_path / "r.csv")
    text = (tmp_path / "r.csv").read_bytes()
    assert text.startswith(b"\xef\xbb\xbf")
    lines = list(csv.reader(text.decode("utf-8-sig").splitlines()))
    assert ["实名差评回复率(%)", "66.7", "100.0", "否"] in lines
    assert [f"{NAME} 2026-11 差评回复与整改台账"] in lines


async def test_the_monthly_sheet_totals_to_the_summary_and_the_csv_reads_as_the_workbook(
    store: Store, november: dict[str, str], tmp_path: Path
) -> None:
    """GIVEN November's ratings (8 counted, 4 negative, one confirmed proxy rating left out) WHEN the report is
    written THEN the monthly sheet ends in a bold 合计 whose counts are the sum of its rows as displayed and are
    the summary sheet's 评价数 and 差评数 (SJ 001:896 reports the month's 差评), each figure has the number format of
    its kind (counts 0, the average 0.00, rates 0.0), and the CSV shows every figure as the workbook does (one
    shared sheet writer, issue 17 item 8). The monthly sheet had no total: the reader had to add it up."""
    report = await build_report(store, SITES, SITE, "2026-11", now=at(date(2026, 12, 2), 9))
    write_xlsx(report, tmp_path / "r.xlsx")
    book = openpyxl.load_workbook(tmp_path / "r.xlsx")
    ws = book["月度统计"]
    head = [c.value for c in ws[2]]
    *people, total = list(ws.iter_rows(min_row=3))
    assert total[0].value == "合计" and total[0].font.bold
    col = {h: head.index(h) for h in ("评价数", "差评数", "平均分", "差评率(%)", "核实代评(未计入)")}
    for name, i in col.items():
        fmt = {"平均分": "0.00", "差评率(%)": "0.0"}.get(name, "0")
        assert {r[i].number_format for r in [*people, total] if r[i].value is not None} == {fmt}, name
    for name in ("评价数", "差评数", "核实代评(未计入)"):
        assert total[col[name]].value == sum(r[col[name]].value for r in people), f"{name}: the rows add up"
    summary = {r[0]: r[1] for r in book["达标情况"].iter_rows(min_row=3, values_only=True)}
    assert (total[col["评价数"]].value, total[col["差评数"]].value) == (8, 4) == (
        summary["评价数 (不含核实代评)"], summary["差评数"]), "the monthly total is the summary's"  # fmt: skip
    assert total[col["核实代评(未计入)"]].value == summary["核实代评(未计入)"] == 1
    assert total[col["差评率(%)"]].value == 50.0

    write_csv(report, tmp_path / "r.csv")
    lines = list(csv.reader((tmp_path / "r.csv").read_text(encoding="utf-8-sig").splitlines()))
    shown = [[_as_shown(c) for c in row] for row in [*people, total]]
    first = lines.index([f"{NAME} 2026-11 好差评月度统计 (按窗口、人员)"])
    assert lines[first + 2 : first + 2 + len(shown)] == shown, "the CSV reads as the workbook shows"


def _as_shown(cell: Any) -> str:
    """A cell as its number format shows it."""
    v, fmt = cell.value, cell.number_format
    if v is None:
        return ""
    if isinstance(v, int | float) and fmt.startswith("0"):
        return f"{v:.{len(fmt) - 2 if fmt.startswith('0.') else 0}f}"
    return str(v)


async def test_ratings_of_a_month_are_read_by_the_pad_clock_or_the_receipt(store: Store) -> None:
    unsynced = rating(at(TUE, 10), level=4)
    unsynced.update(ts=datetime(1970, 1, 1, tzinfo=HALL_ZONE), clock_synced=False)
    ahead = rating(at(TUE, 11), level=4)
    ahead.update(ts=datetime(2030, 1, 1, tzinfo=HALL_ZONE), clock_synced=False)
    late = rating(at(date(2026, 10, 31), 16), level=5)  # October's, delivered in November
    late["received_at"] = at(TUE, 9)
    await insert(store, unsynced, ahead, late)
    start, end = at(date(2026, 11, 1), 0), at(date(2026, 12, 1), 0)
    async with store.engine.connect() as conn:
        got = await ratings_between(conn, SITE, start, end)
    assert [(r.event_id, r.at) for r in got] == [(unsynced["id"], at(TUE, 10)), (ahead["id"], at(TUE, 11))]


# -- the CLI ---------------------------------------------------------------------------------------------
async def test_cli_followups_flags_and_report(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await Store.open(store_url)
    try:
        neg, paused = await insert(store, rating(at(TUE, 9, 10), level=1), rating(at(TUE, 9, 40), pad_state="paused"))
        await RatingJobs(store, SITES, Router(ALERTS)).tick(at(TUE, 10))
    finally:
        await store.close()
    cfg = write_toml(
        tmp_path / "centre.toml", {"instance": "cli"}, {"store": {"url": store_url}, f"sites.{SITE}": {"name": NAME}}
    )

    async def hallfleet_(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(hallfleet.cli.main, ["ratings", *args, "--config", str(cfg)])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = await hallfleet_("followup", "list")
    assert code == 0 and neg in out and "待回复 (期限 2026-11-26 17:30)" in out
    code, out, _ = await hallfleet_(
        "followup", "reply", neg[:24], "--text", "已电话回访", "--objective", "yes", "--by", "王科长"
    )
    assert code == 0 and "已回复" in out and "待整改" in out
    code, _, err = await hallfleet_("followup", "reply", neg[:24], "--text", "again", "--by", "王科长")
    assert code == 1 and "answered already" in err
    code, out, _ = await hallfleet_("followup", "rectify", neg, "--text", "增加引导", "--by", "李主任")
    assert code == 0 and "已整改" in out
    code, out, _ = await hallfleet_("followup", "list")
    assert neg not in out  # nothing owed any more
    code, out, _ = await hallfleet_("flags")
    assert code == 0 and paused in out and "暂停服务时评价" in out and "待核实" in out
    code, out, _ = await hallfleet_("review", paused, "--verdict", "proxy", "--by", "王科长")
    assert code == 0 and "属实代评" in out
    code, out, _ = await hallfleet_("flags")
    assert paused not in out
    code, out, _ = await hallfleet_("list", SITE, "--day", "2026-11-24")
    assert code == 0 and "非常不满意" in out and "暂停服务时评价(属实代评)" in out and "2 条评价, 1 条被标记" in out
    code, out, _ = await hallfleet_("report", SITE, "2026-11", "--out", str(tmp_path / "m.xlsx"))
    assert code == 0 and "实名差评回复率 100.0% (1/1)" in out and "客观差评整改率 100.0% (1/1)" in out
    assert openpyxl.load_workbook(tmp_path / "m.xlsx").sheetnames[0] == "达标情况"
    code, _, err = await hallfleet_("report", SITE, "2026-11", "--out", str(tmp_path / "m.pdf"))
    assert code == 2 and "--out must end in .csv or .xlsx" in err
    store = await Store.open(store_url)
    try:
        (row,) = await rows(store, rating_followups)
    finally:
        await store.close()
    assert (row.replied_by, row.reply_text, row.rectified_by) == ("王科长", "已电话回访", "李主任")
