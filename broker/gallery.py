"""The centre's face galleries: enrolment, revocation, and what each terminal must be sent.

One gallery per site (its entrance terminals share its staff), versioned: every enrolment and every
revocation is a new version. A terminal reports the version it holds (``attendance.gallery``); the
centre sends it a delta from there, or the full gallery when it holds nothing or something the centre
no longer knows. Each update is sealed with that terminal's own key (protocol/gallery.py), so the
command log and the broker hold only ciphertext. Photos are used once to compute encodings and never
stored. A revocation (staff leave; rotations in January, April, July and October) carries a deadline:
the consumer's reconcile loop sends every terminal what it lacks and raises an incident for a terminal
that still holds someone revoked past the deadline (``overdue_revocations``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.ext.asyncio import AsyncConnection

from broker.rules.incidents import IncidentRules, Signal
from broker.store import commands as cmd_sql
from broker.store.commands import audit
from broker.store.db import Store
from broker.store.keys import DeviceKey
from broker.store.schema import commands, devices, events, face_gallery, gallery_sites, staff_consents
from config.base import Section, read_secret
from protocol.commands import Command
from protocol.gallery import GalleryUpdate, associated_data, key_from_text, pack, seal
from protocol.ids import uuid7

log = logging.getLogger(__name__)


CONSENT_PURPOSE = "face_attendance"  # 人脸考勤: what a staff_consents row must cover for a face to be enrolled


class GalleryAdminError(ValueError):
    """A gallery operation refused; the message says why."""


class GalleryCentreConfig(Section):
    keys_dir: Path = Field(
        default=Path("/etc/hallfleet/gallery-keys"),
        description="One key file per terminal, {site}.{device}.key (32 bytes, base64), as provisioned",
    )
    revoke_within_h: float = Field(default=24.0, gt=0, description="A revocation must reach every terminal by then")
    min_shots: int = Field(default=2, ge=1, le=10, description="Enrolment photos needed per person")
    keep_photos_dir: Path | None = Field(
        default=None,
        description="hallfleet provision staff keeps enrolment photos here (0600) when set; unset: read and dropped",
    )


@dataclass(frozen=True, slots=True)
class Plan:
    """What one terminal needs: None update when it is up to date."""

    key: str
    held: int
    current: int
    update: GalleryUpdate | None


async def current_version(conn: AsyncConnection, site: str) -> int:
    v = await conn.scalar(sa.select(gallery_sites.c.version).where(gallery_sites.c.site == site))
    return int(v or 0)


async def _bump(conn: AsyncConnection, site: str, now: datetime) -> int:
    version = await current_version(conn, site) + 1
    g = gallery_sites.c
    if version == 1:
        await conn.execute(gallery_sites.insert().values(site=site, version=1, updated_at=now))
    else:
        await conn.execute(gallery_sites.update().where(g.site == site).values(version=version, updated_at=now))
    return version


async def enrol(
    store: Store, site: str, staff_id: str, encodings: list[np.ndarray], *, by: str, at: datetime, min_shots: int = 2
) -> int:
    """Add or replace a person's encodings (one per enrolment photo, human-verified). Returns the version.
    The store step only: people are enrolled through ``hallfleet provision staff`` (provisioning/staff.py), which
    checks their consent and the photos' quality first; no command calls this directly."""
    check_shots(staff_id, encodings, min_shots)
    async with store.engine.begin() as conn:
        return await enrol_in(conn, site, staff_id, encodings, by=by, at=at)


def check_shots(staff_id: str, encodings: list[np.ndarray], min_shots: int) -> None:
    if len(encodings) < min_shots:
        raise GalleryAdminError(f"{staff_id}: {len(encodings)} usable photo(s); enrolment needs {min_shots}")


