"""Reports for the halls: the monthly kiosk SLA report (``sla``), as CSV and XLSX (``export``)."""

from broker.reports.sla import (
    OUTAGE_KINDS,
    DeviceRow,
    IncidentRow,
    SiteTotals,
    SlaReport,
    build_sla_report,
    month_bounds,
    write_csv,
    write_xlsx,
)

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
