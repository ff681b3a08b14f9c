"""Who hears of what: channels, recipients with roles and quiet hours, and routes from a notice (site, device
class, kind, step, severity) to roles. Routing writes ``notifications`` rows in the rule's own transaction;
broker/alerts/deliveries.py sends them, so a page is never lost between deciding and sending.

Defaults follow requirements-from-regulations.md §11.5: technicians get kiosk outages and their SLA steps,
site staff get outages at their site (to guide citizens and phone in), restock, cleaning and inspection
tasks; the IT section gets breaches, overdue dispatches and escalations.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, time, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.alerts.acklinks import load_secret, sign_ack
from broker.alerts.acklinks import verify_ack as verify_ack  # where tests and older callers import it
from broker.alerts.messages import render
from broker.alerts.notifiers import ChannelConfig
from broker.rules.notices import Notice
from broker.store.db import _insert_ignore
from broker.store.schema import notifications
from config.base import Section

Role = Literal["technician", "site_staff", "it_section", "window_management"]


class RecipientConfig(Section):
    role: Role = Field(description="technician 运维人员, site_staff 现场工作人员, it_section 信息技术科, ...")
    sites: list[str] = Field(default_factory=lambda: ["*"], description="Sites (patterns) this person covers")
    channel: str = Field(description="Name of a configured channel")
    address: str | None = Field(default=None, description="E-mail address for smtp channels")
    language: Literal["zh-CN", "en"] = Field(default="zh-CN", description="Language of the messages")
    quiet_hours: str | None = Field(
        default=None,
        pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$",
        description="HH:MM-HH:MM local time (may wrap midnight): messages wait until it ends. Leave unset for"
        " the on-duty technician of 24-hour kiosks",
    )
    timezone: str = Field(default="Asia/Shanghai", description="Zone of quiet_hours")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        ZoneInfo(value)
        return value


class RouteConfig(Section):
    sites: list[str] = Field(default_factory=lambda: ["*"], description="Site patterns")
    device_classes: list[str] = Field(default_factory=lambda: ["*"], description="kiosk, attendance, rating, ...")
    kinds: list[str] = Field(default_factory=lambda: ["*"], description="Incident or task kinds (patterns)")
    steps: list[str] = Field(default_factory=lambda: ["*"], description="opened, warning, breach, ... (patterns)")
    severities: list[str] = Field(default_factory=lambda: ["*"], description="critical, major, minor, info")
    roles: list[Role] = Field(min_length=1, description="Who gets it")

    def matches(self, n: Notice) -> bool:
        def any_of(patterns: list[str], value: str) -> bool:
            return any(fnmatchcase(value, p) for p in patterns)

        return (
            any_of(self.sites, n.site)
            and any_of(self.device_classes, n.device_class)
            and any_of(self.kinds, n.kind)
            and any_of(self.steps, n.step)
            and any_of(self.severities, n.severity)
        )


def _default_routes() -> list[RouteConfig]:
    incident_steps = ["opened", "warning", "breach", "dispatch", "resolved"]
    return [
        RouteConfig(steps=incident_steps, severities=["critical", "major"], roles=["technician"]),
        RouteConfig(steps=["opened", "resolved"], severities=["critical"], roles=["site_staff"]),
        RouteConfig(steps=["breach", "dispatch_overdue", "escalation*", "inspection_overdue"], roles=["it_section"]),
        RouteConfig(steps=["restock*", "clean_due", "inspection_*"], roles=["site_staff"]),
        # A terminal that cannot take punches exempts staff: window management must know (§11.5).
        RouteConfig(
            device_classes=["attendance"], steps=["opened", "resolved", "ab_uncovered"], roles=["window_management"]
        ),
        # Rating pads: paused too long, negative ratings and their deadlines, suspected proxy ratings (§11.5).
        RouteConfig(
            device_classes=["rating"],
            steps=["pad_paused", "negative", "proxy_suspect", "reply_overdue", "rectify_overdue"],
            roles=["window_management"],
        ),
        # Queue ticketing: waits past QP 000:368's 10/30/60, a window nobody serves while tickets wait.
        RouteConfig(steps=["queue_wait", "window_unattended"], roles=["window_management"]),
        # Daily duties and the 24-hour area's lockers (broker/duties, broker/access; docs/hall-duties.md).
        RouteConfig(steps=["netcheck_*"], roles=["technician", "it_section"]),
        RouteConfig(steps=["power_*"], roles=["it_section"]),
        RouteConfig(steps=["patrol_missed"], roles=["window_management"]),
        RouteConfig(steps=["locker_overdue"], roles=["site_staff"]),
    ]


class RetryConfig(Section):
    initial_s: float = Field(default=15.0, gt=0, description="First retry of a failed delivery after this long")
    max_s: float = Field(default=900.0, gt=0, description="Retries back off up to this interval")
    give_up_h: float = Field(
        default=24.0, gt=0, description="After this long it is marked failed (visible; `alerts retry` requeues it)"
    )


class AlertsConfig(Section):
    channels: dict[str, ChannelConfig] = Field(default_factory=dict, description="Name -> notifier config")
    recipients: dict[str, RecipientConfig] = Field(default_factory=dict, description="Name -> recipient")
    routes: list[RouteConfig] = Field(default_factory=_default_routes, description="Notice -> roles")
    ack_base_url: str | None = Field(
        default=None, description="Base of the acknowledgement link put in messages, e.g. https://hallfleet/ack"
    )
    ack_secret_file: Path | None = Field(
        default=None,
        description="Secret that signs acknowledgement links, 32 bytes or more (relative: $CREDENTIALS_DIRECTORY)",
    )
    ack_link_ttl_h: float = Field(
        default=72.0,
        gt=0,
        le=24 * 30,
        description="A link in a message acknowledges only this long after the message was written (cover quiet"
        " hours and retry.give_up_h)",
    )
    retry: RetryConfig = Field(default_factory=RetryConfig)
    send_every_s: float = Field(default=1.0, gt=0, le=60, description="How often due notifications are sent")

    @model_validator(mode="after")
    def _channels_exist(self) -> AlertsConfig:
        for name, r in self.recipients.items():
            if r.channel not in self.channels:
                known = ", ".join(sorted(self.channels)) or "none configured"
                raise ValueError(f"recipients.{name}.channel: no channel {r.channel!r} (channels: {known})")
            if self.channels[r.channel].type == "smtp" and not r.address:
                raise ValueError(f"recipients.{name}.address: an e-mail channel needs the recipient's address")
        if self.ack_base_url and self.ack_secret_file is None:
            raise ValueError("ack_secret_file: acknowledgement links need a secret to sign them")
        return self

    def ack_secret(self) -> bytes | None:
        """Read and checked at start-up (ConfigError: too short)."""
        return None if self.ack_secret_file is None else load_secret(self.ack_secret_file)


class Router:
    def __init__(self, cfg: AlertsConfig, site_names: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.site_names = site_names or {}
        self._secret = cfg.ack_secret()

    def recipients_for(self, n: Notice) -> list[tuple[str, RecipientConfig]]:
        roles = {role for route in self.cfg.routes if route.matches(n) for role in route.roles}
        return [
            (name, r)
            for name, r in sorted(self.cfg.recipients.items())
            if r.role in roles and any(fnmatchcase(n.site, p) for p in r.sites)
        ]

    def link(self, ref: str, now: datetime) -> str | None:
        if not self.cfg.ack_base_url or self._secret is None or not ref.startswith("incident:"):
            return None
        expires = now + timedelta(hours=self.cfg.ack_link_ttl_h)
        return f"{self.cfg.ack_base_url.rstrip('/')}/{sign_ack(self._secret, ref.removeprefix('incident:'), expires)}"

    async def enqueue(self, conn: AsyncConnection, n: Notice, now: datetime) -> list[str]:
        """Write one notification per recipient (deduplicated on ref, step and recipient); returns who."""
        return (await self.enqueue_many(conn, [n], now))[0]

    async def enqueue_many(self, conn: AsyncConnection, notices: Sequence[Notice], now: datetime) -> list[list[str]]:
        """``enqueue`` for many notices in one statement (the SLA clock after a storm pages for a thousand
        incidents at once); returns who, per notice. A notice repeated in the same call is
        written once, like a second ``enqueue``."""
        rows: list[tuple[int, str, dict[str, Any]]] = []
        routed: dict[tuple[str, ...], list[tuple[str, RecipientConfig]]] = {}  # what routing reads of a notice
        for i, n in enumerate(notices):
            link = self.link(n.ref, now)
            facets = (n.site, n.device_class, n.kind, n.step, n.severity)
            if facets not in routed:
                routed[facets] = self.recipients_for(n)
            for name, r in routed[facets]:
                rows.append((i, name, self._notification(n, name, r, link, now)))
        new: set[str] = set()
        if rows:  # an executemany with RETURNING: SQLAlchemy sends it as multi-row VALUES, compiled once
            stmt = _insert_ignore(conn, notifications).returning(notifications.c.dedup_key)
            new.update((await conn.execute(stmt, [row for _, _, row in rows])).scalars())
        who: list[list[str]] = [[] for _ in notices]
        for i, name, row in rows:
            if row["dedup_key"] in new:
                new.discard(row["dedup_key"])  # the first of a repeated notice is the one written
                who[i].append(name)
        return who

    def _notification(
        self, n: Notice, name: str, r: RecipientConfig, link: str | None, now: datetime
    ) -> dict[str, Any]:
        subject, body = render(n, r.language, self.site_names.get(n.site, n.site), link)
        return {
            "dedup_key": f"{n.ref}|{n.step}|{name}"[:300],
            "ref": n.ref,
            "step": n.step,
            "recipient": name,
            "channel": r.channel,
            "site": n.site,
            "severity": n.severity,
            "subject": subject[:300],
            "body": body,
            "link": link,
            "data": json.dumps({**n.facts, "kind": n.kind, "device": n.device}, ensure_ascii=False, default=str),
            "state": "pending",
            "created_at": now,
            "due_at": after_quiet_hours(r, now),
        }


def after_quiet_hours(r: RecipientConfig, now: datetime) -> datetime:
    """``now``, or the end of the recipient's quiet hours if ``now`` falls inside them."""
    if not r.quiet_hours:
        return now
    zone = ZoneInfo(r.timezone)
    start_s, end_s = r.quiet_hours.split("-")
    start, end = time.fromisoformat(start_s), time.fromisoformat(end_s)
    local = now.astimezone(zone)
    t = local.timetz().replace(tzinfo=None)
    inside = (start <= t < end) if start <= end else (t >= start or t < end)
    if not inside:
        return now
    end_at = datetime.combine(local.date(), end, zone)
    if end_at <= local:
        end_at = datetime.combine(local.date() + timedelta(days=1), end, zone)
    return end_at