async def enrol_in(
    conn: AsyncConnection,
    site: str,
    staff_id: str,
    encodings: list[np.ndarray],
    *,
    by: str,
    at: datetime,
    version: int | None = None,
) -> int:
    """``enrol`` inside the caller's transaction (shots already checked). ``version``: one this transaction
    already bumped to, so several changes made together are one new version; None bumps it here. Refused without
    the person's consent on record and not withdrawn (README: no consent, no face): whatever calls it, this store
    step is the one way in, so no second door can skip the gate."""
    await _check_consent(conn, site, staff_id)
    blob = np.asarray(encodings, dtype=np.float32).tobytes()
    f = face_gallery.c
    if version is None:
        version = await _bump(conn, site, at)
    values: dict[str, Any] = {
        "encodings": blob,
        "shots": len(encodings),
        "version_added": version,
        "version_removed": None,
        "enrolled_at": at,
        "enrolled_by": by[:64],
        "revoked_at": None,
        "revoked_by": "",
        "revoke_by": None,
    }
    updated = await conn.execute(face_gallery.update().where(f.site == site, f.staff_id == staff_id).values(**values))
    if updated.rowcount == 0:
        await conn.execute(face_gallery.insert().values(site=site, staff_id=staff_id, **values))
    await audit(conn, at=at, actor=by, action="gallery.enrol", target=f"{site}/{staff_id}",
                detail={"version": version, "shots": len(encodings)})  # fmt: skip
    return version


async def _check_consent(conn: AsyncConnection, site: str, staff_id: str) -> None:
    c = staff_consents.c
    given = sa.select(c.id).where(
        c.site == site, c.staff_id == staff_id, c.purpose == CONSENT_PURPOSE, c.withdrawn_at.is_(None)
    )
    if (await conn.execute(given.limit(1))).first() is None:
        raise GalleryAdminError(
            f"{site}/{staff_id}: 无有效的人脸考勤同意记录, 不录入 / no consent on record, not enrolled "
            "(hallfleet provision staff --consent)"
        )


async def revoke(
    store: Store, site: str, staff_id: str, *, by: str, at: datetime, within: timedelta, reason: str
) -> int:
    async with store.engine.begin() as conn:
        return await revoke_in(conn, site, staff_id, by=by, at=at, within=within, reason=reason)


async def revoke_in(
    conn: AsyncConnection,
    site: str,
    staff_id: str,
    *,
    by: str,
    at: datetime,
    within: timedelta,
    reason: str,
    version: int | None = None,
) -> int:
    """``revoke`` inside the caller's transaction; ``version`` as for ``enrol_in``."""
    f = face_gallery.c
    row = (await conn.execute(sa.select(f.revoked_at).where(f.site == site, f.staff_id == staff_id))).first()
    if row is None:
        raise GalleryAdminError(f"{staff_id} is not enrolled at {site}")
    if row.revoked_at is not None:
        raise GalleryAdminError(f"{staff_id} was already revoked at {site}")
    if version is None:
        version = await _bump(conn, site, at)
    await conn.execute(
        face_gallery.update()
        .where(f.site == site, f.staff_id == staff_id)
        .values(encodings=None, version_removed=version, revoked_at=at, revoked_by=by[:64], revoke_by=at + within)
    )
    await audit(conn, at=at, actor=by, action="gallery.revoke", target=f"{site}/{staff_id}", reason=reason,
                detail={"version": version, "revoke_by": at + within})  # fmt: skip
    return version


async def held_versions(conn: AsyncConnection, site: str) -> dict[str, int]:
    """Each attendance terminal of the site -> the gallery version it last reported holding."""
    d, e = devices.c, events.c
    terminals = [
        r.device for r in await conn.execute(sa.select(d.device).where(d.site == site, d.role == "attendance"))
    ]
    out: dict[str, int] = {}
    for device in terminals:
        data = await conn.scalar(
            sa.select(e.data)
            .where(e.site == site, e.device == device, e.type == "attendance.gallery")
            .order_by(e.seq.desc())
            .limit(1)
        )
        out[device] = int(json.loads(data)["version"]) if data else 0
    return out


async def plan_for(conn: AsyncConnection, cfg: GalleryCentreConfig, site: str, device: str, held: int) -> Plan:
    current = await current_version(conn, site)
    key = f"{site}/{device}"
    if held == current:
        return Plan(key, held, current, None)
    f = face_gallery.c
    full = held <= 0 or held > current
    q = sa.select(f.staff_id, f.encodings, f.version_added, f.version_removed, f.revoke_by).where(f.site == site)
    rows = (await conn.execute(q)).all()
    upsert = {
        r.staff_id: pack(np.frombuffer(r.encodings, dtype=np.float32).reshape(-1, 128))
        for r in rows
        if r.encodings is not None and (full or r.version_added > held)
    }
    removed = [r for r in rows if r.version_removed is not None and (full or r.version_removed > held)]
    body = {"upsert": upsert, "remove": [r.staff_id for r in removed]}
    base = None if full else held
    deadline = min((r.revoke_by for r in removed if r.revoke_by is not None), default=None)
    sealed = seal(_device_key(cfg, site, device), body, associated_data(site, device, current, base))
    return Plan(
        key, held, current, GalleryUpdate(version=current, base_version=base, sealed=sealed, revoke_by=deadline)
    )


