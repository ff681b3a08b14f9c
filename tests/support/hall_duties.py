"""Stored history of the 24-hour area and the daily duties, written as the consumer stores it: device rows, events
in the agents' payload shapes (validated against the registry, so a seed cannot drift from the contract) and door
alarms applied through the real incident rules. Used by the pages' and the workbook's tests."""

from __future__ import annotations

import itertools
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from broker.access.signals import alarm_signals
from broker.rules.incidents import IncidentRules
from broker.sites import Sites
from broker.store.db import Store
from broker.store.schema import devices, events, presence_history
from protocol.envelope import Envelope, Frozen
from protocol.events import REGISTRY
from protocol.ids import uuid7

_seq = itertools.count(1_000_000)


async def add_device(store: Store, site: str, device: str, role: str, first_seen: datetime) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(
            devices.insert(),
            {"key": f"{site}/{device}", "site": site, "device": device, "role": role, "presence": "online",
             "first_seen": first_seen, "last_seen": first_seen, "heartbeat_s": 60.0},
        )  # fmt: skip


def envelope(site: str, device: str, type_: str, ts: datetime, data: dict[str, Any], boot_id: str = "b") -> Envelope:
    return Envelope(v=1, id=uuid7(), site=site, device=device, type=type_, seq=next(_seq), boot_id=boot_id, ts=ts,
                    clock_synced=True, data=data)  # fmt: skip


def payload_of(env: Envelope) -> Frozen:
    return REGISTRY[env.type].model.model_validate(env.data)


async def add_event(
    store: Store, site: str, device: str, type_: str, ts: datetime, data: dict[str, Any], boot_id: str = "b"
) -> Envelope:
    """One event as the consumer stores it; its payload must pass the registry (ValueError otherwise)."""
    env = envelope(site, device, type_, ts, data, boot_id)
    payload = payload_of(env)
    async with store.engine.begin() as conn:
        await conn.execute(
            events.insert(),
            {"site": site, "device": device, "id": env.id, "type": type_, "seq": env.seq, "boot_id": boot_id,
             "ts": ts, "clock_synced": True, "replayed": False, "received_at": ts,
             "data": json.dumps(payload.model_dump(mode="json"))},
        )  # fmt: skip
    return env


async def add_alarm(store: Store, sites: Sites, site: str, device: str, ts: datetime, data: dict[str, Any]) -> None:
    """A door.alarm or locker.alarm stored, and applied through the incident rules as the consumer applies it."""
    type_ = "door.alarm" if "door" in data else "locker.alarm"
    env = await add_event(store, site, device, type_, ts, data)
    roles = {f"{site}/{device}": "door" if type_ == "door.alarm" else "locker"}
    async with store.engine.begin() as conn:
        await IncidentRules(sites, roles).apply(conn, alarm_signals(env, payload_of(env), ts))


async def add_shutdown(store: Store, site: str, device: str, at: datetime) -> None:
    """The agent's clean ``shutdown`` status, as presence history keeps it."""
    async with store.engine.begin() as conn:
        await conn.execute(
            presence_history.insert(),
            {"key": f"{site}/{device}", "state": "shutdown", "session": 1, "at": at, "reason": "clean stop"},
        )


def netcheck(ok: bool, failing: tuple[str, ...] = ()) -> dict[str, Any]:
    targets = ("gateway", "dns", "centre")
    probes = [{"target": t, "ok": t not in failing, "detail": "refused" if t in failing else ""} for t in targets]
    return {"ok": ok, "probes": probes, "trigger": "daily"}


async def devices_of(store: Store, site: str, *roles: str) -> list[str]:
    """The site's devices of these roles, by name."""
    d = devices.c
    rows = await store.fetch(sa.select(d.device).where(d.site == site, d.role.in_(roles)).order_by(d.device))
    return [r.device for r in rows]
