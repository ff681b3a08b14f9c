"""Scenario files: what a simulated day holds, as data (TOML), checked before anything starts.

Times are hall-local simulated time ("HH:MM"); with ``--speed 60`` a simulated hour passes in a real minute.
A bad file stops the start with a ConfigError naming the file and the field, like every hallfleet config.
"""

from __future__ import annotations

import tomllib
from datetime import time
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator

from config.base import ConfigError, Section

SCENARIOS = Path(__file__).parent / "scenarios"
FaultKind = Literal["app_crash", "printer_jam", "paper_out", "network_loss", "power_loss", "door_forced", "locker_jam"]
Level = Literal["1", "2", "3", "4", "5"]
DEFAULT_LEVELS: dict[Level, float] = {"5": 70, "4": 15, "3": 8, "2": 4, "1": 3}
FleetRole = Literal["attendance", "kiosk", "rating", "queue", "door", "locker", "patrol", "none", "department"]


class Mix(Section):
    """Share of the devices per role (normalised); ``none`` is an agent with heartbeats only. The rest of the hall
    (issue 23: queue, door, locker, patrol) is there only when a scenario gives it a share, so a scenario written
    before keeps its fleet; the shipped workday gives the shares of a real hall (a few percent of its devices)."""

    attendance: float = Field(default=0.1, ge=0)
    kiosk: float = Field(default=0.3, ge=0)
    rating: float = Field(default=0.6, ge=0)
    queue: float = Field(
        default=0.0,
        ge=0,
        description="Queue devices (排队叫号): per hall and simulator process, the first is the ticket dispenser, the"
        " others call displays, all reading that process's queue-system twin of the hall",
    )
    door: float = Field(default=0.0, ge=0, description="Door controllers of the 24-hour area (a twin on a pty)")
    locker: float = Field(default=0.0, ge=0, description="Self-service locker banks (a twin on a pty)")
    patrol: float = Field(default=0.0, ge=0, description="Duty officers' patrol handhelds (scanner twin)")
    none: float = Field(default=0.0, ge=0)
    department: float = Field(
        default=0.0,
        ge=0,
        description="Departmental self-service machines (WZ 002:491), in the halls whose site config names them"
        " under duties.power.departments: switched on and off as [departments] says (hallfleet/fleet/departments.py)",
    )

    @model_validator(mode="after")
    def _some(self) -> Mix:
        if sum(self.shares().values()) <= 0:
            raise ValueError("at least one role needs a share above 0")
        return self

    def shares(self) -> dict[FleetRole, float]:
        return {r: getattr(self, r) for r in get_args(FleetRole)}


class Arrivals(Section):
    """Staff punching in at the entrance terminals (QR codes): a normal spread around ``mean``, and a share
    who come late, spread evenly over ``late_by_min`` after ``late_after``."""

    mean: time = Field(default=time(8, 15), description="Centre of the on-time arrivals")
    sd_min: float = Field(default=6, ge=0, le=240, description="Spread of the on-time arrivals, minutes")
    late_after: time = Field(default=time(8, 30), description="Arrivals after this are late")
    late_share: float = Field(default=0.1, ge=0, le=1, description="Share of staff who arrive late")
    late_by_min: float = Field(default=40, gt=0, le=600, description="How late, at most, minutes")
    absent_share: float = Field(default=0.05, ge=0, le=1, description="Share who never punch")
    finger_share: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Share of staff who punch with a finger (enrolled at one terminal of their hall by the "
        "fingerprint_enrol command when the day starts) instead of their QR code",
    )
    fingerprint_poll_s: float = Field(
        default=2.0,
        gt=0,
        le=5,
        description="How often each terminal reads its fingerprint twin, real s (every read is a USB exchange "
        "in the process's one finger-watch thread: thousands of terminals share it)",
    )


class Kiosks(Section):
    """Kiosk use: tickets printed per kiosk per hour of the day, and what each print uses."""

    tickets_per_hour: list[float] = Field(
        default_factory=lambda: [0.0] * 8 + [20, 30, 25, 15, 10, 20, 25, 20, 10] + [0.0] * 7,
        min_length=24,
        max_length=24,
        description="24 values, hour 0 .. 23: tickets per kiosk per simulated hour",
    )
    lines_per_ticket: int = Field(default=4, ge=1, le=60, description="Receipt lines per ticket (paper use)")
    roll_mm: float = Field(default=50_000, gt=0, description="Receipt roll length at start, mm")
    a4_pages_per_ticket: float = Field(
        default=0.2, ge=0, le=50, description="A4 pages (toner) per ticket, counted in kiosk.usage"
    )
    poll_s: float = Field(default=5, gt=0, le=600, description="How often each kiosk reads its printer (real s)")
    netcheck_at: time | None = Field(
        default=None,
        description="When the kiosks run their daily network check (QP 000:389, agent/netcheck.py; the broker"
        " stands in for the gateway and the centre, localhost for DNS); unset: no check",
    )
    a4_share: float = Field(
        default=0.2,
        ge=0,
        le=1,
        description="Share of kiosks with an A4 printer (the simulated IPP printer, drivers/ipp/sim.py): the kiosk "
        "polls it, and each ticket's A4 pages are printed on it over IPP, so its toner and paper run down",
    )

    @field_validator("tickets_per_hour")
    @classmethod
    def _not_negative(cls, values: list[float]) -> list[float]:
        if any(v < 0 for v in values):
            raise ValueError("tickets per hour cannot be negative")
        return values


