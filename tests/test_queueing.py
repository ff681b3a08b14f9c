"""Queue ticketing at the centre, on both stores: the waiting-time rule of QP 000:368 「现场预约等候落实"10,30,60"
要求,即一般等候时长不超过10分钟,复杂事项不超过30分钟,特殊情形不得超过60分钟」 table-driven per class, the ticket
steps folded once whatever order and however often they arrive, the over-limit alert once per episode, and a
window with tickets waiting whose pad is paused or whose A/B posts are both away told ONE alert, not three."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from broker.alerts.routing import AlertsConfig, Router
from broker.attendance.jobs import AttendanceJobs
from broker.attendance.roster import StaffMember, import_roster
from broker.queueing.jobs import QueueJobs
from broker.queueing.policy import QueuePolicy
from broker.queueing.rule import Leg, Step, legs_of, within
from broker.ratings.jobs import RatingJobs
from broker.sites import SiteConfig, Sites
from broker.store.db import Store
from broker.store.schema import events, notifications, queue_steps, queue_waits
from protocol.ids import uuid7
from runtime.clock import HALL_ZONE

SITE = "qp"
POLICY = QueuePolicy.model_validate(
    {"services": {"A": {"name": "社保综合"}, "B": {"wait_class": "complex"}, "C": {"wait_class": "special"}}}
)
SITES = Sites({SITE: SiteConfig(name="青浦区政务服务中心", queueing=POLICY)})  # default calendar: Mon-Fri 09-12, 13:30
TUE = date(2026, 11, 24)
ALERTS = AlertsConfig.model_validate(
    {
        "channels": {"hook": {"type": "webhook", "url": "http://127.0.0.1:9/x"}},
        "recipients": {"wm": {"role": "window_management", "channel": "hook"}},
    }
)


def at(h: int, m: int = 0, s: float = 0) -> datetime:
    return datetime(TUE.year, TUE.month, TUE.day, h, m, tzinfo=HALL_ZONE) + timedelta(seconds=s)


# -- the rule ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("service", "waited", "keeps"),
    [
        ("A", timedelta(minutes=10), True),  # 一般: 「不超过10分钟」, the limit itself included
        ("A", timedelta(minutes=11), False),  # one minute over
        ("A", timedelta(minutes=10, seconds=1), False),
        ("B", timedelta(minutes=30), True),  # 复杂事项: 「不超过30分钟」
        ("B", timedelta(minutes=31), False),
        ("C", timedelta(minutes=60), True),  # 特殊情形: 「不得超过60分钟」
        ("C", timedelta(minutes=61), False),
        ("Z", timedelta(minutes=10), True),  # a service nobody classed is 一般: the strictest, never let off
        ("Z", timedelta(minutes=11), False),
    ],
)
def test_qp_000_368_10_30_60_per_class(service: str, waited: timedelta, keeps: bool) -> None:
    assert within(waited, POLICY.limit_min(service)) is keeps


def test_the_limits_default_to_the_seed_and_each_class_needs_one() -> None:
    assert QueuePolicy().limits_min == {"general": 10.0, "complex": 30.0, "special": 60.0}
    with pytest.raises(ValueError, match="lacks"):
        QueuePolicy.model_validate({"limits_min": {"general": 10}})
    with pytest.raises(ValueError, match="not service codes"):
        QueuePolicy.model_validate({"services": {"社保": {}}})


def s(step: str, m: int, service: str = "A", window: str | None = None, detail: str | None = None) -> Step:
    return Step("A017", step, at(9, m), service, window, detail)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("steps", "legs"),
    [
        ([s("issued", 0)], [("A", 0, None, "waiting", None)]),
        ([s("issued", 0), s("called", 7, window="03"), s("called", 9, window="03", detail="recall"),
          s("served", 20, window="03")], [("A", 0, 7, "served", "03")]),
        ([s("served", 20, window="03"), s("called", 7, window="03"), s("issued", 0)],  # out of order
         [("A", 0, 7, "served", "03")]),
        ([s("issued", 0), s("called", 4, window="03"), s("transferred", 9, window="03", detail="B"),
          s("called", 40, service="B", window="05")],
         [("A", 0, 4, "transferred", "03"), ("B", 9, 40, "called", "05")]),
        ([s("issued", 0), s("abandoned", 25, detail="cancelled")], [("A", 0, None, "abandoned", None)]),
        ([s("called", 7, window="03")], [("A", None, 7, "called", "03")]),  # the issue never reported
        ([s("issued", 0), s("issued", 0)], [("A", 0, None, "waiting", None)]),
    ],
    ids=["waiting", "recall-keeps-first-call", "out-of-order", "transfer-new-wait", "abandoned", "no-issue",
         "issued-twice"],
)  # fmt: skip
def test_a_tickets_legs_from_its_steps(steps: list[Step], legs: list[tuple[Any, ...]]) -> None:
    def minute(t: datetime | None) -> int | None:
        return None if t is None else int((t - at(9)) / timedelta(minutes=1))

    assert [(x.service, minute(x.queued_at), minute(x.called_at), x.outcome, x.window) for x in legs_of(steps)] == legs


def test_an_abandoned_tickets_wait_ends_when_it_was_abandoned() -> None:
    (leg,) = legs_of([s("issued", 0), s("abandoned", 25, detail="cancelled")])
    assert leg.waited(at(12)) == timedelta(minutes=25)
    assert Leg("A1", 0, "A", None).waited(at(12)) is None


# -- the store -----------------------------------------------------------------------------------------
def step_event(
    kind: str,
    when: datetime,
    ticket: str,
    service: str = "A",
    device: str = "qs-1",
    received: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    data = {"ticket": ticket, "service": service, "at": when.isoformat(), **extra}
    return {
        "site": SITE, "device": device, "id": uuid7(), "type": f"queue.ticket_{kind}",
        "seq": int(when.timestamp() * 1000), "boot_id": "b", "ts": when, "clock_synced": True, "replayed": False,
        "received_at": received or when, "data": json.dumps(data),
    }  # fmt: skip


def pad(when: datetime, state: str, window: str = "03") -> dict[str, Any]:
    data = {"window": window, "state": state, "staff_id": "S1", "service_id": None}
    return step_event("x", when, "A1") | {"type": "rating.pad_state", "device": f"pad-{window}",
                                          "data": json.dumps(data)}  # fmt: skip


def punch(when: datetime, staff: str) -> dict[str, Any]:
    data = json.dumps({"staff_id": staff, "method": "face"})
    return step_event("x", when, "A1") | {"type": "attendance.punch", "device": "att-1", "data": data}


async def insert(store: Store, *rows: dict[str, Any]) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(events.insert(), list(rows))


async def sent(store: Store, step: str | None = None) -> list[Any]:
    q = sa.select(notifications)
    return await store.fetch(q.where(notifications.c.step == step) if step else q)


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    s = await Store.open(store_url)
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def jobs(store: Store) -> QueueJobs:
    return QueueJobs(store, SITES, Router(ALERTS))


async def test_steps_reported_twice_and_out_of_order_fold_into_the_same_legs(store: Store, jobs: QueueJobs) -> None:
    """GIVEN the display's steps arriving before the dispenser's (its outage), and one step re-sent by a crashed
    agent WHEN folded THEN each step is one row and the legs are those of the steps in order."""
    called = step_event("called", at(9, 7), "A017", window="03", received=at(9, 8))
    await insert(store, called, step_event("served", at(9, 20), "A017", window="03", received=at(9, 21)))
    await jobs.tick(at(9, 22))
    await insert(store, step_event("issued", at(9, 0), "A017", device="qd-1", received=at(9, 30), channel="priority"),
                 called | {"id": uuid7(), "received_at": at(9, 30)})  # fmt: skip
    await jobs.tick(at(9, 31))
    assert len(await store.fetch(sa.select(queue_steps))) == 3
    (w,) = await store.fetch(sa.select(queue_waits))
    assert (w.ticket, w.outcome, w.window, w.channel, w.queued_at, w.called_at) == (
        "A017", "served", "03", "priority", at(9), at(9, 7)
    )  # fmt: skip


async def test_a_service_past_its_limit_is_told_once_per_episode(store: Store, jobs: QueueJobs) -> None:
    await insert(store, step_event("issued", at(9, 0), "A001"), step_event("issued", at(9, 2), "A002"),
                 step_event("issued", at(9, 0), "B001", service="B"))  # fmt: skip
    await jobs.tick(at(9, 10))
    assert await sent(store) == [], "exactly at the limit keeps QP 000:368"
    await jobs.tick(at(9, 11))
    await jobs.tick(at(9, 13))  # A002 over too: the same episode
    (n,) = await sent(store, "queue_wait")
    assert "社保综合 (A) (一般事项, 上限 10 分钟) 1 张号等候超时" in n.body and "QP 000:368" in n.body
    assert json.loads(n.data)["late"] == ["A001"]
    # B001 is 复杂 (30 min): not late at 09:13; A001 called, A002 still late -> a new episode starts from A002
    await insert(store, step_event("called", at(9, 14), "A001", window="03"))
    await jobs.tick(at(9, 15))
    assert [json.loads(x.data)["late"] for x in await sent(store, "queue_wait")] == [["A001"], ["A002"]]


@pytest.mark.parametrize("cause", ["paused", "ab_away", "both"])
async def test_a_window_nobody_serves_while_tickets_wait_is_one_alert_not_three(
    store: Store, jobs: QueueJobs, cause: str
) -> None:
    """GIVEN window 03 calling service A, tickets of A waiting past their limit, and window 03's pad paused (or
    neither its A nor its B post at work) WHEN the queue, rating and attendance jobs all run THEN window
    management gets one alert naming the window, why and the waits: no pause alert, no A/B alert, no separate
    over-limit alert. With the pad paused AND both posts away it is still one alert, giving both reasons."""
    members = [StaffMember(SITE, "S1", "张三", "区市场监管局", "03", "A", date(2026, 1, 1)),
               StaffMember(SITE, "S2", "李四", "区市场监管局", "03", "B", date(2026, 1, 1)),
               StaffMember(SITE, "S3", "王五", "区税务局", "05", "A", date(2026, 1, 1))]  # fmt: skip
    await import_roster(store, members, by="wm", at=at(8))
    await insert(store, punch(at(8, 45), "S3"))  # the hall is live: someone punched
    if cause == "paused":  # window 03's posts both came to work; its pad says 暂停服务 from 09:30
        await insert(store, punch(at(8, 50), "S1"), punch(at(8, 51), "S2"))
    if cause in ("paused", "both"):
        await insert(store, pad(at(9, 30), "paused"))
    await insert(store, step_event("issued", at(9, 0), "A001"), step_event("called", at(9, 5), "A001", window="03"),
                 step_event("served", at(9, 20), "A001", window="03"), step_event("issued", at(9, 25), "A002"),
                 step_event("issued", at(9, 40), "A003"))  # fmt: skip
    router = Router(ALERTS)
    for t in (at(10, 0), at(10, 5), at(10, 30)):
        await jobs.tick(t)
        await RatingJobs(store, SITES, router).tick(t)
        await AttendanceJobs(store, SITES, router).tick(t)
    everything = await sent(store)
    assert [(n.step, n.recipient) for n in everything] == [("window_unattended", "wm")]
    body = everything[0].body
    assert "03 窗口有 2 张号在等候, 其中 2 张已超时 (最长 A002 已等 35 分钟, 上限 10 分钟)" in body
    reasons = {"paused": ["评价器自 09:30 起显示“暂停服务”"], "ab_away": ["A、B 岗 (S1、S2) 自 09:00 起均不在岗"]}
    reasons["both"] = reasons["paused"] + reasons["ab_away"]
    assert all(reason in body for reason in reasons[cause]), body


@pytest.mark.parametrize("first", ["ab_away", "paused"])
async def test_a_second_reason_joining_an_unattended_window_is_not_a_second_alert(
    store: Store, jobs: QueueJobs, first: str
) -> None:
    """GIVEN window 03 with a ticket waiting, told unattended for one reason (both A/B posts away, or its pad
    paused) WHEN the other reason joins while the window is still unattended THEN window management has still
    had one alert: the episode began with the first reason, and the second is no new news to act on."""
    members = [StaffMember(SITE, "S1", "张三", "区市场监管局", "03", "A", date(2026, 1, 1)),
               StaffMember(SITE, "S2", "李四", "区市场监管局", "03", "B", date(2026, 1, 1)),
               StaffMember(SITE, "S3", "王五", "区税务局", "05", "A", date(2026, 1, 1))]  # fmt: skip
    await import_roster(store, members, by="wm", at=at(8))
    await insert(store, punch(at(8, 45), "S3"))
    if first == "paused":  # both posts at work until 09:40, when both leave (a gap from then on)
        await insert(store, punch(at(8, 50), "S1"), punch(at(8, 51), "S2"), pad(at(9, 10), "paused"))
    await insert(store, step_event("issued", at(9, 0), "A001"), step_event("called", at(9, 5), "A001", window="03"),
                 step_event("issued", at(9, 20), "A002"))  # fmt: skip
    await jobs.tick(at(9, 31))  # one reason: told (the A/B gap at once, the pause once A002 is past its limit)
    assert [n.step for n in await sent(store)] == ["window_unattended"]
    if first == "paused":
        await insert(store, punch(at(9, 40), "S1"), punch(at(9, 40, 30), "S2"))  # both sign out: away
    else:
        await insert(store, pad(at(9, 40), "paused"))
    for t in (at(10, 0), at(10, 20)):
        await jobs.tick(t)
    assert [n.step for n in await sent(store)] == ["window_unattended"], "one unattended episode, one alert"


async def test_a_pause_told_with_its_tickets_is_not_told_again_once_they_are_called(
    store: Store, jobs: QueueJobs
) -> None:
    """GIVEN window 03's pad paused at 09:30 with tickets waiting, told in the combined alert WHEN the tickets are
    called at 10:10 while the pad still shows the pause (its resume not arrived yet, or never pressed) THEN the
    rating job's own pause alert does not follow: the pause was told, with its tickets."""
    members = [StaffMember(SITE, "S1", "张三", "区市场监管局", "03", "A", date(2026, 1, 1)),
               StaffMember(SITE, "S2", "李四", "区市场监管局", "03", "B", date(2026, 1, 1))]  # fmt: skip
    await import_roster(store, members, by="wm", at=at(8))
    # S1 (A post) at work, S2 (B post) not: no A/B gap, but nobody to cover the pause (the pad's own alert's case)
    await insert(store, punch(at(8, 50), "S1"), pad(at(9, 30), "paused"))
    await insert(store, step_event("issued", at(9, 0), "A001"), step_event("called", at(9, 5), "A001", window="03"),
                 step_event("issued", at(9, 25), "A002"))  # fmt: skip
    ratings = RatingJobs(store, SITES, Router(ALERTS))
    for t in (at(9, 40), at(10, 0)):
        await jobs.tick(t)
        await ratings.tick(t)
    assert [n.step for n in await sent(store)] == ["window_unattended"]
    await insert(store, step_event("called", at(10, 10), "A002", window="03"))
    for t in (at(10, 15), at(10, 30)):
        await jobs.tick(t)
        await ratings.tick(t)
    assert [n.step for n in await sent(store)] == ["window_unattended"], "one pause, one alert"


