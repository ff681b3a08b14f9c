"""The monthly queue report per service and window: how many waits kept QP 000:368's 「10,30,60」, the median and
90th-percentile waits, and the tickets abandoned, written with the shared sheet writer (broker/reports/sheets.py).

Counting rules:

- A wait counts in the month of its ticket's day (the site-local day the queue system numbered it).
- A leg is *judged* when its wait is known and over: called (the first call ends it) or abandoned before any
  call (it waited until then). Legs still waiting when the report is made, and legs whose issue was never
  reported (no known start), are not judged; the latter are counted in their own column.
- A leg counts at the window that called it; one abandoned before a call is under 「未叫号」.
- Percentiles are nearest-rank over the judged waits (p50: the wait half the tickets did not exceed).
- Each service ends in a subtotal row and the sheet in a total row, built from the same legs, so the columns
  add up as displayed.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from broker.audit.heads import MonthHeads, month_heads
from broker.queueing.fold import legs_between
from broker.queueing.policy import CLASS_ZH, SEED, QueuePolicy, queue_policy_of
from broker.queueing.rule import Leg, within
from broker.reports.sheets import Col, Sheet, Value, heads_footer, with_heads, write_csv, write_workbook
from broker.reports.sla import month_bounds
from broker.sites import Sites
from broker.store.db import Store

NOT_CALLED = "未叫号"
COLUMNS = (
    Col("事项编码"), Col("事项名称"), Col("等候类别"), Col("时限(分钟)", "decimal"), Col("窗口"),
    Col("评判号数", "int"), Col("限时内", "int"), Col("限时内占比", "pct", decimals=1), Col("等候P50(分钟)", "minutes"),
    Col("等候P90(分钟)", "minutes"), Col("最长等候(分钟)", "minutes"), Col("弃号", "int"), Col("过号", "int"),
    Col("转出", "int"), Col("无取号记录", "int"),
)  # fmt: skip
ITEM = Col("项目")


@dataclass(slots=True)
class Tally:
    waits: list[float] = field(default_factory=list)  # seconds, judged legs
    within: int = 0
    abandoned: int = 0
    no_show: int = 0
    transferred: int = 0
    unknown: int = 0

    def add(self, leg: Leg, limit_min: float) -> None:
        if leg.outcome == "abandoned":
            self.abandoned += 1
            self.no_show += leg.reason == "no_show"
        self.transferred += leg.outcome == "transferred"
        if leg.queued_at is None:
            self.unknown += 1
            return
        if leg.called_at is None and leg.outcome != "abandoned":
            return  # still waiting: not judged yet
        waited = leg.waited(leg.ended_at or leg.queued_at) or timedelta(0)
        self.waits.append(waited.total_seconds())
        self.within += within(waited, limit_min)

    def merge(self, other: Tally) -> None:
        self.waits += other.waits
        for name in ("within", "abandoned", "no_show", "transferred", "unknown"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def nearest_rank(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(math.ceil(pct / 100 * len(ordered)), 1) - 1]


@dataclass(frozen=True, slots=True)
class QueueReport:
    site: str
    name: str
    month: str
    sheet: Sheet
    judged: int
    within: int
    heads: MonthHeads | None = None  # the month's chain heads, printed so a signed report can be checked later


async def build_report(store: Store, sites: Sites, site: str, month: str) -> QueueReport:
    cfg = sites[site]
    policy = queue_policy_of(cfg)
    zone = cfg.site_calendar.zone
    start, end = month_bounds(month, zone)
    async with store.engine.connect() as conn:
        legs = [leg for _, leg in await legs_between(conn, site, start.date(), (end - timedelta(days=1)).date())]
        heads = await month_heads(conn, month)
    tallies: defaultdict[tuple[str, str], Tally] = defaultdict(Tally)
    for leg in legs:
        tallies[(leg.service, leg.window if leg.called_at is not None and leg.window else NOT_CALLED)].add(
            leg, policy.limit_min(leg.service)
        )
    rows, bold = _rows(tallies, policy)
    total = Tally()
    for t in tallies.values():
        total.merge(t)
    rows.append(_row("合计", "", None, None, "", total))
    bold.add(len(rows) - 1)
    limits = policy.limits_min
    title = (f"{cfg.name or site} {month} 排队等候统计 ({SEED} 「10,30,60」: 一般 {limits['general']:g} 分钟,"
             f" 复杂事项 {limits['complex']:g}, 特殊情形 {limits['special']:g})")  # fmt: skip
    sheet = Sheet("排队等候", title, COLUMNS, tuple(rows), bold=frozenset(bold))
    return QueueReport(site, cfg.name or site, month, sheet, len(total.waits), total.within, heads)


def _rows(tallies: dict[tuple[str, str], Tally], policy: QueuePolicy) -> tuple[list[tuple[Value, ...]], set[int]]:
    rows: list[tuple[Value, ...]] = []
    bold: set[int] = set()
    for service in sorted({s for s, _ in tallies}):
        svc = policy.service(service)
        cls = CLASS_ZH[svc.wait_class]
        limit = policy.limit_min(service)
        sub = Tally()
        for (s, window), t in sorted(tallies.items(), key=lambda kv: (kv[0][1] == NOT_CALLED, kv[0][1])):
            if s == service:
                rows.append(_row(service, svc.name, cls, limit, window, t))
                sub.merge(t)
        rows.append(_row(service, svc.name, cls, limit, "小计", sub))
        bold.add(len(rows) - 1)
    return rows, bold


def _row(code: str, name: str, cls: str | None, limit: float | None, window: str, t: Tally) -> tuple[Value, ...]:
    share = 100 * t.within / len(t.waits) if t.waits else None
    return (code, name, cls, limit, window, len(t.waits), t.within, share, nearest_rank(t.waits, 50),
            nearest_rank(t.waits, 90), max(t.waits, default=None), t.abandoned, t.no_show, t.transferred,
            t.unknown)  # fmt: skip


def write_report(report: QueueReport, path: Path, sites: Sites) -> None:
    """XLSX or CSV by the file's suffix (CSV: UTF-8 with a BOM, as every hallfleet report)."""
    zone = sites[report.site].site_calendar.zone
    if path.suffix.lower() == ".csv":
        write_csv(path, [report.sheet], zone, heads_footer(report.heads))
    else:
        write_workbook(path, [report.sheet, summary_sheet(report)], zone)


def summary_sheet(report: QueueReport) -> Sheet:
    """The month's totals (the 合计 row's figures) and the chain heads; after the per-service sheet, which the
    dashboard's download and the hall read first."""
    total = report.sheet.rows[-1]  # the 合计 row
    picked = (5, 6, 7)  # 评判号数, 限时内, 限时内占比
    items = tuple((COLUMNS[i].header, total[i]) for i in picked)
    cols = tuple((ITEM, COLUMNS[i]) for i in picked)
    sheet = Sheet("汇总", f"{report.name} {report.month} 排队等候汇总", (ITEM, Col("数值")), items, row_cols=cols)
    return with_heads(sheet, report.heads)


def month_of(now: datetime) -> str:
    return f"{now:%Y-%m}"
