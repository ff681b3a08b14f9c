"""``hallfleet queue report|waiting``: window management's queue commands.

``report SITE --month YYYY-MM --out FILE`` writes the month's waits per service and window against QP 000:368's
「10,30,60」 (.xlsx or .csv); ``waiting SITE`` lists the tickets waiting now, longest first, against their limits.
"""

from __future__ import annotations

import argparse
from datetime import timedelta
from pathlib import Path
from typing import Any

from broker.cli_support import Handler, run_with_store
from broker.queueing.fold import waiting_on
from broker.queueing.policy import CLASS_ZH, queue_policy_of
from broker.queueing.report import build_report, write_report
from broker.queueing.rule import within
from broker.sites import Sites
from broker.store.db import Store
from runtime.clock import SystemClock


def add_parsers(sub: Any) -> None:
    top = sub.add_parser("queue", help="排队叫号: tickets waiting now, the monthly 10/30/60 report")
    qsub = top.add_subparsers(dest="queue_action", required=True)
    p = _cmd(qsub, "report", "the month's waits per service and window (QP 000:368)", _report)
    p.add_argument("site")
    p.add_argument("--month", required=True, help="YYYY-MM")
    p.add_argument("--out", type=Path, required=True, help=".xlsx or .csv")
    p = _cmd(qsub, "waiting", "tickets waiting now, longest first, against their limits", _waiting)
    p.add_argument("site")


def _cmd(sub: Any, name: str, help_: str, handler: Handler) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    p.set_defaults(func=lambda a: run_with_store(a, handler))
    return p


async def _report(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    report = await build_report(store, sites, a.site, a.month)
    write_report(report, a.out, sites)
    share = f"{100 * report.within / report.judged:.1f}%" if report.judged else "-"
    print(f"{a.out}: 评判 {report.judged} 张号, 限时内 {report.within} 张 ({share})")
    return 0


async def _waiting(a: argparse.Namespace, store: Store, sites: Sites) -> int:
    now = SystemClock().now()
    policy = queue_policy_of(sites[a.site])
    today = now.astimezone(sites[a.site].site_calendar.zone).date()
    async with store.engine.connect() as conn:
        legs = await waiting_on(conn, a.site, today)
    legs.sort(key=lambda leg: leg.waited(now) or timedelta(0), reverse=True)
    for leg in legs:
        waited, limit = leg.waited(now), policy.limit_min(leg.service)
        minutes = "?" if waited is None else f"{waited / timedelta(minutes=1):.0f}"
        late = "" if waited is None or within(waited, limit) else "  超时"
        cls = CLASS_ZH[policy.service(leg.service).wait_class]
        print(f"{leg.ticket:<8} {leg.service:<8} {cls} 已等 {minutes} 分钟 / 上限 {limit:g}{late}")
    print(f"{len(legs)} 张号等候中")
    return 0
