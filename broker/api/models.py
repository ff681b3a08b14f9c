"""What the REST API accepts and answers (these models are its OpenAPI schema)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

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
    presence: str = Field(description="online | stale | offline | shutdown | unknown")
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
    elapsed_s: float = Field(description="SLA time so far: opening hours, or wall-clock time for 24-hour devices")
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
    args: dict[str, Any] = Field(default_factory=dict)
    reason: str = Field(min_length=1, max_length=500, description="Why: goes into the audit log")
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