async def test_an_a_b_gap_told_with_its_tickets_is_not_told_again_once_they_are_called(
    store: Store, jobs: QueueJobs
) -> None:
    """GIVEN neither of window 03's posts at work and its ticket waiting, told in the combined alert WHEN another
    window calls the ticket while 03 is still uncovered THEN the attendance job's own A/B alert does not follow."""
    members = [StaffMember(SITE, "S1", "张三", "区市场监管局", "03", "A", date(2026, 1, 1)),
               StaffMember(SITE, "S2", "李四", "区市场监管局", "03", "B", date(2026, 1, 1)),
               StaffMember(SITE, "S3", "王五", "区税务局", "05", "A", date(2026, 1, 1))]  # fmt: skip
    await import_roster(store, members, by="wm", at=at(8))
    await insert(store, punch(at(8, 45), "S3"))
    await insert(store, step_event("issued", at(9, 0), "A001"), step_event("called", at(9, 5), "A001", window="03"),
                 step_event("issued", at(9, 20), "A002"))  # fmt: skip
    attendance = AttendanceJobs(store, SITES, Router(ALERTS))
    for t in (at(9, 31), at(9, 40)):
        await jobs.tick(t)
        await attendance.tick(t)
    assert [n.step for n in await sent(store)] == ["window_unattended"]
    await insert(store, step_event("called", at(9, 50), "A002", window="04"))
    for t in (at(10, 0), at(10, 30)):
        await jobs.tick(t)
        await attendance.tick(t)
    assert [n.step for n in await sent(store)] == ["window_unattended"], "one uncovered window, one alert"


