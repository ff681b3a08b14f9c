"""The provisioning registry: every account that may log in to a hallfleet broker, who approved it, and what
happened to it since (Qingpu's IT rules: the IT section approves and records every device, 登记备案).

One JSON file in the provisioning directory (default /etc/hallfleet/provisioning/registry.json, root only,
next to the CA key). The broker's password file and ACL are rendered from it, never edited by hand, so
what the broker accepts is always what IT approved. Secrets are not in it: passwords only as Mosquitto
hashes, certificates only by serial.

A device's registered attributes live here too (its 24-hour status): this file is their one source of truth,
and the centre's store keeps a copy that follows it (broker/rules/devices.py, ``hallfleet provision sync``).

Accounts and their MQTT usernames (one namespace, no collisions):
- device  "{site}.{device}"  (the agent's client id; site and device ids never contain '.')
- bridge  "bridge-{site}"    a hall's Mosquitto bridged to the centre
- service "hallfleet-consumer", "hallfleet-api"
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from protocol import topics
from provisioning.credentials import write_file

DEFAULT_DIR = Path("/etc/hallfleet/provisioning")
REGISTRY_FILE = "registry.json"
CONSUMER_USER = "hallfleet-consumer"
API_USER = "hallfleet-api"
SERVICE_USERS = (CONSUMER_USER, API_USER)
# Shared or generic names say nobody: approvals and revocations name a person (per-person accounts, §6.1).
GENERIC_NAMES = frozenset({"root", "admin", "administrator", "it", "hallfleet", "operator", "system", "user", "test"})

# What a device drives: the agent's roles (agent/config.py), every one of them provisionable (a test keeps the two
# lists equal). door/locker: RS-485 boards; patrol: a duty officer's handheld scanner.
Role = Literal["attendance", "kiosk", "rating", "queue", "door", "locker", "patrol", "sim", "none"]
Kind = Literal["device", "bridge", "service"]
AuthKind = Literal["password", "cert"]
State = Literal["active", "revoked"]
CrlReason = Literal["superseded", "cessation_of_operation", "key_compromise"]


class RegistryError(Exception):
    """A registry operation that cannot be done; the message says what to do instead."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignKey(_Model):
    """A device's Ed25519 signing key as the registry keeps it: the public half only (issue 24)."""

    key_id: str = Field(description="SHA-256 of the public key, first 8 bytes, hex (the events' sig.kid)")
    public_key: str = Field(description="Ed25519 public key, base64 (32 bytes)")
    valid_from: datetime = Field(description="When it was created (provisioning or rotation)")
    retired_at: datetime | None = Field(default=None, description="Rotated out: signs only events before this")
    revoked_at: datetime | None = Field(default=None, description="Revoked: its events from then are refused")


class Account(_Model):
    username: str = Field(description="MQTT username and client id")
    kind: Kind = Field(description="device, bridge (a hall's Mosquitto) or service (consumer, API)")
    site: str | None = Field(default=None, description="Site of a device, a bridge or a hall's own consumer")
    device: str | None = Field(default=None, description="Device id, unique in its site")
    role: Role | None = Field(default=None, description="What a device does (devices only)")
    auth: AuthKind = Field(description="password (over TLS) or cert (mutual TLS, CN = username)")
    state: State = Field(default="active", description="revoked accounts leave the password file and the ACL")
    approved_by: str = Field(description="The IT section member who approved it")
    created_at: datetime = Field(description="When it was provisioned")
    rotated_at: datetime | None = Field(default=None, description="Last credential rotation")
    revoked_at: datetime | None = Field(default=None, description="When it was revoked")
    revoked_by: str | None = Field(default=None, description="Who revoked it")
    revoke_reason: str | None = Field(default=None, description="Why (lost, stolen, decommissioned, ...)")
    password_hash: str | None = Field(default=None, description="Mosquitto $7$ hash (password auth)")
    cert_serial: str | None = Field(default=None, description="Current certificate serial, hex (cert auth)")
    cert_not_after: datetime | None = Field(default=None, description="Current certificate expiry (cert auth)")
    broker_host: str | None = Field(default=None, description="Where the device connects (its bundle says so)")
    broker_port: int | None = Field(default=None, description="Port the device connects to")
    sign_keys: tuple[SignKey, ...] = Field(
        default=(), description="The device's signing keys, newest last (devices only; the centre gets a copy)"
    )
    hours24: bool | None = Field(
        default=None,
        description="A 24-hour device (its SLA counts wall-clock time, its area is cleaned every day), as IT"
        " registered it; the centre's copy follows this (devices only; None: not registered, the site's name"
        " patterns decide)",
    )

    @property
    def active(self) -> bool:
        return self.state == "active"

    @property
    def label(self) -> str:
        return f"{self.site}/{self.device}" if self.kind == "device" else self.username


