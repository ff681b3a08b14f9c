"""The monthly duties and access workbook (broker/duties/report.py), on SQLite and PostgreSQL: four days of November
with every verdict the duties give, written through the shared sheet writer, opened with openpyxl and checked cell
by cell (formats, the total rows, the summary repeating them), and the ``hallfleet duties report`` command."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

import hallfleet.cli
from broker.access.lockers import check_lockers
from broker.config import ConsumerConfig
from broker.duties.report import build_report, load_month, write_report
from broker.rules.incidents import IncidentRules
from broker.sites import Sites
from broker.store.db import Store
from runtime.clock import HALL_ZONE
from tests.support.hall_duties import add_alarm, add_device, add_event, add_shutdown, netcheck

SITE = "qp"
DUTIES: dict[str, Any] = {
    "power": {"departments": {"税务": ["tax-*"]}},
    "patrol": {"rounds": [{"name": "上午", "start": "09:30", "end": "10:30"},
                          {"name": "下午", "start": "13:40", "end": "14:40"}], "point_classes": ["rating"]},
}  # fmt: skip
SITES = Sites(ConsumerConfig(sites={SITE: {"name": "青浦", "duties": DUTIES}}).sites)
NOW = datetime(2026, 11, 4, 12, 0, tzinfo=HALL_ZONE)  # Wednesday noon: Sunday 1st to today


def at(day: int, h: int, m: int = 0) -> datetime:
    return datetime(2026, 11, day, h, m, tzinfo=HALL_ZONE)


HEALTH = {"uptime_s": 60, "outbox_depth": 0, "outbox_dropped": 0, "clock_synced": True, "interval_s": 60}


async def seed(store: Store) -> None:
    """k1 passes daily; k2 passes the 1st, fails the 2nd (centre), skips the 3rd, passes the 4th. tax-1: on time
    and shut down on the 2nd, late and left on through the 3rd, still on (pending) on the 4th. Rounds: both done on
    the 2nd, the morning one missed on the 3rd, the 4th's morning done with an issue, its afternoon to come. The
    door forced (and closed again) on the 2nd, held open on the 3rd; a locker compartment faulted; an item in A-1
    since 30 October (over 72 h at NOW)."""
    for device, role in (("k1", "kiosk"), ("k2", "kiosk"), ("pad-1", "rating"), ("tax-1", "sim"),
                         ("door-24h", "door"), ("locker-a", "locker"), ("hand-1", "patrol")):  # fmt: skip
        await add_device(store, SITE, device, role, at(1, 0) - timedelta(days=30))
    for day in (1, 2, 3, 4):
        await add_event(store, SITE, "k1", "duty.netcheck", at(day, 8), netcheck(True))
    await add_event(store, SITE, "k2", "duty.netcheck", at(1, 8), netcheck(True))
    await add_event(store, SITE, "k2", "duty.netcheck", at(2, 8), netcheck(False, ("centre",)))
    await add_event(store, SITE, "k2", "duty.netcheck", at(4, 8), netcheck(True))
    await add_event(store, SITE, "tax-1", "device.health", at(1, 20), HEALTH, boot_id="b1")  # off over Sunday
    await add_shutdown(store, SITE, "tax-1", at(1, 20, 1))
    for ts, boot in ((at(2, 8, 30), "b2"), (at(2, 18), "b2"), (at(3, 9, 30), "b3"), (at(3, 20), "b3"),
                     (at(4, 8), "b3"), (at(4, 11), "b3")):  # fmt: skip
        await add_event(store, SITE, "tax-1", "device.health", ts, HEALTH, boot_id=boot)
    await add_shutdown(store, SITE, "tax-1", at(2, 18, 1))
    await add_event(store, SITE, "hand-1", "patrol.scan", at(2, 9, 40), {"officer": "S1", "point": "pad-1"})
    await add_event(store, SITE, "hand-1", "patrol.scan", at(2, 13, 50), {"officer": "S1", "point": "pad-1"})
    await add_event(store, SITE, "hand-1", "patrol.scan", at(3, 14), {"officer": "S2", "point": "pad-1"})
    await add_event(store, SITE, "hand-1", "patrol.scan", at(4, 9, 45),
                    {"officer": "S1", "point": "pad-1", "finding": "issue"})  # fmt: skip
    forced = {"door": "main", "alarm": "forced", "since": at(2, 3).isoformat()}
    await add_alarm(store, SITES, SITE, "door-24h", at(2, 3), forced)
    await add_alarm(store, SITES, SITE, "door-24h", at(2, 3, 1), forced | {"active": False})
    await add_alarm(store, SITES, SITE, "door-24h", at(3, 22), {"door": "main", "alarm": "held_open"})
    await add_alarm(store, SITES, SITE, "locker-a", at(3, 9), {"bank": "A", "compartment": 2, "alarm": "door_fault"})
    boxes = [
        {"no": 1, "door": "closed", "occupied": True, "occupied_since": (at(1, 0) - timedelta(days=2)).isoformat()}
    ]
    await add_event(store, SITE, "locker-a", "locker.bank", at(4, 11), {"bank": "A", "board": "ok",
                                                                        "compartments": boxes})  # fmt: skip
    async with store.engine.begin() as conn:  # the overdue job, as the consumer runs it
        await check_lockers(conn, SITES, IncidentRules(SITES, {}), NOW)


def rows_of(ws: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in ws.iter_rows(min_row=3, values_only=True)]


async def test_the_workbook_counts_every_verdict_and_its_totals_add_up(store_url: str, tmp_path: Path) -> None:
    store = await Store.open(store_url)
    try:
        await seed(store)
        report = build_report(await load_month(store, SITES, SITE, "2026-11", NOW))
    finally:
        await store.close()
    out = tmp_path / "duties.xlsx"
    write_report(report, out, SITES)
    book = load_workbook(out)
    assert book.sheetnames == ["汇总", "网络检查", "网络检查异常", "开关机", "开关机异常", "巡查", "门禁与寄取柜"]

    net = book["网络检查"]
    assert [c.value for c in net[2]] == ["日期", "应检终端", "通过", "未通过", "未执行", "待检", "通过率"]
    assert rows_of(net) == [
        (datetime(2026, 11, 1), 2, 2, 0, 0, 0, 100.0),
        (datetime(2026, 11, 2), 2, 1, 1, 0, 0, 50.0),
        (datetime(2026, 11, 3), 2, 1, 0, 1, 0, 50.0),
        (datetime(2026, 11, 4), 2, 2, 0, 0, 0, 100.0),
        ("合计", 8, 6, 1, 1, 0, 75.0),
    ]
    assert (net["A3"].number_format, net["B3"].number_format, net["G3"].number_format) == ("yyyy-mm-dd", "0", "0.0")
    assert net["A4"].fill.start_color.rgb.endswith("FFC7CE"), "a day with a failed check is flagged"
    assert rows_of(book["网络检查异常"]) == [
        (datetime(2026, 11, 2), "k2", "未通过", "centre", datetime(2026, 11, 2, 8)),
        (datetime(2026, 11, 3), "k2", "未执行", None, None),
    ]

    power = rows_of(book["开关机"])
    # 部门, 机器, 台·日, 按时开机, 迟开机, 隔夜未关, 未开机, 按时关机, 未关机, 非正常关机, 待定, 合规台·日, 合规率
    assert power == [("税务", 1, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1, 50.0), ("合计", 1, 3, 1, 1, 1, 0, 1, 1, 0, 1, 1, 50.0)]
    assert [r[2:6] for r in rows_of(book["开关机异常"])] == [
        ("tax-1", "迟开机", datetime(2026, 11, 3, 9, 30), "未关机")
    ]

    patrol = rows_of(book["巡查"])
    verdicts = [(r[0], r[1], r[6]) for r in patrol[:-1]]
    assert verdicts == [
        (datetime(2026, 11, 2), "上午", "已完成"), (datetime(2026, 11, 2), "下午", "已完成"),
        (datetime(2026, 11, 3), "上午", "未完成"), (datetime(2026, 11, 3), "下午", "已完成"),
        (datetime(2026, 11, 4), "上午", "已完成"), (datetime(2026, 11, 4), "下午", "进行中"),
    ]  # fmt: skip
    assert patrol[2][3:10] == (1, 0, 0, "未完成", None, "pad-1", None)  # an empty cell reads None
    assert patrol[4][7:] == ("S1", None, "pad-1"), "the officer and the point marked with an issue"
    assert patrol[-1][:3] == ("合计", "已完成 4 轮", "未完成 1 轮")

    access = rows_of(book["门禁与寄取柜"])
    assert access == [
        ("door-24h", "门禁控制器", 1, 1, 0, 0, 0, 0, 0, 2),
        ("locker-a", "自助寄取柜", 0, 0, 0, 0, 1, 0, 1, 2),
        ("合计", None, 1, 1, 0, 0, 1, 0, 1, 4),
    ]

    summary = dict(rows_of(book["汇总"]))
    heads = {k: summary.pop(k) for k in ("审计链校验值 2026-11", "考勤更正链校验值 2026-11")}
    assert all(str(v).endswith("条)") for v in heads.values()), heads
    assert summary == {"网络日常检查 终端·日": 8, "  通过": 6, "  未通过": 1, "  未执行": 1,
                       "开关机 台·日(已判定)": 2, "  合规台·日": 1, "巡查轮次 已完成": 4, "巡查轮次 未完成": 1,
                       "门禁告警": 2, "寄取柜告警": 1, "寄取柜物品超期未取": 1}  # fmt: skip


async def test_cli_writes_the_workbook_and_refuses_a_bad_month(
    store_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = await Store.open(store_url)
    try:
        await seed(store)
    finally:
        await store.close()
    cfg = tmp_path / "centre.toml"
    cfg.write_text(
        f'instance = "cli"\n[store]\nurl = "{store_url}"\n[sites.qp]\nname = "青浦"\n'
        '[sites.qp.duties.power]\ndepartments = { "税务" = ["tax-*"] }\n'
        '[sites.qp.duties.patrol]\npoint_classes = ["rating"]\n'
        '[[sites.qp.duties.patrol.rounds]]\nname = "上午"\nstart = "09:30"\nend = "10:30"\n'
    )
    out = tmp_path / "d.csv"
    args = ["duties", "report", SITE, "--month", "2026-11", "--out", str(out), "--config", str(cfg)]
    assert await asyncio.to_thread(hallfleet.cli.main, args) == 0
    printed = capsys.readouterr().out
    # A month gone by: 2 hall kiosks x 21 working days, and Sunday the 1st, when both checked anyway.
    assert "网络检查 44 终端·日 (未通过 1, 未执行 " in printed, printed
    text = out.read_text(encoding="utf-8-sig")
    assert "网络日常检查" in text and "2026-11-02,k2,未通过,centre" in text
    args[4] = "2026-13"
    assert await asyncio.to_thread(hallfleet.cli.main, args) == 1
    assert "YYYY-MM" in capsys.readouterr().err
