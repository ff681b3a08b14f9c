"""Each face terminal runs its site's face settings (``SiteConfig.face``: match threshold, liveness, challenge and
the blink limits): the centre writes them into the terminal's desired config under ``face`` and publishes it,
retained, on its ``cfg`` topic; the terminal validates and applies it and reports ``config.applied`` or
``config.rejected`` with the field named (agent/desired.py), which the store keeps on the config's version.

The rule: a terminal's desired config gets a new version only when its site's settings differ from what its newest
version holds, and everything else in it (heartbeat, labels: what ``hallfleet cfg set`` wrote) is carried over as
it was. So the sync is idempotent, safe on several consumers (the store's version key refuses a second writer of
the same version) and a version is spent only on a real change. A version the terminal has not answered yet is
published again on each pass: the first publish may have failed after the commit, and the terminal ignores a
version it already runs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.ingest.session import LinkError, PublishRefused
from broker.outbound import Link, send_config
from broker.sites import Sites
from broker.store import commands as cmd_sql
from broker.store.db import Store
from broker.store.keys import DeviceKey
from broker.store.schema import device_configs, devices
from protocol.commands import DesiredConfig

log = logging.getLogger(__name__)

ISSUER = "site-settings"  # the audit log's actor for versions this module writes
ROLE = "attendance"  # the devices that run a face engine


async def reconcile(store: Store, sites: Sites, now: datetime) -> list[tuple[DeviceKey, DesiredConfig]]:
    """The desired config each attendance terminal should be sent now: a new version where its site's face settings
    changed (committed here), or its newest version while the terminal has not reported on it."""
    out: list[tuple[DeviceKey, DesiredConfig]] = []
    async with store.engine.begin() as conn:
        rows = await conn.execute(sa.select(devices.c.site, devices.c.device).where(devices.c.role == ROLE))
        for site, device in rows.all():
            key = DeviceKey(site, device)
            desired = await _sync_one(conn, key, sites[site].face.model_dump(mode="json"), now)
            if desired is not None:
                out.append((key, desired))
    return out


async def _sync_one(conn: AsyncConnection, key: DeviceKey, face: dict[str, Any], now: datetime) -> DesiredConfig | None:
    c = device_configs.c
    newest = (
        await conn.execute(
            sa.select(c.version, c.body, c.issuer, c.issued_at, c.state)
            .where(c.key == key.text)
            .order_by(c.version.desc())
            .limit(1)
        )
    ).first()
    body: dict[str, Any] = json.loads(newest.body) if newest is not None else {}
    if body.get("face") != face:
        desired = await cmd_sql.insert_config(conn, key.text, {**body, "face": face}, ISSUER, now)
        log.info("%s: site face settings -> desired config version %d", key, desired.version)
        return desired
    if newest is not None and newest.state == "desired":  # not answered yet: publish it again
        return DesiredConfig(version=newest.version, issued_at=newest.issued_at, issuer=newest.issuer, config=body)
    return None


@dataclass(slots=True)
class FaceSettingsSync:
    """The job (broker/jobs/runner.py's shape): the site's face settings reach every attendance terminal."""

    store: Store
    sites: Sites
    link: Link
    interval_s: float = 60.0
    name: str = "face-settings"

    async def run_once(self, now: datetime) -> None:
        for key, desired in await reconcile(self.store, self.sites, now):
            try:
                await send_config(self.link, key, desired)
            except (LinkError, PublishRefused, TimeoutError) as exc:  # committed: the next pass publishes it again
                log.info("config %d for %s not published now (%s): the next pass retries", desired.version, key, exc)
