"""``hallfleet gallery revoke|status|key``: the window management section's face gallery commands.

There is one way to enrol a face: ``hallfleet provision staff`` (provisioning/staff.py), which records the
person's consent and applies the terminal's own quality gates (one face, big and sharp enough) before any
encoding is kept. ``gallery enrol`` was a second door around both; it is retired and says which command to
use instead, so an old script or habit fails loudly rather than enrolling a face without consent. The
consumer's reconcile loop sends each terminal what it lacks; ``status`` shows who holds which version.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from broker import gallery
from broker.commands import CommandError, current_user, fmt_time, split_device
from broker.config import ConsumerConfig
from broker.store.db import Store
from broker.store.schema import face_gallery
from protocol.gallery import key_to_text, new_key
from runtime.clock import SystemClock
from runtime.settings import load_settings


def add_parsers(sub: Any) -> None:
    g = sub.add_parser("gallery", help="face galleries of the attendance terminals")
    gsub = g.add_subparsers(dest="gallery_action", required=True)
    # Retired, so not listed: without help= argparse leaves it out of the rows (on Python 3.11 help=SUPPRESS
    # prints a "==SUPPRESS==" row instead), and the metavar below leaves it out of the usage line.
    p = gsub.add_parser("enrol")
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=_retired_enrol)
    p = _cmd(gsub, "revoke", "remove a person from every terminal of the site (within the deadline)")
    p.add_argument("site")
    p.add_argument("staff_id")
    p.add_argument("--reason", required=True, help="why (goes into the audit log)")
    _cmd(gsub, "status", "the site's gallery version and what each terminal holds").add_argument("site")
    p = _cmd(gsub, "key", "create a terminal's gallery key (install it on the terminal as its gallery-key credential)")
    p.add_argument("device", help="SITE/DEVICE")
    gsub.metavar = "{" + ",".join(name for name in gsub.choices if name != "enrol") + "}"


def _cmd(sub: Any, name: str, help_: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_)
    p.add_argument("--config", type=Path, default=None, help="the centre's TOML (the consumer's)")
    p.add_argument("--by", default=None, help="who (default: the logged-in user)")
    p.set_defaults(func=lambda a: _run(a, name))
    return p


RETIRED_ENROL = (
    "hallfleet: `gallery enrol` is retired: it enrolled faces without a consent record or the quality gates.\n"
    "  Enrol with: hallfleet provision staff --site SITE --photos DIR --consent consent.csv [--roster roster.csv]\n"
    "  (DIR/<staff_id>.jpg or DIR/<staff_id>/*.jpg; consent.csv: one row per person with the signed form's"
    " reference). Add --dry-run to check everything first.\n"
    "  停用: `gallery enrol` 不记录本人同意、不做照片质量检查。请改用 `hallfleet provision staff`。"
)


def _retired_enrol(_a: argparse.Namespace) -> int:
    print(RETIRED_ENROL, file=sys.stderr)
    return 2


def _run(a: argparse.Namespace, name: str) -> int:
    cfg = load_settings(ConsumerConfig, a.config)
    if name == "key":
        return _key(a, cfg)
    try:
        return asyncio.run(_with_store(a, cfg, name))
    except (gallery.GalleryAdminError, CommandError) as exc:
        print(f"hallfleet: {exc}", file=sys.stderr)
        return 1


async def _with_store(a: argparse.Namespace, cfg: ConsumerConfig, name: str) -> int:
    store = await Store.open(cfg.store.url)
    try:
        by, now = a.by or current_user(), SystemClock().now()
        if name == "revoke":
            within = timedelta(hours=cfg.gallery.revoke_within_h)
            v = await gallery.revoke(store, a.site, a.staff_id, by=by, at=now, within=within, reason=a.reason)
            print(
                f"{a.staff_id} revoked at {a.site}: gallery version {v}, on every terminal by {fmt_time(now + within)}"
            )
        else:
            await _status(store, a.site)
        return 0
    finally:
        await store.close()


async def _status(store: Store, site: str) -> None:
    async with store.engine.connect() as conn:
        current = await gallery.current_version(conn, site)
        held = await gallery.held_versions(conn, site)
        f = face_gallery.c
        enrolled = await conn.scalar(sa.select(sa.func.count()).where(f.site == site, f.revoked_at.is_(None)))
    print(f"{site}: gallery version {current}, {enrolled} people enrolled")
    for device, version in sorted(held.items()):
        print(f"  {device:24} holds {version}{'' if version == current else '  (update pending)'}")


def _key(a: argparse.Namespace, cfg: ConsumerConfig) -> int:
    site, device = split_device(a.device)
    path = cfg.gallery.keys_dir / f"{site}.{device}.key"
    if path.exists():
        print(f"hallfleet: {path} exists; a terminal's key is not replaced casually", file=sys.stderr)
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(key_to_text(new_key()) + "\n")
    print(f"{path} created; install the same file on {site}/{device} (LoadCredential=gallery-key:...)")
    return 0
