"""The monthly 好差评 report (§11.6): ratings per window and staff member for the month and per day, the negative-
rating ledger, and the two rates SJ 001:896 sets at 100 %: replies to real-name negative ratings and rectification
of objective ones.

Counting rules:

- A rating counts on the site-local day of its time (the pad's clock when synchronised, else its receipt).
- A rating a reviewer confirmed as a proxy rating (代评属实) is left out of the level counts and shown in its own
  column; a flagged one not yet reviewed counts, and is shown as 疑似代评. Nothing else is left out.
- The reply rate is replied / real-name negative ratings of the month; the denominator comes from the ratings
  themselves, so a negative rating the job has not opened a follow-up for yet counts as not answered. The
  rectification rate is rectified / ratings judged objective. A month without any gives no rate ("-").

Files: XLSX (one sheet per table, numbers kept as numbers, a rate under target highlighted) or CSV (UTF-8 with a
BOM, every table one after the other), both written by the shared sheet writer (broker/reports/sheets.py) as the
SLA and attendance reports are; the monthly sheet ends in the 合计 the summary repeats.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa

from broker.audit.heads import MonthHeads, month_heads
from broker.ratings.followups import followups
from broker.ratings.model import LEVEL_ZH, Rating, ratings_between
from broker.ratings.policy import LEVELS, RatingPolicy, policy_of
from broker.ratings.proxy import flags
from broker.reports.sheets import Col, Sheet, heads_footer, with_heads, write_workbook
from broker.reports.sheets import write_csv as write_sheets_csv
from broker.reports.sla import month_bounds
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import staff

TARGET_PCT = 100.0  # SJ 001:896: 实名差评回复率 and 客观差评整改率 应达到 100%
Value = str | int | float | datetime | date | None
Fmt = Literal["text", "int", "num", "pct", "time", "date"]
Cell = tuple[Value, Fmt]
# Cell kinds as the shared sheet writer (broker/reports/sheets.py) reads them: rates with one decimal as the
# targets are stated, averages with two.
_SHEET_COL: dict[Fmt, Col] = {
    "text": Col(""),
    "int": Col("", "int"),
    "num": Col("", "decimal", decimals=2),
    "pct": Col("", "pct", decimals=1),
    "time": Col("", "time"),
    "date": Col("", "date"),
}


# -- the numbers -----------------------------------------------------------------------------------------
@dataclass(slots=True)
class Tally:
    """Ratings of one window and staff member (on one day, or in the month)."""

    levels: Counter[int]
    suspect: int = 0  # flagged, not reviewed yet (counted)
    proxy: int = 0  # confirmed proxy ratings (not counted)

    @property
    def total(self) -> int:
        return sum(self.levels.values())

    def negative(self, policy: RatingPolicy) -> int:
        return sum(self.levels[level] for level in policy.negative_levels)

    @property
    def average(self) -> float | None:
        return sum(k * v for k, v in self.levels.items()) / self.total if self.total else None


@dataclass(frozen=True, slots=True)
class Targets:
    ratings: int
    negatives: int
    real_name: int  # real-name negative ratings: the reply rate's denominator
    replied: int
    replied_on_time: int
    objective: int
    rectified: int
    rectified_on_time: int
    undecided: int  # negative ratings nobody has judged objective or not
    suspect: int
    proxy: int

    @property
    def reply_pct(self) -> float | None:
        return pct(self.replied, self.real_name)

    @property
    def rectify_pct(self) -> float | None:
        return pct(self.rectified, self.objective)


def pct(part: int, whole: int) -> float | None:
    """Percent with one decimal, as reported: 2 of 3 -> 66.7."""
    return round(100 * part / whole, 1) if whole else None


@dataclass(frozen=True, slots=True)
class RatingReport:
    site: str
    site_name: str
    month: str
    zone: tzinfo
    policy: RatingPolicy
    names: dict[str, str]  # staff id -> name (roster; centre only)
    monthly: dict[tuple[str, str], Tally]  # (window, staff) ->
    daily: dict[tuple[date, str, str], Tally]  # (day, window, staff) ->
    ledger: list[Any]  # rating_followups rows of the month's ratings
    targets: Targets
    generated_at: datetime
    heads: MonthHeads | None = None  # the month's chain heads, printed so a signed report can be checked later


async def build_report(store: Store, sites: Sites, site: str, month: str, *, now: datetime) -> RatingReport:
    cfg = sites[site]
    policy = policy_of(cfg)
    zone = cfg.site_calendar.zone
    start, end = month_bounds(month, zone)
    async with store.engine.connect() as conn:
        ratings = await ratings_between(conn, site, start, end)
        flagged = await flags(conn, site, reviewed=True, start=start, end=end)
        ledger = await followups(conn, site, start=start, end=end)
        names = {r.staff_id: r.name for r in (await conn.execute(sa.select(staff).where(staff.c.site == site))).all()}
        heads = await month_heads(conn, month)
    verdicts = proxy_verdicts(flagged)
    monthly: defaultdict[tuple[str, str], Tally] = defaultdict(lambda: Tally(Counter()))
    daily: defaultdict[tuple[date, str, str], Tally] = defaultdict(lambda: Tally(Counter()))
    for r in ratings:
        day = r.at.astimezone(zone).date()
        for tally in (monthly[(r.window, r.staff_id)], daily[(day, r.window, r.staff_id)]):
            count_rating(tally, r, verdicts.get(r.event_id))
    targets = _targets(ratings, verdicts, ledger, policy)
    return RatingReport(
        site, cfg.name or site, month, zone, policy, names, dict(monthly), dict(daily), ledger, targets, now, heads
    )


def proxy_verdicts(rows: Iterable[Any]) -> dict[str, str]:
    """event id -> "proxy" (any of its flags confirmed), "" (one not reviewed yet, e.g. raised after a review) or
    "honest"."""
    seen: defaultdict[str, set[str]] = defaultdict(set)
    for row in rows:
        seen[row.event_id].add(row.verdict or "")
    return {e: "proxy" if "proxy" in v else ("" if "" in v else "honest") for e, v in seen.items()}


def count_rating(t: Tally, r: Rating, verdict: str | None) -> None:
    """The counting rule of the module docstring; the dashboard's day tally (broker/api/views.py) counts with it."""
    if verdict == "proxy":
        t.proxy += 1
        return
    t.levels[r.level] += 1
    if verdict == "":
        t.suspect += 1


