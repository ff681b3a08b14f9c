"""Per-site settings of the daily duties, each default from the seed line that sets it (docs/hall-duties.md)."""

from __future__ import annotations

from fnmatch import fnmatchcase

from pydantic import Field, model_validator

from config.base import Section

HHMM = r"^\d{2}:\d{2}$"


class NetCheckDuty(Section):
    """QP 000:389 「网络日常检查」 among the duties for the self-service terminals' environment."""

    device_classes: list[str] = Field(
        default_factory=lambda: ["kiosk"], description="Whose agents must report the daily check (empty: nobody)"
    )
    due: str = Field(default="10:00", pattern=HHMM, description="The day's check must have arrived by then (local)")


class PowerDuty(Section):
    """WZ 002:491 「自助服务区计算机设备的每日开关机由各职能部门自行负责」: on each working day."""

    departments: dict[str, list[str]] = Field(
        default_factory=dict, description="职能部门 -> name patterns of its self-service machines (empty: no check)"
    )
    on_by: str = Field(default="09:00", pattern=HHMM, description="Booted by this time of a working day (local)")
    off_by: str = Field(default="18:30", pattern=HHMM, description="Shut down by this time of a working day (local)")

    def department_of(self, device: str) -> str | None:
        for name, patterns in self.departments.items():
            if any(fnmatchcase(device, p) for p in patterns):
                return name
        return None


class PatrolRound(Section):
    name: str = Field(min_length=1, max_length=32, description="e.g. 上午, 下午")
    start: str = Field(pattern=HHMM, description="The round may begin at (local)")
    end: str = Field(pattern=HHMM, description="...and must have covered the points by (local)")

    @model_validator(mode="after")
    def _ordered(self) -> PatrolRound:
        if self.start >= self.end:
            raise ValueError(f"round {self.name}: start {self.start} must be before end {self.end}")
        return self


class PatrolDuty(Section):
    """QP 000:120 「每天两次巡查」 (不定时: anywhere in each session) incl. 「电子评价器显示情况」 (QP 000:122);
    WZ 002:133 定时巡查 上午 9:30, 下午 13:40. Empty ``rounds``: no patrol check."""

    rounds: list[PatrolRound] = Field(default_factory=list, description="The day's rounds on working days")
    point_classes: list[str] = Field(
        default_factory=lambda: ["rating", "kiosk"],
        description="Device classes a round must reach (QP: the rating pads' display, 电子评价器显示情况)",
    )
    min_coverage_pct: float = Field(default=100, gt=0, le=100, description="Share of the points a round must scan")


class DutiesPolicy(Section):
    netcheck: NetCheckDuty = Field(default_factory=NetCheckDuty, description="The kiosks' daily network check")
    power: PowerDuty = Field(default_factory=PowerDuty, description="Departmental machines' daily power-on/off")
    patrol: PatrolDuty = Field(default_factory=PatrolDuty, description="Duty officers' patrol rounds")
    locker_max_hold_h: float = Field(
        default=72, gt=0, le=24 * 90, description="An item left in a locker longer than this is reported to site staff"
    )
