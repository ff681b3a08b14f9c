"""Site tasks: work a rule asks of the hall's people (restock a consumable, the daily cleaning, the quarterly
joint inspection), shared by broker/rules/consumables.py and broker/rules/maintenance.py.

A task opens at most once while it is open: the unique ``open_key`` ``{key}|{kind}|{item}`` holds it, so the
SLA ticker may plan on several consumers at once. The second INSERT ... ON CONFLICT DO NOTHING sees the
first one's row (PostgreSQL waits for the other transaction) and returns nothing, so only one consumer
gets the task id and raises the notice. Closing a task sets ``open_key`` to NULL, so the next one can open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.rules.notices import Notice, Severity
from broker.sites import SiteConfig, Sites
from broker.store.db import _insert_ignore, heard_from
from broker.store.schema import devices, tasks
from protocol.ids import uuid7


@dataclass(frozen=True, slots=True)
class Device:
    key: str
    site: str
    device: str
    role: str
    hours24: bool | None = None  # registered 24-hour status (devices.hours24); None: not registered


def task_open_key(key: str, kind: str, item: str) -> str:
    return f"{key}|{kind}|{item}"


async def open_task(
    conn: AsyncConnection,
    *,
    key: str,
    site: str,
    kind: str,
    item: str,
    now: datetime,
    due_at: datetime,
    reason: str,
    once_per_item: bool = False,
) -> str | None:
    """The new task's id, or None when it is already open (or, with ``once_per_item``, was ever opened:
    a day's cleaning reminder is not raised again after someone closed it)."""
    c = tasks.c
    if once_per_item:
        seen = await conn.execute(sa.select(c.id).where(c.key == key, c.kind == kind, c.item == item).limit(1))
        if seen.first() is not None:
            return None
    stmt = (
        _insert_ignore(conn, tasks)
        .values(
            id=uuid7(),
            key=key,
            site=site,
            kind=kind,
            item=item,
            open_key=task_open_key(key, kind, item),
            state="open",
            created_at=now,
            due_at=due_at,
            reason=reason[:500],
        )
        .returning(c.id)
    )
    row = (await conn.execute(stmt)).first()
    return None if row is None else str(row.id)


async def close_tasks(conn: AsyncConnection, where: sa.ColumnElement[bool], *, by: str, at: datetime) -> list[str]:
    """Mark the open tasks matching ``where`` done; their ids."""
    c = tasks.c
    rows = await conn.execute(
        tasks.update()
        .where(where, c.state == "open")
        .values(state="done", done_at=at, done_by=by[:64], open_key=None)
        .returning(c.id)
    )
    return sorted(str(r.id) for r in rows)


async def claim_overdue(conn: AsyncConnection, kind: str, now: datetime) -> list[Any]:
    """Open tasks of ``kind`` past their due time whose overdue notice nobody sent yet, claimed by a
    conditional UPDATE: of several consumers, one gets each task."""
    c = tasks.c
    result = await conn.execute(
        tasks.update()
        .where(c.kind == kind, c.state == "open", c.due_at < now, c.overdue_notified == sa.false())
        .values(overdue_notified=True)
        .returning(c.id, c.key, c.item, c.due_at)
    )
    return list(result.all())


async def claim_overdue_on_devices(
    conn: AsyncConnection, kind: str, now: datetime, sites: Sites
) -> list[tuple[Any, Device, SiteConfig]]:
    """claim_overdue, each task with its device (a placeholder when the device row is gone) and site config."""
    rows = await claim_overdue(conn, kind, now)
    devs = await load_devices(conn, [r.key for r in rows]) if rows else {}
    claimed = []
    for r in rows:
        site, _, device = r.key.partition("/")
        dev = devs.get(r.key, Device(r.key, site, device, ""))
        claimed.append((r, dev, sites[dev.site]))
    return claimed


async def load_devices(conn: AsyncConnection, keys: list[str] | None = None) -> dict[str, Device]:
    c = devices.c
    # A device registered ahead of its first connection is not installed yet: no cleaning, no restock.
    query = sa.select(c.key, c.site, c.device, c.role, c.hours24).where(heard_from()).order_by(c.key)
    if keys is not None:
        query = query.where(c.key.in_(keys))
    rows = await conn.execute(query)
    return {r.key: Device(r.key, r.site, r.device, r.role, r.hours24) for r in rows}


def task_notice(
    task_id: str,
    step: str,
    kind: str,
    severity: Severity,
    cfg: SiteConfig,
    dev: Device,
    zh: str,
    en: str,
    now: datetime,
    facts: dict[str, Any],
) -> Notice:
    """The notice a site-staff task raises (restock, cleaning, inspection)."""
    return Notice(
        ref=f"task:{task_id}",
        step=step,
        site=dev.site,
        device=dev.device,
        device_class=cfg.device_class(dev.device, dev.role),
        kind=kind,
        severity=severity,
        summary_zh=zh,
        summary_en=en,
        facts={"at": now.isoformat(), **facts},
    )