class Proxy(Section):
    """A proxy-rating pattern played on some pads: ``burst_5`` presses 非常满意 ``presses`` times within
    ``within_s`` simulated seconds, each after a service that takes no time."""

    at: time = Field(description="When the pattern is played")
    pattern: Literal["burst_5"] = "burst_5"
    pads: int = Field(default=1, ge=1, le=10_000, description="How many pads play it")
    presses: int = Field(default=6, ge=2, le=100)
    within_s: float = Field(default=20, gt=0, le=3600, description="Simulated seconds for all the presses")


class Ratings(Section):
    services_per_hour: float = Field(default=6, ge=0, le=600, description="Services per window per simulated hour")
    open: time = Field(default=time(8, 30), description="Windows start serving")
    close: time = Field(default=time(17, 0), description="Windows stop serving")
    levels: dict[Level, float] = Field(
        default_factory=lambda: dict(DEFAULT_LEVELS),
        description="Weights of the levels citizens press (5 非常满意 .. 1 非常不满意)",
    )
    walk_away_share: float = Field(default=0.1, ge=0, le=1, description="Citizens who leave without rating")
    proxy: list[Proxy] = Field(default_factory=list, description="Proxy-rating patterns")

    @field_validator("levels")
    @classmethod
    def _weights(cls, levels: dict[Level, float]) -> dict[Level, float]:
        if any(w < 0 for w in levels.values()) or sum(levels.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return levels


Span = Annotated[list[time], Field(min_length=2, max_length=2)]


class Departments(Section):
    """When the departments switch their machines on and off (simulated hall time), and how many forget."""

    on: Span = Field(
        default=[time(8, 10), time(8, 40)],
        description="Machines are switched on over [first, last] (the centre sees the boot at its first heartbeat)",
    )
    off: Span = Field(default=[time(17, 35), time(17, 44)], description="...and shut down cleanly over [first, last]")
    left_on_share: float = Field(default=0.0, ge=0, le=1, description="Share of the machines left on in the evening")

    @model_validator(mode="after")
    def _ordered(self) -> Departments:
        if self.on[0] > self.on[1] or self.off[0] > self.off[1] or self.on[1] >= self.off[0]:
            raise ValueError("on and off must be spans [first, last], the machines switched on before off")
        return self


class Fault(Section):
    """A fault played on ``devices`` devices of ``role`` (the first ones of that role, or those named)."""

    at: time = Field(description="Simulated time the fault starts")
    kind: FaultKind
    devices: int = Field(default=1, ge=1, le=100_000, description="How many devices suffer it")
    names: list[str] = Field(default_factory=list, description="site/device names instead of the first ones")
    duration_min: float = Field(default=30, gt=0, le=7 * 24 * 60, description="Simulated minutes until it ends")

    @property
    def role(self) -> FleetRole | None:
        """Kiosk faults need kiosks, a forced door a door controller, a jammed compartment a locker bank; the
        network and the power can fail on any device."""
        if self.kind in ("app_crash", "printer_jam", "paper_out"):
            return "kiosk"
        hall: dict[str, FleetRole] = {"door_forced": "door", "locker_jam": "locker"}
        return hall.get(self.kind)


class Scenario(Section):
    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    start: time = Field(default=time(7, 50), description="Simulated time at the start of the run")
    heartbeat_s: float = Field(
        default=600,
        ge=0.2,
        le=3600,
        description="Agents' heartbeat in simulated seconds (at --speed 60, 600 is one every 10 real seconds)",
    )
    mix: Mix = Field(default_factory=Mix)
    arrivals: Arrivals = Field(default_factory=Arrivals)
    kiosk: Kiosks = Field(default_factory=Kiosks)
    rating: Ratings = Field(default_factory=Ratings)
    departments: Departments = Field(default_factory=Departments, description="The departmental machines' day")
    faults: list[Fault] = Field(default_factory=list)
    seed: int = 1


def load_scenario(path: Path) -> Scenario:
    """Read and check a scenario file; ConfigError names the file and each bad field."""
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc}") from None
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        lines = [f"  {'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()]
        raise ConfigError(f"invalid scenario ({path}):\n" + "\n".join(lines)) from None


def builtin(name: str) -> Path:
    """A scenario shipped with hallfleet (``workday``, ``heartbeats``), or a path as given."""
    shipped = SCENARIOS / f"{name}.toml"
    return shipped if shipped.is_file() else Path(name)
