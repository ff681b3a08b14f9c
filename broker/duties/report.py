"""The monthly duties and access workbook of one site: the kiosks' network checks per day (QP 000:389), the
departmental machines' power-on/off per department (WZ 002:491), the patrol rounds per day with the missed ones
(QP 000:120, WZ 002:133), and the 24-hour area's door alarms and lockers' overdue items (SJ 001 表9), written with
the shared sheet writer (broker/reports/sheets.py).

Counting rules:

- Verdicts are the ones the duties job alerts on (broker/duties/*), recomputed from the stored events for each day
  of the month up to ``now``; a day not over yet counts what is decided (a check still ``pending`` is counted as
  such, never as missed), and days after ``now`` are not listed.
- A machine-day of power duty *complies* when it was switched on by ``on_by`` and shut down cleanly after
  ``off_by``; only decided machine-days (neither side pending) enter the share.
- An alarm counts once, in the month its device says it began (an ``active`` ``door.alarm`` or ``locker.alarm``);
  an overdue item counts in each month during which it was held past the hall's limit (``locker_max_hold_h``).
- Each sheet ends in a total row built from the rows above it, and the summary repeats those totals, so the
  figures add up as displayed.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.audit.heads import MonthHeads, month_heads
from broker.duties.netcheck import NetCheckDay, netcheck_day
from broker.duties.patrol import RoundDay, patrol_day
from broker.duties.power import PowerDay, power_day
from broker.reports.sheets import Col, Sheet, Value, with_heads, write_csv, write_workbook
from broker.reports.sla import month_bounds
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import devices, events, incidents

NET_ZH = {"ok": "通过", "failed": "未通过", "missing": "未执行", "pending": "待检"}
ON_ZH = {"ok": "按时开机", "late": "迟开机", "left_on": "隔夜未关", "not_on": "未开机", "pending": "待定"}
OFF_ZH = {"ok": "按时关机", "not_off": "未关机", "unclean": "非正常关机", "none": "未开机", "pending": "待定"}
ROUND_ZH = {"done": "已完成", "missed": "未完成", "pending": "进行中"}
DOOR_ALARMS = ("forced", "held_open", "lock_fault", "offline")
LOCKER_ALARMS = ("door_fault", "offline")
ROLE_ZH = {"door": "门禁控制器", "locker": "自助寄取柜"}

NET_COLS = (Col("日期", "date"), Col("应检终端", "int"), Col("通过", "int"), Col("未通过", "int"), Col("未执行", "int"),
            Col("待检", "int"), Col("通过率", "pct", decimals=1))  # fmt: skip
NET_DETAIL_COLS = (Col("日期", "date"), Col("终端"), Col("结果"), Col("未通目标"), Col("最后检查", "time"))
POWER_COLS = (Col("职能部门"), Col("机器数", "int"), Col("台·日", "int"), Col("按时开机", "int"), Col("迟开机", "int"),
              Col("隔夜未关", "int"), Col("未开机", "int"), Col("按时关机", "int"), Col("未关机", "int"),
              Col("非正常关机", "int"), Col("待定", "int"), Col("合规台·日", "int"),
              Col("合规率", "pct", decimals=1))  # fmt: skip
POWER_DETAIL_COLS = (Col("日期", "date"), Col("职能部门"), Col("机器"), Col("开机"), Col("开机时间", "time"),
                     Col("关机"), Col("关机时间", "time"))  # fmt: skip
PATROL_COLS = (Col("日期", "date"), Col("轮次"), Col("时段"), Col("应巡点位", "int"), Col("已巡点位", "int"),
               Col("覆盖率", "pct", decimals=1), Col("结果"), Col("巡查人员"), Col("未到点位"),
               Col("发现问题点位"))  # fmt: skip
ACCESS_COLS = (Col("设备"), Col("类型"), Col("门被强行打开", "int"), Col("门长时间未关", "int"), Col("门锁故障", "int"),
               Col("门禁控制器离线", "int"), Col("柜门故障", "int"), Col("寄取柜离线", "int"),
               Col("物品超期未取", "int"), Col("合计", "int"))  # fmt: skip
ITEM, COUNT = Col("项目"), Col("数量", "int")
SHARE = Col("数量", "pct", decimals=1)


@dataclass(frozen=True, slots=True)
class AccessTally:
    device: str
    role: str
    counts: tuple[int, ...]  # DOOR_ALARMS, LOCKER_ALARMS, then overdue items


@dataclass(frozen=True, slots=True)
class DutiesMonth:
    site: str
    name: str
    month: str
    days: tuple[date, ...]
    net: tuple[NetCheckDay, ...]
    power: tuple[PowerDay, ...]
    rounds: tuple[RoundDay, ...]
    access: tuple[AccessTally, ...]
    heads: MonthHeads | None = None  # the month's chain heads, printed so a signed report can be checked later


@dataclass(frozen=True, slots=True)
class DutiesReport:
    month: DutiesMonth
    sheets: tuple[Sheet, ...]
    summary: dict[str, Value]  # the summary sheet's figures by item, as shown


async def load_month(store: Store, sites: Sites, site: str, month: str, now: datetime) -> DutiesMonth:
    """Every day's verdicts of the month up to ``now`` (a month that is not YYYY-MM: ValueError)."""
    cfg = sites[site]
    zone = cfg.site_calendar.zone
    start, end = month_bounds(month, zone)
    last = min((end - timedelta(days=1)).date(), now.astimezone(zone).date())
    days = tuple(start.date() + timedelta(days=i) for i in range((last - start.date()).days + 1))
    net: list[NetCheckDay] = []
    power: list[PowerDay] = []
    rounds: list[RoundDay] = []
    async with store.engine.connect() as conn:
        for day in days:
            net += await netcheck_day(conn, site, cfg, day, now)
            power += await power_day(conn, site, cfg, day, now)
            rounds += await patrol_day(conn, site, cfg, day, now)
        access = await _access(conn, site, start, end, timedelta(hours=cfg.duties.locker_max_hold_h))
        heads = await month_heads(conn, month)
    return DutiesMonth(site, cfg.name or site, month, days, tuple(net), tuple(power), tuple(rounds), access, heads)


