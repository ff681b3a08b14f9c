"""Per-site policy: the hall's calendar, which devices run 24 hours, the SLA steps, hall-wide outages,
consumables and the maintenance cadence. Defaults are the regulations' numbers
(requirements-from-regulations.md §2.4, §2.5, §11.3, §11.4); every one can be set per site.
"""

from __future__ import annotations

import logging
from datetime import date, datetime
from fnmatch import fnmatchcase
from functools import cached_property
from typing import Literal

from pydantic import Field, model_validator

from broker.attendance.policy import PunchPolicy
from broker.attendance.proxy_policy import ProxyClockingPolicy
from broker.calendar import CalendarConfig, Hours, SiteCalendar, WallClockHours
from broker.duties.policy import DutiesPolicy
from broker.queueing.policy import QueuePolicy
from broker.ratings.policy import RatingPolicy
from config.base import Section
from drivers.face.config import FaceSiteSettings

log = logging.getLogger(__name__)
_WARNED: set[str] = set()  # devices whose 24-hour status a name pattern decided (logged once each)


class SlaPolicy(Section):
    act_after_s: float = Field(
        default=30.0,
        ge=0,
        le=3600,
        description="T+0 actions (remediation, first page) wait this long, so that the agent's own self-healing"
        " and a hall-wide outage are seen first (Alertmanager's group_wait)",
    )
    remediation: list[str] = Field(
        default_factory=lambda: ["restart_app"],
        description="Commands sent at T+0 to a kiosk that is down but connected (none to an offline one)",
    )
    warn_after_min: float = Field(default=20, gt=0, description="Warning step, minutes of SLA time")
    breach_after_min: float = Field(default=30, gt=0, description="Breach: not restored remotely in time")
    dispatch_on_breach: bool = Field(default=True, description="Open an on-site dispatch at breach")
    onsite_min_open_min: float = Field(
        default=60,
        ge=0,
        le=24 * 60,
        description="On-site deadline: QP 000:401 「远程无法解决的问题, 技术公司工作人员在工作日内及时到达」 (G6)."
        " Due by the close of the working day the dispatch opens in; when less opening time than this is left"
        " that day (or the hall is closed), by the close of the next working day (a 调休 Saturday is one). The"
        " seed gives no hours: 60 leaves a technician an hour of the hall's time to reach a town or bank extension"
        " point; 0 keeps the same day whenever the hall is still open",
    )
    verify_s: float = Field(
        default=60.0, ge=0, description="A cleared condition must stay clear, with the device heard, this long"
    )
    flap_window_min: float = Field(
        default=10, ge=0, description="A condition back within this time reopens the same incident: no new page"
    )
    escalate_after_min: list[float] = Field(
        default_factory=lambda: [15.0],
        description="Escalation tiers: minutes after the first page with nobody acknowledging",
    )

    @model_validator(mode="after")
    def _ordered(self) -> SlaPolicy:
        if self.warn_after_min >= self.breach_after_min:
            raise ValueError("warn_after_min must be less than breach_after_min")
        return self


class HallOutagePolicy(Section):
    min_devices: int = Field(default=3, ge=2, description="At least this many devices of the site down at once...")
    min_fraction: float = Field(default=0.5, gt=0, le=1, description="...and at least this share of its devices")
    window_s: float = Field(default=120.0, gt=0, description="...detected within this many seconds of each other")


class ConsumablesPolicy(Section):
    low_pct: float = Field(default=15.0, ge=0, le=100, description="A level at or under this is low")
    restock_lead_h: float = Field(
        default=4.0, ge=0, description="Raise a restock task when the forecast says empty within this many hours"
    )
    receipts_after_near_end: int = Field(
        default=150, ge=1, description="Receipts a thermal roll still prints after its near-end sensor trips"
    )
    usage_counter: str = Field(default="tickets", description="kiosk.usage counter that consumes receipt paper")
    history_days: float = Field(default=7.0, gt=0, description="Usage history the forecast's rate is taken from")


class MaintenancePolicy(Section):
    clean_per_day: int = Field(default=1, ge=0, description="Exterior cleanings a day (WZ: at least 1); 0 = off")
    clean_due: str = Field(default="17:00", pattern=r"^\d{2}:\d{2}$", description="Daily cleaning due by (local)")
    clean_closed_days: Literal["24h", "all", "none"] = Field(
        default="24h",
        description="Days the hall is closed (weekends, holidays): clean only the 24-hour devices (default: their"
        " area stays open, and WZ 002:489 asks 「每天至少进行一次外部清洁」, every day), every device, or none",
    )
    inspections_per_quarter: int = Field(default=1, ge=0, description="Joint inspections a quarter; 0 = off")
    inspection_remind_days: int = Field(
        default=14, ge=0, description="Remind this many days before the quarter ends if none is recorded"
    )
    device_classes: list[str] = Field(default_factory=lambda: ["kiosk"], description="Which devices it applies to")


