"""The month's attendance workbook as the window management section signs it: the bulletin per unit, the exception
details, the suspected proxy clockings and the month's chain heads, assembled once for every place that writes it
(``hallfleet attendance month``, the dashboard's download, the demo), so the copies cannot drift apart: the
dashboard's copy had lost where judging starts (a hall live mid-month) and the proxy-clocking sheet.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from broker.attendance.clocking_report import clocking_table
from broker.attendance.proxy_clocking import flags_between
from broker.attendance.reports import Table, exception_details, monthly_by_unit
from broker.attendance.service import Period, load_period
from broker.audit.heads import MonthHeads, month_heads
from broker.reports.sla import month_bounds
from broker.sites import Sites
from broker.store.db import Store


@dataclass(frozen=True, slots=True)
class MonthWorkbook:
    period: Period
    tables: list[Table]  # the bulletin first (a CSV holds only it), then the details and the proxy clockings
    heads: MonthHeads  # printed on the summary sheet, so the signed bulletin can be checked later


async def month_workbook(store: Store, sites: Sites, site: str, month: str, *, now: datetime) -> MonthWorkbook:
    """Everything the month's workbook holds, as of ``now`` (a month in progress shows today as provisional)."""
    start, end = month_bounds(month, sites[site].site_calendar.zone)
    first, last = start.date(), end.date() - timedelta(days=1)
    p = await load_period(store, sites, site, first, last, now=now)
    rule = sites[site].attendance.monthly
    monthly = monthly_by_unit(p.days, p.members, rule, month, site_name=p.site_name, judged_from=p.judged_from)
    details = exception_details(p.days, p.members, first, last, faults=p.faults, zone=p.zone, site_name=p.site_name)
    async with store.engine.connect() as conn:  # suspected proxy clocking, reviewed or not (clocking_report.py)
        flags = await flags_between(conn, site, start, end)
        heads = await month_heads(conn, month)
    clocking = clocking_table(flags, p.members, month, zone=p.zone, site_name=p.site_name)
    return MonthWorkbook(p, [monthly, replace(details, period=month), clocking], heads)