def _overdue_within(overdue_from: datetime, until: datetime | None, start: datetime, end: datetime) -> bool:
    """An item held past the limit at some time of [start, end): its incident's clock starts at the deposit
    (``detected_at``), so it became overdue ``limit`` later, and stopped being so when collected (cleared)."""
    return overdue_from < end and (until is None or until > max(start, overdue_from))


async def _access(
    conn: AsyncConnection, site: str, start: datetime, end: datetime, limit: timedelta
) -> tuple[AccessTally, ...]:
    d, e, i = devices.c, events.c, incidents.c
    found = await conn.execute(
        sa.select(d.device, d.role).where(d.site == site, d.role.in_(tuple(ROLE_ZH))).order_by(d.device)
    )
    alarms: Counter[tuple[str, str, str]] = Counter()
    rows = await conn.execute(
        sa.select(e.device, e.type, e.data).where(
            e.site == site, e.type.in_(("door.alarm", "locker.alarm")), e.ts >= start, e.ts < end
        )
    )
    for r in rows:
        data = json.loads(r.data)
        if data.get("active", True):
            alarms[(r.device, r.type, data["alarm"])] += 1
    overdue = Counter(
        o.device
        for o in await conn.execute(
            sa.select(i.device, i.detected_at, i.cleared_at, i.closed_at).where(
                i.site == site, i.kind.like("locker\\_overdue.%", escape="\\"), i.detected_at < end
            )
        )
        if _overdue_within(o.detected_at + limit, o.cleared_at or o.closed_at, start, end)
    )
    out = []
    for dev in found:
        counts = [alarms[(dev.device, "door.alarm", a)] for a in DOOR_ALARMS]
        counts += [alarms[(dev.device, "locker.alarm", a)] for a in LOCKER_ALARMS]
        out.append(AccessTally(dev.device, dev.role, (*counts, overdue[dev.device])))
    return tuple(out)