def _targets(ratings: Sequence[Rating], verdicts: dict[str, str], ledger: Sequence[Any], p: RatingPolicy) -> Targets:
    counted = [r for r in ratings if verdicts.get(r.event_id) != "proxy"]
    negative = [r for r in counted if r.level in p.negative_levels]
    real_name = {r.event_id for r in negative if r.service_id is not None}
    rows = {row.event_id: row for row in ledger}
    answered = [rows[e] for e in real_name if e in rows and rows[e].replied_at is not None]
    objective = [row for row in ledger if row.objective is True]
    fixed = [row for row in objective if row.rectified_at is not None]
    return Targets(
        ratings=len(counted),
        negatives=len(negative),
        real_name=len(real_name),
        replied=len(answered),
        replied_on_time=sum(1 for row in answered if row.reply_due is None or row.replied_at <= row.reply_due),
        objective=len(objective),
        rectified=len(fixed),
        rectified_on_time=sum(1 for row in fixed if row.rectify_due is None or row.rectified_at <= row.rectify_due),
        undecided=sum(1 for r in negative if r.event_id not in rows or rows[r.event_id].objective is None),
        suspect=sum(1 for r in ratings if verdicts.get(r.event_id) == ""),
        proxy=len(ratings) - len(counted),
    )


# -- tables ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Table:
    sheet: str
    title: str
    headers: list[str]
    rows: list[list[Cell]]
    low: list[bool]  # per row: a rate under its target
    bold: frozenset[int] = frozenset()  # rows that are totals


_TALLY_HEADERS = ["评价数", *(LEVEL_ZH[level] for level in reversed(LEVELS)), "平均分", "差评数", "差评率(%)"]
_TALLY_HEADERS += ["疑似代评(待核实)", "核实代评(未计入)"]


def tables(report: RatingReport) -> list[Table]:
    return [summary_table(report), monthly_table(report), daily_table(report), ledger_table(report)]


def summary_table(report: RatingReport) -> Table:
    t = report.targets

    def rate(value: float | None) -> list[Cell]:
        met = "-" if value is None else ("是" if value >= TARGET_PCT else "否")
        return [(value, "pct"), (TARGET_PCT, "pct"), (met, "text")]

    def count(value: int) -> list[Cell]:
        return [(value, "int"), (None, "text"), (None, "text")]

    items: list[tuple[str, list[Cell]]] = [
        ("评价数 (不含核实代评)", count(t.ratings)),
        ("差评数", count(t.negatives)),
        ("实名差评数", count(t.real_name)),
        ("实名差评已回复", count(t.replied)),
        ("其中按时回复", count(t.replied_on_time)),
        ("实名差评回复率(%)", rate(t.reply_pct)),
        ("客观差评数", count(t.objective)),
        ("客观差评已整改", count(t.rectified)),
        ("其中按时整改", count(t.rectified_on_time)),
        ("客观差评整改率(%)", rate(t.rectify_pct)),
        ("差评待认定是否客观", count(t.undecided)),
        ("疑似代评(待核实)", count(t.suspect)),
        ("核实代评(未计入)", count(t.proxy)),
    ]
    rows = [[(name, "text"), *cells] for name, cells in items]
    low = [cells[2][0] == "否" for _, cells in items]
    headers = ["指标", "数值", "目标", "是否达标"]
    return Table("达标情况", _title(report, "好差评达标情况"), headers, rows, low)


