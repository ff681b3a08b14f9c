"""The centre learns what the provisioning registry says about its devices (their 24-hour status).

The registry is the one source of truth (IT approves and records every device there, 登记备案); the centre's
store keeps a copy the SLA and maintenance rules read inside their own transactions (``devices.hours24``,
broker/rules/devices.py), and the devices' public signing keys with their rotation and revocation times
(``device_keys``, read by the consumer's broker/ingest/signatures.py). This module is the only writer of that
copy: ``hallfleet provision device --hours24``, ``hallfleet provision hours24`` and ``hallfleet provision sync``
push through it, and a push that cannot reach the store leaves the registry as it is and says how to push again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.config import ConsumerConfig
from broker.rules.devices import Change, Registered, register_devices
from broker.store.db import Store
from broker.store.schema import device_keys
from config.base import ConfigError
from provisioning.registry import Account, RegistryError
from runtime.settings import load_settings


def registered(accounts: Sequence[Account]) -> list[Registered]:
    """The active devices whose 24-hour status IT registered."""
    return [
        Registered(a.site, a.device, "" if a.role in (None, "none") else a.role, a.hours24)
        for a in accounts
        if a.kind == "device" and a.active and a.site and a.device and a.hours24 is not None
    ]


def push(config: Path, accounts: Sequence[Account], *, by: str, at: datetime) -> list[Change]:
    """Make the centre's store (named by the consumer's TOML) follow the registry for ``accounts``; a hall
    consumer's TOML names the hall's store, which gets its own site's devices."""
    entries = registered(accounts)
    try:
        cfg = load_settings(ConsumerConfig, config)
    except ConfigError as exc:
        raise RegistryError(f"{exc}; the registry is saved: `hallfleet provision sync --config FILE`") from None
    keys = signing_keys(accounts)
    if cfg.hall.site is not None:  # a hall consumer's store (docs/hall-autonomy.md): its own site's devices only
        entries = [e for e in entries if e.site == cfg.hall.site]
        keys = [k for k in keys if k["site"] == cfg.hall.site]
    if not entries and not keys:
        return []
    try:
        return asyncio.run(_push(cfg.store.url, entries, keys, by, at))
    except (SQLAlchemyError, OSError) as exc:
        shown = make_url(cfg.store.url).render_as_string(hide_password=True)
        raise RegistryError(
            f"the centre's store {shown} did not take the registry's 24-hour status ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); the registry is saved: once the store is up, "
            f"`hallfleet provision sync --config {config}`"
        ) from None


def signing_keys(accounts: Sequence[Account]) -> list[dict[str, Any]]:
    """The device_keys rows of the accounts' signing keys (revoked devices too: their revocation must reach it)."""
    return [
        {"site": a.site, "device": a.device, **k.model_dump()}
        for a in accounts
        if a.kind == "device" and a.site and a.device
        for k in a.sign_keys
    ]


async def _push(
    url: str, entries: list[Registered], keys: list[dict[str, Any]], by: str, at: datetime
) -> list[Change]:
    store = await Store.open(url)
    try:
        async with store.engine.begin() as conn:
            await _put_keys(conn, keys)
            return await register_devices(conn, entries, by=by, at=at) if entries else []
    finally:
        await store.close()


async def _put_keys(conn: AsyncConnection, keys: list[dict[str, Any]]) -> None:
    """Each key as the registry has it (a key id is its public key's hash: only its end times ever change)."""
    for row in keys:
        ended = {"retired_at": row["retired_at"], "revoked_at": row["revoked_at"]}
        done = await conn.execute(sa.update(device_keys).where(device_keys.c.key_id == row["key_id"]).values(ended))
        if done.rowcount == 0:
            await conn.execute(sa.insert(device_keys).values(row))


STATUS = {
    None: "未登记 not registered (按名称规则 name patterns)",
    True: "24小时 24-hour (全天计时, 每天清洁)",
    False: "非24小时 opening hours (按开放时间计时)",
}


def describe(change: Change) -> str:
    """One line for the person at the keyboard, zh-CN first."""
    new = "; 设备尚未连接, 中心已预先登记 (not connected yet: registered ahead)" if change.created else ""
    return f"中心 centre: {change.key}: {STATUS[change.before]} -> {STATUS[change.after]}{new}"
