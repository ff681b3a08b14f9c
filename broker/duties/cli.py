"""``hallfleet duties report SITE --month YYYY-MM --out FILE``: the month's duties and access workbook (network
checks, power-on/off per department, patrol rounds, door alarms and lockers' overdue items; broker/duties/report.py),
.xlsx or .csv, beside ``hallfleet queue report`` and ``hallfleet ratings report``. A month that is not YYYY-MM
exits 1 with why."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from broker.cli_support import Handler, run_with_store
from broker.duties.report import build_report, load_month, write_report
from broker.sites import Sites
from broker.store.db import Store
from runtime.clock import SystemClock


def add_parsers(sub: Any) -> None:
    top = sub.add_parser("duties", help="日常值守: the monthly network check, power-on/off, patrol and access workbook")
    dsub = top.add_subparsers(dest="duties_action", required=True)
    p = _cmd(dsub, "report", "the month's duties and 24-hour area workbook of a site (.xlsx or .csv)", _report)
    p.add_argument("site")
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--out", type=Path, required=True, help=".xlsx or .csv")


def _cmd(sub: Any, name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    p.set_defaults(func=lambda a: run_with_store(a, handler))
    return p


async def _report(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    month = await load_month(store, sites, a.site, a.month, SystemClock().now())
    report = build_report(month)
    write_report(report, a.out, sites)
    s = report.summary
    print(
        f"{a.out}: 网络检查 {s['网络日常检查 终端·日']} 终端·日 (未通过 {s['  未通过']}, 未执行 {s['  未执行']});"
        f" 巡查 完成 {s['巡查轮次 已完成']} 轮, 未完成 {s['巡查轮次 未完成']} 轮"
    )
    return 0
