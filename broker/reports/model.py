"""What a monthly SLA report holds (requirements §11.6 "Monthly: kiosk uptime, SLA compliance, usage by
function, consumable use"). Frozen values: the builder computes them once, the writers only format them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from broker.audit.heads import MonthHeads


@dataclass(frozen=True, slots=True)
class DeviceRow:
    site: str
    device: str
    device_class: str
    hours24: bool  # availability counts wall-clock time, not the hall's opening hours
    counted_s: float  # SLA time in the month up to the report's end
    down_s: float  # counted seconds covered by outage incidents (merged, so never double counted)
    availability_pct: float | None  # None when nothing was counted (a month in the future, a closed month)
    incidents: int  # outages detected in the month (one per outage, however many conditions it had)
    breaches: int  # of those outages
    mttr_s: float | None  # mean SLA time from the outage's start to its last clear, over the month's cleared ones
    max_ttr_s: float | None
    self_healed: int
    remote: int
    on_site: int
    dispatches: int  # on-site visits opened in the month, cancelled ones left out
    dispatches_late: int  # nobody on site by the due time (the end of the working day, §2.4)
    refills: dict[str, int]  # consumable -> refills recorded in the month
    usage: dict[str, int]  # kiosk.usage counter -> uses in the month


@dataclass(frozen=True, slots=True)
class IncidentRow:
    id: str
    device: str  # "*" for a hall-wide outage
    kind: str
    severity: str
    detected_at: datetime  # in the site zone, like every time of the report
    cleared_at: datetime | None
    closed_at: datetime | None
    ttr_s: float | None  # SLA-counted seconds from detection to clear; None while not cleared
    breached: bool
    breach_reason: str
    recovery: str  # self_healed | remote | on_site | ""
    staff_reported_at: datetime | None
    outage: bool = True  # on the SLA clock (counted); False: a lesser incident or the hall-wide row (listed)
    in_hall_outage: bool = False  # a device's outage covered by a hall-wide outage


@dataclass(frozen=True, slots=True)
class SlaReport:
    site: str
    site_name: str
    month: str  # "2026-11"
    start: datetime  # first instant of the month in the site zone
    end: datetime  # first instant of the next month
    devices: list[DeviceRow]
    incidents: list[IncidentRow]  # every incident whose downtime touches the month, by detection time
    generated_at: datetime
    heads: MonthHeads | None = None  # the month's chain heads, printed so a signed report can be checked later

    def counts_in_month(self, row: IncidentRow) -> bool:
        """Counts (incidents, breaches, recoveries, MTTR) belong to the month of detection, so that an incident
        running across a month end is counted once; its downtime is still split between the two months."""
        return self.start <= row.detected_at < self.end

    def totals(self) -> SiteTotals:
        """The sums of the device rows, so that the summary adds up to the sheet of devices."""
        counted = sum(d.counted_s for d in self.devices)
        down = sum(d.down_s for d in self.devices)
        outages = sum(d.incidents for d in self.devices)
        breaches = sum(d.breaches for d in self.devices)
        return SiteTotals(
            devices=len(self.devices),
            counted_s=counted,
            down_s=down,
            availability_pct=100.0 * (1.0 - down / counted) if counted > 0 else None,
            incidents=outages,
            breaches=breaches,
            compliance_pct=100.0 * (outages - breaches) / outages if outages else None,
            dispatches=sum(d.dispatches for d in self.devices),
            dispatches_late=sum(d.dispatches_late for d in self.devices),
        )


@dataclass(frozen=True, slots=True)
class SiteTotals:
    devices: int
    counted_s: float
    down_s: float
    availability_pct: float | None  # weighted by counted time: 1 - total down / total counted
    incidents: int  # outages of the devices (a hall-wide outage counts through each device it covered)
    breaches: int
    compliance_pct: float | None  # outages restored within the breach time / outages
    dispatches: int
    dispatches_late: int
