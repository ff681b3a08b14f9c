"""Reports for the halls: the monthly kiosk SLA report (``sla``, its rows in ``model``), as CSV and XLSX
(``export``)."""

from broker.reports.export import write_csv, write_xlsx
from broker.reports.model import DeviceRow, IncidentRow, SiteTotals, SlaReport
from broker.reports.sla import OUTAGE_KINDS, build_sla_report, month_bounds

__all__ = [
    "OUTAGE_KINDS",
    "DeviceRow",
    "IncidentRow",
    "SiteTotals",
    "SlaReport",
    "build_sla_report",
    "month_bounds",
    "write_csv",
    "write_xlsx",
]