class Revocation(_Model):
    serial: str = Field(description="Certificate serial, hex")
    username: str = Field(description="Whose certificate it was")
    revoked_at: datetime
    reason: CrlReason


class AuditEntry(_Model):
    at: datetime
    action: Literal["provision", "rotate", "revoke", "hours24"]
    username: str
    by: str
    detail: str = ""


class Fleet(_Model):
    """The registry's content; operations return a new Fleet."""

    version: Literal[1] = 1
    accounts: tuple[Account, ...] = ()
    revocations: tuple[Revocation, ...] = ()
    audit: tuple[AuditEntry, ...] = ()

    def get(self, username: str) -> Account | None:
        return next((a for a in self.accounts if a.username == username), None)

    def require(self, username: str) -> Account:
        found = self.get(username)
        if found is None:
            raise RegistryError(f"{username} is not in the registry: provision it first")
        return found

    def active(self, kind: Kind | None = None, site: str | None = None) -> list[Account]:
        return [
            a
            for a in sorted(self.accounts, key=lambda a: a.username)
            if a.active and (kind is None or a.kind == kind) and (site is None or a.site == site)
        ]

    def put(self, account: Account, entry: AuditEntry) -> Fleet:
        """Add or replace ``account`` and log why."""
        others = tuple(a for a in self.accounts if a.username != account.username)
        return self.model_copy(update={"accounts": (*others, account), "audit": (*self.audit, entry)})

    def revoke_serial(self, revocation: Revocation) -> Fleet:
        return self.model_copy(update={"revocations": (*self.revocations, revocation)})


def device_username(site: str, device: str) -> str:
    return f"{topics.check_segment(site, 'site')}.{topics.check_segment(device, 'device')}"


def bridge_username(site: str) -> str:
    return f"bridge-{topics.check_segment(site, 'site')}"


def hall_consumer_username(site: str) -> str:
    """The hall consumer's login on its hall's broker (docs/hall-autonomy.md): a service of one site."""
    return f"hall-consumer-{topics.check_segment(site, 'site')}"


def parse_target(target: str) -> str:
    """SITE/DEVICE, or a bridge or service username, to the username."""
    site, sep, device = target.partition("/")
    if sep:
        return device_username(site, device)
    if target in SERVICE_USERS or target.startswith("bridge-"):
        return target
    raise RegistryError(f"{target!r}: write a device as SITE/DEVICE (e.g. qingpu/att-1), or a bridge-SITE account")


def check_person(name: str | None, what: str) -> str:
    """A named person, not a shared account: the audit trail must say who."""
    person = (name or "").strip()
    if not person:
        raise RegistryError(f"{what}: name the IT section member (IT approval is required for every device)")
    if person.lower() in GENERIC_NAMES:
        raise RegistryError(f"{what} {person!r} is a shared account: name the person")
    return person


class Registry:
    """The registry file: read whole, written atomically under an exclusive lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / REGISTRY_FILE

    def load(self) -> Fleet:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return Fleet()
        try:
            return Fleet.model_validate_json(text)
        except ValidationError as exc:
            raise RegistryError(
                f"{self.path} is damaged ({exc.error_count()} errors): restore it from backup"
            ) from None

    def save(self, fleet: Fleet) -> None:
        text = json.dumps(fleet.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
        write_file(self.path, text, 0o600)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Two IT staff provisioning at once must not lose each other's device (read-modify-write)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / ".lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