class SiteConfig(Section):
    name: str = Field(default="", description="Display name, e.g. 青浦区政务服务中心")
    calendar: CalendarConfig = Field(default_factory=CalendarConfig)
    always_on: list[str] = Field(
        default_factory=list,
        description="DEPRECATED: device-name patterns (fnmatch) of 24-hour devices, read only for a device whose"
        " 24-hour status is not registered (`hallfleet provision hours24 SITE/DEVICE on|off`, or `hallfleet"
        " provision device --hours24`); a pattern that decides is logged once per device. Empty by default: a"
        " device nobody registered counts the hall's opening hours, whatever its name",
    )
    classes: dict[str, str] = Field(
        default_factory=dict,
        description="Device-name pattern -> device class, where the agent's role does not say it",
    )
    sla: SlaPolicy = Field(default_factory=SlaPolicy)
    hall_outage: HallOutagePolicy = Field(default_factory=HallOutagePolicy)
    consumables: ConsumablesPolicy = Field(default_factory=ConsumablesPolicy)
    maintenance: MaintenancePolicy = Field(default_factory=MaintenancePolicy)
    go_live: date | None = Field(
        default=None,
        description="The day the hall's system went live: attendance is judged, reported and locked from it, never"
        " before (unset: from the day of the site's first stored punch)",
    )
    attendance: PunchPolicy = Field(default_factory=PunchPolicy, description="How staff punches are judged here")
    face: FaceSiteSettings = Field(
        default_factory=FaceSiteSettings,
        description="The face terminals' match threshold, liveness and its limits, for every terminal of the site:"
        " the centre puts them in each one's desired config (broker/attendance/face_settings.py)",
    )
    ratings: RatingPolicy = Field(
        default_factory=RatingPolicy, description="好差评: proxy patterns, follow-up deadlines"
    )
    queueing: QueuePolicy = Field(
        default_factory=QueuePolicy, description="排队叫号: each service's wait class, the 10/30/60 limits (QP 000:368)"
    )
    duties: DutiesPolicy = Field(
        default_factory=DutiesPolicy,
        description="Daily duties the devices prove: network check, departmental power-on/off, patrol rounds, lockers",
    )
    proxy_clocking: ProxyClockingPolicy = Field(
        default_factory=ProxyClockingPolicy,
        description="代打卡: which punch patterns are flagged, what a confirmed one does",
    )

    @cached_property
    def site_calendar(self) -> SiteCalendar:
        return SiteCalendar(self.calendar)

    def is_always_on(self, device: str, registered: bool | None = None) -> bool:
        """A 24-hour device counts wall-clock time. Its registered status (the devices table, from the
        provisioning registry) decides; the name patterns only for a device nobody registered."""
        if registered is not None:
            return registered
        by_name = any(fnmatchcase(device, p) for p in self.always_on)
        if by_name and device not in _WARNED:
            _WARNED.add(device)
            log.warning(
                "%s counts as a 24-hour device by its name (always_on = %s), which is deprecated: register it"
                " with `hallfleet provision hours24 SITE/%s on`",
                device,
                self.always_on,
                device,
            )
        return by_name

    def onsite_due(self, t: datetime) -> datetime:
        """When a technician sent at ``t`` must be on site (``sla.onsite_min_open_min``, QP 000:401)."""
        cal = self.site_calendar
        due = cal.end_of_working_day(t)
        if cal.open_seconds(t, due) < self.sla.onsite_min_open_min * 60:
            due = cal.end_of_working_day(due)  # at today's close: the next working day's
        return due

    def hours_for(self, device: str, registered: bool | None = None) -> Hours:
        """What the SLA clock of this device counts: wall-clock time, or the hall's opening hours."""
        return WallClockHours() if self.is_always_on(device, registered) else self.site_calendar

    def device_class(self, device: str, role: str) -> str:
        for pattern, cls in self.classes.items():
            if fnmatchcase(device, pattern):
                return cls
        return role or "unknown"


class Sites:
    """The configured sites; a site nobody configured gets the defaults."""

    def __init__(self, sites: dict[str, SiteConfig]) -> None:
        self._sites = dict(sites)
        self._default = SiteConfig()

    def __getitem__(self, site: str) -> SiteConfig:
        return self._sites.get(site, self._default)

    def names(self) -> list[str]:
        return sorted(self._sites)
