"""Issuing commands and desired config from the centre: the CLI, the API and the SLA rules call these.

A command is committed (queued, with its audit row) before it is published, so the record exists
even if the publish fails; the device's acks move it along (broker.store.commands.apply_ack).
"""

from __future__ import annotations

import getpass
import json
import os
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from broker.outbound import command_ttl_s
from broker.store import commands as cmd_sql
from broker.store.db import Store
from broker.store.schema import audit_log, commands
from protocol import topics
from protocol.commands import Command, DesiredConfig
from protocol.ids import uuid7
from runtime.clock import Clock, SystemClock
from runtime.settings import MqttConfig
from runtime.transport import AsyncMqtt, LinkOptions


class CommandError(ValueError):
    """A command the centre will not issue; the message says why."""


def current_user() -> str:
    """The person at the keyboard, also under sudo: the audit log names people, not 'root'."""
    return os.environ.get("SUDO_USER") or getpass.getuser()


def split_device(target: str) -> tuple[str, str]:
    site, sep, device = target.partition("/")
    if not sep:
        raise CommandError(f"device {target!r}: write it as SITE/DEVICE, e.g. qingpu/kiosk-24h-1")
    return topics.check_segment(site, "site"), topics.check_segment(device, "device")


async def issue_command(
    store: Store,
    client: AsyncMqtt,
    target: str,
    name: str,
    args: dict[str, Any] | None = None,
    *,
    issuer: str,
    reason: str = "",
    ttl_s: int = 600,
    clock: Clock | None = None,
) -> Command:
    """Record and send one command; returns it (follow it with ``command_state``)."""
    site, device = split_device(target)
    if ttl_s < 1:
        raise CommandError("a command needs a positive time to live")
    clock = clock or SystemClock()
    now = clock.now()
    cmd = Command(
        id=uuid7(),
        name=name,
        args=args or {},
        issuer=issuer,
        reason=reason,
        issued_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    async with store.engine.begin() as conn:
        await cmd_sql.insert_command(conn, f"{site}/{device}", cmd)
    # The broker's copy lives no longer than the command: its expiry counts from now, not from issued_at.
    expiry_s = command_ttl_s(cmd, clock.now())
    if expiry_s > 0:
        await client.publish_confirmed(topics.cmd(site, device), cmd.model_dump_json().encode(), expiry_s=expiry_s)
    return cmd


async def set_desired_config(
    store: Store,
    client: AsyncMqtt,
    target: str,
    config: dict[str, Any],
    *,
    issuer: str,
    clock: Clock | None = None,
) -> DesiredConfig:
    """Store the next version of a device's config and publish it retained on its ``cfg`` topic."""
    site, device = split_device(target)
    now = (clock or SystemClock()).now()
    async with store.engine.begin() as conn:
        desired = await cmd_sql.insert_config(conn, f"{site}/{device}", config, issuer, now)
    await client.publish_confirmed(topics.cfg(site, device), desired.model_dump_json().encode(), retain=True)
    return desired


async def command_row(store: Store, command_id: str) -> Any:
    rows = await store.fetch(sa.select(commands).where(commands.c.id == command_id))
    return rows[0] if rows else None


async def recent_audit(store: Store, target: str | None = None, limit: int = 50) -> list[Any]:
    q = sa.select(audit_log).order_by(audit_log.c.id.desc()).limit(limit)
    if target:
        q = q.where(audit_log.c.target == target)
    return list(reversed(await store.fetch(q)))


def centre_link(mqtt: MqttConfig, purpose: str) -> LinkOptions:
    """A short-lived centre connection (CLI, API): its own client id, no persistent session."""
    return LinkOptions(
        host=mqtt.host,
        port=mqtt.port,
        client_id=f"hallfleet-{purpose}-{os.getpid()}",
        username=mqtt.username,
        password=mqtt.password(),
        tls=mqtt.tls_files(),
        clean_start=True,
        session_expiry_s=0,
    )


def parse_args(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse as JSON (numbers, true, lists), else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"argument {pair!r}: write it as key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def fmt_time(t: datetime | None) -> str:
    return "-" if t is None else t.astimezone().strftime("%Y-%m-%d %H:%M:%S")
