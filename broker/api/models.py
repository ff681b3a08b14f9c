"""What the REST API accepts and answers (these models are its OpenAPI schema)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from protocol.bounds import Json, Line, Prose
from protocol.commands import CommandName

T = TypeVar("T")
DeviceKey = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}/[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
]


class Out(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class Page(Out, Generic[T]):
    items: list[T]
    total: int = Field(description="Items matching, across all pages")
    page: int
    size: int


class DeviceOut(Out):
    key: str
    site: str
    device: str
    role: str
    agent_version: str
    presence: str = Field(description="online | stale | offline | shutdown | unknown | registered (never connected)")
    presence_since: datetime | None
    last_seen: datetime | None
    heartbeat_s: float


class PresenceChange(Out):
    at: datetime
    state: str
    session: int
    reason: str


class PresenceOut(Out):
    device: DeviceOut
    since: datetime
    availability: float | None = Field(description="Share of the known time online since `since`")
    history: list[PresenceChange]


class SlaOut(Out):
    started_at: datetime
    elapsed_s: float = Field(
        description="SLA time from the start to restoration (or now while down): the monthly report's time to restore;"
        " opening hours, or wall-clock time for 24-hour devices"
    )
    warn_at: datetime
    breach_at: datetime
    next_step_at: datetime | None
    breached: bool
    counts_wall_clock: bool


class IncidentOut(Out):
    id: str
    key: str
    site: str
    device: str
    kind: str
    kind_label: str
    severity: str
    state: str
    summary: str
    detected_at: datetime
    staff_reported_at: datetime | None
    cleared_at: datetime | None
    closed_at: datetime | None
    step: str
    recovery: str
    acked_at: datetime | None
    acked_by: str
    parent_id: str | None
    sla: SlaOut


class TimelineEntry(Out):
    at: datetime
    entry: str
    actor: str
    text: str


class IncidentDetail(IncidentOut):
    timeline: list[TimelineEntry]


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: DeviceKey = Field(description="SITE/DEVICE", examples=["qingpu/kiosk-24h-1"])
    name: CommandName = Field(description="restart_app, restart_agent, reboot, diagnose, sync_config, collect_logs ...")
    args: dict[Line, Json] = Field(default_factory=dict)
    reason: Prose = Field(min_length=1, max_length=500, description="Why: goes into the audit log")
    ttl_s: int | None = Field(default=None, ge=10, le=86_400, description="Seconds the device has to take it")


class CommandOut(Out):
    id: str
    key: str
    name: str
    args: dict[str, Any]
    issuer: str
    reason: str
    state: str = Field(description="queued, delivered, running, succeeded, failed, rejected, expired")
    issued_at: datetime
    expires_at: datetime
    updated_at: datetime
    result: dict[str, Any] | None
    refusal: str


class ConsumableOut(Out):
    key: str
    consumable: str
    state: str
    level_pct: float | None
    updated_at: datetime
    low_since: datetime | None
    empty_forecast: datetime | None = Field(description="When it is expected to run out (None: not low)")


class StaffDayOut(Out):
    staff_id: str
    name: str
    unit: str
    day: date
    verdict: str
    verdict_label: str
    reason: str
    late_min: int
    early_min: int
    untrusted: bool
    locked: bool
    punches: list[datetime]


class AuditOut(Out):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    reason: str
    detail: dict[str, Any]


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)


class LoginOut(Out):
    token: str = Field(description="Send as Authorization: Bearer TOKEN (the dashboard uses the cookie)")
    expires_at: datetime
    username: str
    role: str
    sites: list[str]


# -- ratings (好差评) and their follow-ups ----------------------------------------------------------------
# Text a person types goes into the store: no NUL or other control character but tab and line breaks (PostgreSQL
# refuses NUL in text, which was a 500; protocol/bounds.py's Prose is the devices' rule for the same).
# (Prose's validator after the constraints: nested the other way, pydantic drops min_length after the strip.)
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000), *get_args(Prose)[1:]]


class RatingOut(Out):
    event_id: str
    site: str
    device: str
    window: str
    staff_id: str
    service_id: str | None
    level: int = Field(description="5 非常满意 ... 1 非常不满意")
    level_label: str
    negative: bool
    at: datetime = Field(description="The pad's clock when synchronised, else the centre's receive time")
    received_at: datetime
    pad_state: str
    flags: list[str] = Field(description="Proxy-rating patterns flagged for review (paused, burst, ...)")
    followup: str | None = Field(description="The negative rating's follow-up state (see FollowupOut.state)")


class FollowupOut(Out):
    event_id: str
    site: str
    device: str
    window: str
    staff_id: str
    service_id: str | None
    level: int
    rated_at: datetime
    real_name: bool = Field(description="Bound to a ticket or 办件: owes the citizen a reply")
    reply_due: datetime | None
    replied_at: datetime | None
    replied_by: str | None
    reply_text: str | None
    objective: bool | None = Field(description="客观差评 (to be rectified); null until someone decides")
    rectify_due: datetime | None
    rectified_at: datetime | None
    rectified_by: str | None
    rectify_text: str | None
    state: str = Field(description="reply (owes a reply), classify (objective or not?), rectify, done")
    overdue: bool = Field(description="A deadline passed with its step undone")


class ReplyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text = Field(description="What the citizen was told")
    objective: bool | None = Field(default=None, description="Also decide whether the rating is objective (客观差评)")


class RectifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: Text = Field(description="What was changed")


# -- on-site dispatch ---------------------------------------------------------------------------------
class DispatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["open", "on_site", "done"] = Field(
        default="open", description="open: send a technician; on_site: arrived; done: finished on site"
    )
    note: Prose = Field(default="", max_length=1000)


class DispatchOut(Out):
    id: str
    incident_id: str
    key: str
    site: str
    opened_at: datetime
    due_at: datetime = Field(description="End of the working day (the next one after hours)")
    state: str = Field(description="open, on_site, done, cancelled")
    technician: str
    arrived_at: datetime | None
    done_at: datetime | None
    note: str


# -- users --------------------------------------------------------------------------------------------
SiteName = Annotated[str, StringConstraints(pattern=r"^(\*|[A-Za-z0-9][A-Za-z0-9_-]{0,63})$")]


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    password: str = Field(min_length=10, max_length=1024)
    role: Literal["it_admin", "technician", "window_management", "readonly"]
    sites: list[SiteName] = Field(min_length=1, description="Site ids, or * for every site")


class PasswordIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str | None = Field(
        default=None, min_length=10, max_length=1024, description="Leave out to have one generated (shown once)"
    )


class UserOut(Out):
    username: str
    role: str
    sites: list[str]
    created_at: datetime
    updated_at: datetime
    disabled_at: datetime | None


class PasswordOut(Out):
    username: str
    password: str | None = Field(description="The generated password, shown this once (null when you chose it)")


class FlagOut(Out):
    event_id: str
    pattern: str = Field(description="paused, no_service, too_fast, staff_key, burst, burst_top")
    site: str
    device: str
    window: str
    staff_id: str
    level: int
    rated_at: datetime
    detail: str = Field(description="What was seen, in Chinese")
    flagged_at: datetime
    reviewed_by: str | None
    reviewed_at: datetime | None
    verdict: str | None = Field(description="proxy (属实代评) | honest (正常评价); null until reviewed")
    note: str


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["proxy", "honest"] = Field(description="proxy: 属实代评 (left out of the statistics); honest")
    note: Prose = Field(default="", max_length=500)
