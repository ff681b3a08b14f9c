"""``hallfleet attendance day|week|month|faults``: the window management section's attendance reports.

``day`` prints the day's exceptions (and writes them with ``--out``); ``week`` and ``month`` write the summaries
with the exception details; ``faults`` writes the attendance terminals' outages and the staff-days they excused
(SJ E.1.3). ``--out`` decides the format: ``.xlsx`` holds every sheet, ``.csv`` the first table.
"""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from broker.attendance.labels import labels
from broker.attendance.month_report import month_workbook
from broker.attendance.reports import (
    Table,
    daily_exceptions,
    device_fault_report,
    exception_details,
    headers,
    text_rows,
    weekly_summary,
    write_csv,
    write_xlsx,
)
from broker.attendance.service import Period, load_period
from broker.audit.heads import MonthHeads
from broker.cli_support import Handler, run_with_store
from broker.reports.sla import month_bounds
from broker.sites import Sites
from broker.store.db import Store
from runtime.clock import SystemClock


def add_parsers(sub: Any) -> None:
    att = sub.add_parser("attendance", help="attendance reports: daily exceptions, weekly, monthly, terminal faults")
    asub = att.add_subparsers(dest="attendance_action", required=True)
    p = _cmd(asub, "day", "the day's attendance exceptions (考勤异常日报)", _day, out_required=False)
    p.add_argument("day", type=_date, help="YYYY-MM-DD")
    p = _cmd(asub, "week", "the week (Monday to Sunday) holding DAY (周考勤)", _week, out_required=True)
    p.add_argument("day", type=_date, help="YYYY-MM-DD")
    p = _cmd(asub, "month", "the monthly bulletin per unit, with the exception details (月度考勤通报)", _month)
    p.add_argument("month", help="YYYY-MM")
    p = _cmd(asub, "faults", "attendance terminal outages and the staff-days they excused (SJ E.1.3)", _faults)
    p.add_argument("month", help="YYYY-MM")


def _cmd(sub: Any, name: str, help_: str, handler: Handler, *, out_required: bool = True) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("site")
    p.add_argument("--out", type=Path, required=out_required, help="file.xlsx (every sheet) or file.csv")
    p.add_argument("--lang", choices=["zh-CN", "en"], default="zh-CN")
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    p.set_defaults(func=lambda a: run_with_store(a, handler))
    return p


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date: write YYYY-MM-DD, e.g. 2026-11-24") from None


def _judging(a: argparse.Namespace, sites: Sites) -> None:
    if not sites[a.site].attendance.enabled:
        raise ValueError(f"{a.site} does not judge attendance: its site config says attendance.enabled = false")


async def _period(a: argparse.Namespace, store: Store, sites: Sites, first: date, last: date) -> Period:
    _judging(a, sites)
    return await load_period(store, sites, a.site, first, last, now=SystemClock().now())


def _month_days(sites: Sites, site: str, month: str) -> tuple[date, date]:
    start, end = month_bounds(month, sites[site].site_calendar.zone)
    return start.date(), end.date() - timedelta(days=1)


def _save(a: argparse.Namespace, tables: list[Table], heads: MonthHeads | None = None) -> None:
    if a.out.suffix.lower() == ".xlsx":
        write_xlsx(tables, a.out, a.lang, heads)
    else:
        write_csv(tables[0], a.out, a.lang, heads)
    print(f"{a.out}: " + ", ".join(f"{labels(a.lang)[t.what]} {len(t.rows)}" for t in tables))


async def _day(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    p = await _period(a, store, sites, a.day, a.day)
    table = daily_exceptions(p.days, p.members, a.day, faults=p.faults, zone=p.zone, site_name=p.site_name)
    w = labels(a.lang)
    print(w.title(table.site_name, table.period, table.what))
    for line in [headers(table, w), *text_rows(table, w)]:
        print("\t".join(line))
    if a.out is not None:
        _save(a, [table])
    return 0


async def _week(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    first = a.day - timedelta(days=a.day.weekday())
    last = first + timedelta(days=6)
    p = await _period(a, store, sites, first, last)
    _save(
        a,
        [
            weekly_summary(p.days, p.members, first, last, site_name=p.site_name),
            exception_details(p.days, p.members, first, last, faults=p.faults, zone=p.zone, site_name=p.site_name),
        ],
    )
    return 0


async def _month(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    _judging(a, sites)
    book = await month_workbook(store, sites, a.site, a.month, now=SystemClock().now())  # as the dashboard's copy
    _save(a, book.tables, book.heads)
    return 0


async def _faults(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    first, last = _month_days(sites, a.site, a.month)
    p = await _period(a, store, sites, first, last)
    _save(a, device_fault_report(p.days, p.faults, p.members, zone=p.zone, period=a.month, site_name=p.site_name))
    return 0