# -- sheets ----------------------------------------------------------------------------------------------------
def build_report(m: DutiesMonth) -> DutiesReport:
    net, net_total = _net_sheet(m)
    power, power_total = _power_sheet(m)
    patrol, rounds_done, rounds_missed = _patrol_sheet(m)
    access, access_total = _access_sheet(m)
    summary: dict[str, Value] = {
        "网络日常检查 终端·日": sum(net_total[:4]),
        "  通过": net_total[0],
        "  未通过": net_total[1],
        "  未执行": net_total[2],
        "开关机 台·日(已判定)": power_total[0],
        "  合规台·日": power_total[1],
        "巡查轮次 已完成": rounds_done,
        "巡查轮次 未完成": rounds_missed,
        "门禁告警": sum(access_total[:4]),
        "寄取柜告警": sum(access_total[4:6]),
        "寄取柜物品超期未取": access_total[6],
    }
    items = tuple((k, v) for k, v in summary.items())
    cover = Sheet(
        "汇总", f"{m.name} {m.month} 日常值守与24小时区域设备月报", (ITEM, COUNT), items,
        row_cols=tuple((ITEM, COUNT) for _ in items),
    )  # fmt: skip
    cover = with_heads(cover, m.heads)
    return DutiesReport(m, (cover, net, _net_detail(m), power, _power_detail(m), patrol, access), summary)


def _net_sheet(m: DutiesMonth) -> tuple[Sheet, tuple[int, ...]]:
    rows: list[tuple[Value, ...]] = []
    flagged: set[int] = set()
    totals = Counter[str]()
    for day in m.days:
        of_day = Counter[str](n.verdict for n in m.net if n.day == day)
        if not of_day:
            continue
        totals.update(of_day)
        if of_day["failed"] or of_day["missing"]:
            flagged.add(len(rows))
        rows.append(_net_row(day, of_day))
    rows.append(_net_row("合计", totals))
    title = f"{m.name} {m.month} 网络日常检查 (QP 000:389 「网络日常检查」, 每台终端每日自检)"
    sheet = Sheet("网络检查", title, NET_COLS, tuple(rows), frozenset(flagged), frozenset({len(rows) - 1}))
    return sheet, (totals["ok"], totals["failed"], totals["missing"], totals["pending"])


def _net_row(day: Value, c: Counter[str]) -> tuple[Value, ...]:
    decided = c["ok"] + c["failed"] + c["missing"]
    share = 100 * c["ok"] / decided if decided else None
    return (day, sum(c.values()), c["ok"], c["failed"], c["missing"], c["pending"], share)


def _net_detail(m: DutiesMonth) -> Sheet:
    rows = tuple(
        (n.day, n.device, NET_ZH[n.verdict], ", ".join(n.failed), n.checked_at)
        for n in m.net
        if n.verdict in ("failed", "missing")
    )
    return Sheet("网络检查异常", f"{m.name} {m.month} 网络日常检查 未通过与未执行", NET_DETAIL_COLS, rows)


def _power_sheet(m: DutiesMonth) -> tuple[Sheet, tuple[int, int]]:
    rows: list[tuple[Value, ...]] = []
    flagged: set[int] = set()
    all_days: list[PowerDay] = []
    for dept in sorted({p.department for p in m.power}):
        mine = [p for p in m.power if p.department == dept]
        all_days += mine
        if any(_failed(p) for p in mine):
            flagged.add(len(rows))
        rows.append(_power_row(dept, mine))
    rows.append(_power_row("合计", all_days))
    title = f"{m.name} {m.month} 自助服务区计算机每日开关机 (WZ 002:491, 各职能部门自行负责)"
    sheet = Sheet("开关机", title, POWER_COLS, tuple(rows), frozenset(flagged), frozenset({len(rows) - 1}))
    decided = [p for p in all_days if not _pending(p)]
    return sheet, (len(decided), sum(_complied(p) for p in decided))