def monthly_table(report: RatingReport) -> Table:
    """A row per window and staff member, then the 合计 the summary sheet repeats (its 评价数 and 差评数), so the
    rows visibly add up to the figures the hall signs."""
    keys = sorted(report.monthly)
    rows = [[*_who(report, w, s), *_tally(report.monthly[(w, s)], report)] for w, s in keys]
    everyone = _sum_tallies(report.monthly.values())
    rows.append([("合计", "text"), (None, "text"), (None, "text"), *_tally(everyone, report)])
    return Table("月度统计", _title(report, "好差评月度统计 (按窗口、人员)"), ["窗口", "工号", "姓名", *_TALLY_HEADERS],
                 rows, [False] * len(rows), frozenset({len(rows) - 1}))  # fmt: skip


def _sum_tallies(tallies: Iterable[Tally]) -> Tally:
    out = Tally(Counter())
    for t in tallies:
        out.levels.update(t.levels)
        out.suspect += t.suspect
        out.proxy += t.proxy
    return out


def daily_table(report: RatingReport) -> Table:
    keys = sorted(report.daily)
    rows = [[(d, "date"), *_who(report, w, s), *_tally(report.daily[(d, w, s)], report)] for d, w, s in keys]
    headers = ["日期", "窗口", "工号", "姓名", *_TALLY_HEADERS]
    return Table("每日统计", _title(report, "好差评每日统计"), headers, rows, [False] * len(rows))


def _who(report: RatingReport, window: str, staff_id: str) -> list[Cell]:
    return [(window, "text"), (staff_id, "text"), (report.names.get(staff_id, ""), "text")]


def _tally(t: Tally, report: RatingReport) -> list[Cell]:
    negative = t.negative(report.policy)
    return [
        (t.total, "int"),
        *((t.levels[level], "int") for level in reversed(LEVELS)),
        (t.average, "num"),
        (negative, "int"),
        (pct(negative, t.total), "pct"),
        (t.suspect, "int"),
        (t.proxy, "int"),
    ]


def ledger_table(report: RatingReport) -> Table:
    headers = ["评价时间", "窗口", "工号", "姓名", "评价", "实名", "办件编号", "回复期限", "回复时间", "回复人"]
    headers += [
        "回复内容",
        "按时回复",
        "客观差评",
        "整改期限",
        "整改时间",
        "整改人",
        "整改内容",
        "按时整改",
        "评价编号",
    ]
    rows: list[list[Cell]] = []
    low: list[bool] = []
    for r in report.ledger:
        reply_ok = _on_time(r.replied_at, r.reply_due, report.generated_at)
        fix_ok = _on_time(r.rectified_at, r.rectify_due, report.generated_at) if r.objective else None
        rows.append(
            [
                (r.rated_at, "time"), *_who(report, r.window, r.staff_id),
                (LEVEL_ZH.get(r.level, str(r.level)), "text"), (_yes_no(r.real_name), "text"), (r.service_id, "text"),
                (r.reply_due, "time"), (r.replied_at, "time"), (r.replied_by, "text"), (r.reply_text, "text"),
                (_yes_no(reply_ok), "text"), ("待认定" if r.objective is None else _yes_no(r.objective), "text"),
                (r.rectify_due, "time"), (r.rectified_at, "time"), (r.rectified_by, "text"), (r.rectify_text, "text"),
                (_yes_no(fix_ok), "text"), (r.event_id, "text"),
            ]
        )  # fmt: skip
        low.append(reply_ok is False or fix_ok is False)
    return Table("差评台账", _title(report, "差评回复与整改台账"), headers, rows, low)


def _on_time(done: datetime | None, deadline: datetime | None, now: datetime) -> bool | None:
    """True: done by the deadline; False: done late, or not done and the deadline passed; None: nothing to judge."""
    if deadline is None:
        return None
    if done is None:
        return False if now > deadline else None
    return done <= deadline


def _yes_no(value: bool | None) -> str:
    return "" if value is None else ("是" if value else "否")


def _title(report: RatingReport, what: str) -> str:
    return f"{report.site_name} {report.month} {what}"


# -- files -----------------------------------------------------------------------------------------------
def write_csv(report: RatingReport, path: Path) -> None:
    """Every table, each a title line and a header row, a blank line between them, then the month's chain heads
    as the SLA CSV ends; the shared sheet writer writes it, so each figure reads as the workbook shows it."""
    sheets = [_sheet(table) for table in tables(report)]
    write_sheets_csv(path, sheets, report.zone, footer=heads_footer(report.heads))


def write_xlsx(report: RatingReport, path: Path) -> None:
    summary, *rest = (_sheet(table) for table in tables(report))
    write_workbook(path, [with_heads(summary, report.heads), *rest], report.zone)


def _sheet(table: Table) -> Sheet:
    """Each cell keeps its own kind: the summary mixes counts and rates in one column."""
    return Sheet(
        name=table.sheet,
        title=table.title,
        columns=tuple(Col(h) for h in table.headers),
        rows=tuple(tuple(v for v, _ in row) for row in table.rows),
        flagged=frozenset(i for i, low in enumerate(table.low) if low),
        bold=table.bold,
        row_cols=tuple(tuple(_SHEET_COL[fmt] for _, fmt in row) for row in table.rows),
    )
