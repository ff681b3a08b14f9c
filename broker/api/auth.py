"""Who may do what: users with one role scoped to sites, argon2 password hashes, login sessions.

A session is a random 256-bit token handed out once at login (an HttpOnly cookie for the dashboard, the same
value as a Bearer token for scripts); the store keeps only its sha256 and its expiry, so a copy of the table
logs nobody in, logging out ends it at once, and several API processes share the sessions through the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request

from broker.store.commands import audit
from broker.store.db import Store
from broker.store.schema import api_sessions, users
from protocol.topics import SEGMENT_RE

Role = Literal["it_admin", "technician", "window_management", "readonly"]
ROLES: tuple[str, ...] = get_args(Role)
COOKIE = "hallfleet_session"

# What each role may do. Reading devices and incidents is for everyone of the site; attendance is staff's
# personal data (window management and the IT section only); only people who fix devices act on them.
PERMISSIONS: dict[str, frozenset[str]] = {
    "it_admin": frozenset(
        {
            "devices",
            "incidents",
            "ack",
            "command",
            "dispatch",
            "consumables",
            "attendance",
            "ratings",
            "followup",
            "audit",
            "commands.read",
            "users",
        }
    ),
    "technician": frozenset(
        {"devices", "incidents", "ack", "command", "dispatch", "consumables", "audit", "commands.read"}
    ),
    # Ratings name staff and windows (like attendance): window management and the IT section only; window
    # management answers the negative ones (reply, rectification).
    "window_management": frozenset({"devices", "incidents", "attendance", "ratings", "followup"}),
    "readonly": frozenset({"devices", "incidents", "consumables", "commands.read"}),
}

_hasher = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class UserError(ValueError):
    """A user that cannot be created or changed; the message says why."""


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: str
    sites: tuple[str, ...]  # ("*",) = every site

    @property
    def all_sites(self) -> bool:
        return "*" in self.sites

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())

    def sees(self, site: str) -> bool:
        return self.all_sites or site in self.sites

    def site_filter(self) -> list[str] | None:
        """None: every site; else the sites a query must be limited to."""
        return None if self.all_sites else list(self.sites)


def _user(row: Any) -> User:
    return User(row.username, row.role, tuple(s for s in row.sites.split(",") if s))


def parse_sites(text: str) -> tuple[str, ...]:
    sites = tuple(s.strip() for s in text.split(",") if s.strip())
    if not sites:
        raise UserError("a user needs at least one site (or * for every site)")
    for s in sites:
        if s != "*" and not SEGMENT_RE.fullmatch(s):
            raise UserError(f"site {s!r}: letters, digits, - and _ only (as in the devices' topics)")
    return sites


def _check_password(password: str) -> None:
    if len(password) < 10:
        raise UserError("a password needs at least 10 characters")


# -- users -------------------------------------------------------------------------------------------
async def add_user(
    store: Store, name: str, password: str, role: str, sites: tuple[str, ...], now: datetime, *, by: str | None = None
) -> User:
    """``by``: who did it (the API names the admin; the audit row goes in the same transaction)."""
    if not SEGMENT_RE.fullmatch(name.replace(".", "_")):
        raise UserError(f"user name {name!r}: letters, digits, '.', '-' and '_' only, at most 64")
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    _check_password(password)
    digest = await asyncio.to_thread(_hasher.hash, password)
    async with store.engine.begin() as conn:
        if await conn.scalar(sa.select(users.c.username).where(users.c.username == name)):
            raise UserError(f"user {name!r} exists already")
        await conn.execute(
            users.insert().values(
                username=name, password_hash=digest, role=role, sites=",".join(sites), created_at=now, updated_at=now
            )
        )
        if by is not None:
            await audit(conn, at=now, actor=by, action="user.add", target=user_target(name),
                        detail={"role": role, "sites": list(sites)})  # fmt: skip
    return User(name, role, sites)


async def set_password(store: Store, name: str, password: str, now: datetime, *, by: str | None = None) -> None:
    _check_password(password)
    digest = await asyncio.to_thread(_hasher.hash, password)
    async with store.engine.begin() as conn:
        done = await conn.execute(
            users.update().where(users.c.username == name).values(password_hash=digest, updated_at=now)
        )
        if done.rowcount != 1:
            raise UserError(f"no user {name!r}")
        await conn.execute(api_sessions.delete().where(api_sessions.c.username == name))
        if by is not None:
            await audit(conn, at=now, actor=by, action="user.passwd", target=user_target(name))


async def disable_user(store: Store, name: str, now: datetime, *, by: str | None = None) -> None:
    async with store.engine.begin() as conn:
        done = await conn.execute(users.update().where(users.c.username == name).values(disabled_at=now))
        if done.rowcount != 1:
            raise UserError(f"no user {name!r}")
        await conn.execute(api_sessions.delete().where(api_sessions.c.username == name))
        if by is not None:
            await audit(conn, at=now, actor=by, action="user.disable", target=user_target(name))


def user_target(name: str) -> str:
    """Audit target of a user account: no site prefix, so only people who see every site read these rows."""
    return f"user:{name}"


async def list_users(store: Store) -> list[Any]:
    return await store.fetch(sa.select(users).order_by(users.c.username))


async def check_login(store: Store, name: str, password: str) -> User | None:
    rows = await store.fetch(sa.select(users).where(users.c.username == name, users.c.disabled_at.is_(None)))
    digest = rows[0].password_hash if rows else _DUMMY_HASH
    try:
        await asyncio.to_thread(_hasher.verify, digest, password)
    except (VerificationError, InvalidHashError):
        return None
    return _user(rows[0]) if rows else None


# -- sessions ----------------------------------------------------------------------------------------
def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(store: Store, user: User, now: datetime, ttl: timedelta) -> str:
    token = secrets.token_urlsafe(32)
    async with store.engine.begin() as conn:
        await conn.execute(api_sessions.delete().where(api_sessions.c.expires_at < now))
        await conn.execute(
            api_sessions.insert().values(
                token_hash=_digest(token), username=user.name, created_at=now, expires_at=now + ttl
            )
        )
    return token


async def session_user(store: Store, token: str, now: datetime) -> User | None:
    s, u = api_sessions.c, users.c
    rows = await store.fetch(
        sa.select(users)
        .join(api_sessions, s.username == u.username)
        .where(s.token_hash == _digest(token), s.expires_at > now, u.disabled_at.is_(None))
    )
    return _user(rows[0]) if rows else None


async def close_session(store: Store, token: str) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(api_sessions.delete().where(api_sessions.c.token_hash == _digest(token)))


def request_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE)


# -- FastAPI dependencies ----------------------------------------------------------------------------
async def current_user(request: Request) -> User:
    """The logged-in user, or 401. Cookie-borne writes must come from our own pages (Origin check)."""
    token = request_token(request)
    state = request.app.state
    user = await session_user(state.store, token, state.clock.now()) if token else None
    if user is None:
        raise HTTPException(401, "log in first (POST /login, then the cookie or Authorization: Bearer TOKEN)")
    if request.method not in ("GET", "HEAD") and "authorization" not in request.headers:
        origin = request.headers.get("origin")
        if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
            raise HTTPException(403, "cross-site request refused")
    return user


def need(user: User, permission: str, site: str | None = None) -> None:
    """403 unless the user's role allows it and, for a site's data, the site is theirs."""
    if not user.can(permission):
        raise HTTPException(403, f"role {user.role} may not do this ({permission})")
    if site is not None and not user.sees(site):
        raise HTTPException(403, f"site {site} is not one of {user.name}'s sites")


class LoginThrottle:
    """Failed logins per name: after ``max_failures`` within ``window_s`` the name is locked out for that long.
    Bounded: the oldest names are forgotten first."""

    def __init__(self, max_failures: int, window_s: float, capacity: int = 10_000) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.capacity = capacity
        self._failures: OrderedDict[str, list[float]] = OrderedDict()

    def locked(self, name: str) -> bool:
        recent = [t for t in self._failures.get(name, []) if time.monotonic() - t < self.window_s]
        return len(recent) >= self.max_failures

    def failed(self, name: str) -> None:
        now = time.monotonic()
        times = [t for t in self._failures.pop(name, []) if now - t < self.window_s] + [now]
        self._failures[name] = times[-self.max_failures :]
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)