def _pending(p: PowerDay) -> bool:
    return p.on == "pending" or p.off == "pending"


def _complied(p: PowerDay) -> bool:
    return p.on == "ok" and p.off == "ok"


def _failed(p: PowerDay) -> bool:
    """A decided machine-day that did not comply (left on overnight too: WZ 002:491's 「确保用电安全」)."""
    return not _pending(p) and not _complied(p)


def _power_row(dept: str, days: Sequence[PowerDay]) -> tuple[Value, ...]:
    on, off = Counter(p.on for p in days), Counter(p.off for p in days)
    pending = sum(_pending(p) for p in days)
    complied = sum(_complied(p) for p in days)
    decided = len(days) - pending
    share = 100 * complied / decided if decided else None
    return (dept, len({p.device for p in days}), len(days), on["ok"], on["late"], on["left_on"], on["not_on"],
            off["ok"], off["not_off"], off["unclean"], pending, complied, share)  # fmt: skip


def _power_detail(m: DutiesMonth) -> Sheet:
    rows = tuple(
        (p.day, p.department, p.device, ON_ZH[p.on], p.booted_at, OFF_ZH[p.off], p.off_at)
        for p in m.power
        if _failed(p)
    )
    return Sheet("开关机异常", f"{m.name} {m.month} 开关机 未合规的台·日", POWER_DETAIL_COLS, rows)


def _patrol_sheet(m: DutiesMonth) -> tuple[Sheet, int, int]:
    rows: list[tuple[Value, ...]] = []
    flagged: set[int] = set()
    for r in m.rounds:
        if r.verdict == "missed":
            flagged.add(len(rows))
        rows.append(_round_row(r))
    done = sum(r.verdict == "done" for r in m.rounds)
    missed = sum(r.verdict == "missed" for r in m.rounds)
    rows.append(("合计", f"已完成 {done} 轮", f"未完成 {missed} 轮", None, None, None, None, None, None, None))
    title = f"{m.name} {m.month} 巡查 (QP 000:120 「每天两次巡查」; WZ 002:133 定时巡查)"
    sheet = Sheet("巡查", title, PATROL_COLS, tuple(rows), frozenset(flagged), frozenset({len(rows) - 1}))
    return sheet, done, missed


def _round_row(r: RoundDay) -> tuple[Value, ...]:
    reached = r.points - len(r.missing)
    return (r.day, r.name, f"{r.start:%H:%M}-{r.end:%H:%M}", r.points, reached, r.coverage_pct,
            ROUND_ZH[r.verdict], ", ".join(r.officers), ", ".join(r.missing), ", ".join(r.issues))  # fmt: skip


def _access_sheet(m: DutiesMonth) -> tuple[Sheet, tuple[int, ...]]:
    rows: list[tuple[Value, ...]] = [(a.device, ROLE_ZH[a.role], *a.counts, sum(a.counts)) for a in m.access]
    totals = tuple(sum(a.counts[i] for a in m.access) for i in range(len(DOOR_ALARMS) + len(LOCKER_ALARMS) + 1))
    rows.append(("合计", "", *totals, sum(totals)))
    flagged = frozenset(i for i, a in enumerate(m.access) if sum(a.counts))
    title = f"{m.name} {m.month} 24小时区域 智能门禁与自助寄取柜 (SJ 001 表9) 告警与超期未取"
    return Sheet("门禁与寄取柜", title, ACCESS_COLS, tuple(rows), flagged, frozenset({len(rows) - 1})), totals


def write_report(report: DutiesReport, path: Path, sites: Sites) -> None:
    """XLSX or CSV by the file's suffix (CSV: UTF-8 with a BOM, as every hallfleet report)."""
    zone = sites[report.month.site].site_calendar.zone
    if path.suffix.lower() == ".csv":
        write_csv(path, report.sheets, zone)  # the cover sheet, first, carries the chain heads
    else:
        write_workbook(path, report.sheets, zone)