def _device_key(cfg: GalleryCentreConfig, site: str, device: str) -> bytes:
    path = cfg.keys_dir / f"{site}.{device}.key"
    try:
        return key_from_text(read_secret(path))
    except Exception as exc:
        raise GalleryAdminError(f"no gallery key for {site}/{device} ({path}): provision the terminal first") from exc


async def overdue_revocations(conn: AsyncConnection, site: str, now: datetime) -> list[tuple[str, str]]:
    """(device, staff) pairs: a terminal that may still match someone revoked past the deadline."""
    f = face_gallery.c
    rows = (
        await conn.execute(
            sa.select(f.staff_id, f.version_removed).where(f.site == site, f.revoke_by.is_not(None), f.revoke_by < now)
        )
    ).all()
    if not rows:
        return []
    held = await held_versions(conn, site)
    return [(device, r.staff_id) for device, v in held.items() for r in rows if v < r.version_removed]


PENDING_S = 600  # a gallery_update issued this recently is on its way, or its result not yet reported


async def reconcile(
    store: Store, cfg: GalleryCentreConfig, now: datetime, rules: IncidentRules | None = None
) -> list[tuple[DeviceKey, Command]]:
    """Send each online terminal the update it lacks (commands committed here, published by the caller),
    and (with ``rules``) keep an incident open on each terminal that still holds someone revoked past the
    deadline."""
    out: list[tuple[DeviceKey, Command]] = []
    async with store.engine.begin() as conn:
        for site in [r.site for r in await conn.execute(sa.select(gallery_sites.c.site))]:
            held = await held_versions(conn, site)
            for device, version in held.items():
                cmd = await _update_if_needed(conn, cfg, site, device, version, now)
                if cmd is not None:
                    out.append((DeviceKey(site, device), cmd))
            overdue = {device for device, _ in await overdue_revocations(conn, site, now)}
            if rules is not None:
                signals = [
                    Signal(site, device, "gallery.revocation_overdue", device in overdue, "major", now, now,
                           "撤销的人员仍在终端人脸库中, 已超过期限" if device in overdue else "人脸库已更新")
                    for device in held
                ]  # fmt: skip
                await rules.apply(conn, signals)
    return out


async def _on_its_way(conn: AsyncConnection, key: str, held: int, now: datetime) -> bool:
    """An update is still travelling (queued, delivered, running), or it succeeded but the terminal's
    ``attendance.gallery`` report of the new version has not been stored yet (it may land a batch after
    the ack): sending another now would be a delta on a version the terminal no longer holds."""
    k = commands.c
    rows = await conn.execute(
        sa.select(k.state, k.args).where(
            k.key == key,
            k.name == "gallery_update",
            k.state.in_(["queued", "delivered", "running", "succeeded"]),
            k.issued_at > now - timedelta(seconds=PENDING_S),
        )
    )
    return any(r.state != "succeeded" or json.loads(r.args).get("version", 0) > held for r in rows)


async def _update_if_needed(
    conn: AsyncConnection, cfg: GalleryCentreConfig, site: str, device: str, held: int, now: datetime
) -> Command | None:
    key = f"{site}/{device}"
    if await current_version(conn, site) == held:
        return None
    presence = await conn.scalar(sa.select(devices.c.presence).where(devices.c.key == key))
    if presence != "online" or await _on_its_way(conn, key, held, now):
        return None
    try:
        plan = await plan_for(conn, cfg, site, device, held)
    except GalleryAdminError as exc:
        log.error("gallery for %s: %s", key, exc)
        return None
    assert plan.update is not None
    cmd = Command(
        id=uuid7(),
        name="gallery_update",
        args=plan.update.model_dump(mode="json"),
        issuer="gallery",
        reason=f"gallery {held} -> {plan.current}",
        issued_at=now,
        expires_at=now + timedelta(seconds=PENDING_S),
    )
    await cmd_sql.insert_command(conn, key, cmd)
    return cmd