async def test_a_paused_pad_without_tickets_waiting_keeps_its_own_alert(store: Store, jobs: QueueJobs) -> None:
    await insert(store, pad(at(9, 30), "paused"))
    await insert(store, step_event("issued", at(9, 0), "A001"), step_event("called", at(9, 5), "A001", window="03"))
    await jobs.tick(at(10))
    await RatingJobs(store, SITES, Router(ALERTS)).tick(at(10))
    assert [n.step for n in await sent(store)] == ["pad_paused"]


# -- the monthly report ----------------------------------------------------------------------------------
async def test_the_monthly_report_per_service_and_window_opens_with_its_figures(
    store: Store, jobs: QueueJobs, tmp_path: Any
) -> None:
    """GIVEN a day of tickets: A at windows 03 and 04 within and past 10 minutes, a complex B ticket called at 25
    minutes, a no-show, one cancelled before its call, one whose issue was never reported WHEN the month's report
    is written THEN the XLSX opens with the shares, p50/p90 and abandoned per service and window, each service's
    subtotal and a total that add up, and the CSV says the same."""
    import csv

    import openpyxl

    from broker.queueing.report import build_report, write_report

    steps = []
    for ticket, wait, window in [("A001", 5, "03"), ("A002", 10, "03"), ("A003", 12, "04"), ("A004", 30, "04")]:
        steps += [step_event("issued", at(9), ticket), step_event("called", at(9, wait), ticket, window=window),
                  step_event("served", at(9, wait + 5), ticket, window=window)]  # fmt: skip
    steps += [step_event("issued", at(10), "B001", service="B"),
              step_event("called", at(10, 25), "B001", service="B", window="05"),
              step_event("issued", at(10), "A005"), step_event("called", at(10, 3), "A005", window="03"),
              step_event("abandoned", at(10, 8), "A005", window="03", reason="no_show"),
              step_event("issued", at(10), "A006"), step_event("abandoned", at(10, 40), "A006", reason="cancelled"),
              step_event("called", at(11), "A099", window="04")]  # fmt: skip
    await insert(store, *steps)
    await jobs.fold(at(12))
    report = await build_report(store, SITES, SITE, "2026-11")
    assert (report.judged, report.within) == (7, 4)  # A001 A002 A005 within; A003 A004 A006 over; B001 within 30
    xlsx, csv_path = tmp_path / "q.xlsx", tmp_path / "q.csv"
    write_report(report, xlsx, SITES)
    write_report(report, csv_path, SITES)
    ws = openpyxl.load_workbook(xlsx).active
    assert "QP 000:368" in ws["A1"].value
    header = [c.value for c in ws[2]]
    table = {(r[0], r[4]): dict(zip(header, r, strict=True)) for r in ws.iter_rows(min_row=3, values_only=True)}
    w03 = table[("A", "03")]
    assert (w03["评判号数"], w03["限时内"], w03["限时内占比"], w03["过号"]) == (3, 3, 100.0, 1)
    assert (w03["等候P50(分钟)"], w03["等候P90(分钟)"]) == (5.0, 10.0)
    w04 = table[("A", "04")]
    assert (w04["评判号数"], w04["限时内"], w04["最长等候(分钟)"], w04["无取号记录"]) == (2, 0, 30.0, 1)
    assert (table[("A", "未叫号")]["弃号"], table[("A", "未叫号")]["最长等候(分钟)"]) == (1, 40.0)
    sub = table[("A", "小计")]
    assert (sub["评判号数"], sub["限时内"], sub["限时内占比"], sub["弃号"]) == (6, 3, 50.0, 2)
    b = table[("B", "05")]
    assert (b["等候类别"], b["时限(分钟)"], b["限时内"]) == ("复杂", 30, 1)
    total = table[("合计", None)]  # an empty cell reads back as None
    assert (total["评判号数"], total["限时内"], total["限时内占比"]) == (7, 4, 57.1)
    assert ws.cell(3, 8).number_format == "0.0" and ws.cell(3, 9).number_format == "0.0"
    with csv_path.open(encoding="utf-8-sig") as f:
        lines = list(csv.reader(f))
    totals = [line for line in lines if line and line[0] == "合计"]
    assert lines[1] == header and [t[:8] for t in totals] == [["合计", "", "", "", "", "7", "4", "57.1"]]
    assert lines.index(totals[0]) < len(lines) - 1  # the month's chain heads follow as the footer (broker/audit)


async def test_cli_report_writes_the_file_and_refuses_a_bad_month(
    store_url: str, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    import hallfleet.cli
    from tests.support.procs import write_toml

    store = await Store.open(store_url)
    try:
        await insert(store, step_event("issued", at(9), "A001"), step_event("called", at(9, 12), "A001", window="03"))
        await QueueJobs(store, SITES, Router(ALERTS)).fold(at(10))
    finally:
        await store.close()
    cfg = write_toml(tmp_path / "centre.toml", {"instance": "cli"}, {"store": {"url": store_url}})
    out = tmp_path / "q.xlsx"
    code = await asyncio.to_thread(hallfleet.cli.main, ["queue", "report", SITE, "--month", "2026-11", "--out",
                                                        str(out), "--config", str(cfg)])  # fmt: skip
    assert code == 0 and out.exists() and "评判 1 张号, 限时内 0 张 (0.0%)" in capsys.readouterr().out
    code = await asyncio.to_thread(hallfleet.cli.main, ["queue", "report", SITE, "--month", "2026-13", "--out",
                                                        str(out), "--config", str(cfg)])  # fmt: skip
    assert code == 1 and "YYYY-MM" in capsys.readouterr().err
