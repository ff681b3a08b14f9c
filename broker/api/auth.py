"""Who may do what: users with one role scoped to sites, argon2 password hashes, login sessions.

A session is a random 256-bit token handed out once at login (an HttpOnly cookie for the dashboard, the same
value as a Bearer token for scripts); the store keeps only its sha256 and its expiry, so a copy of the table
logs nobody in, logging out ends it at once, and several API processes share the sessions through the store.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import HTTPException, Request

from broker.api.passwords import WeakPassword, check_password
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


class PasswordRefused(UserError):
    """The password breaks the password rule (broker/api/passwords.py)."""


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


def _check_password(password: str, name: str) -> None:
    try:
        check_password(password, name)
    except WeakPassword as exc:
        raise PasswordRefused(str(exc)) from None


# -- users -------------------------------------------------------------------------------------------
async def add_user(
    store: Store, name: str, password: str, role: str, sites: tuple[str, ...], now: datetime, *, by: str | None = None
) -> User:
    """``by``: who did it (the API names the admin; the audit row goes in the same transaction)."""
    if not SEGMENT_RE.fullmatch(name.replace(".", "_")):
        raise UserError(f"user name {name!r}: letters, digits, '.', '-' and '_' only, at most 64")
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    _check_password(password, name)
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
    _check_password(password, name)
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


async def open_session(store: Store, user: User, now: datetime, ttl: timedelta, idle: timedelta | None = None) -> str:
    """``ttl``: the longest a login lasts; ``idle``: it ends sooner when unused that long (see touch_session)."""
    token = secrets.token_urlsafe(32)
    async with store.engine.begin() as conn:
        await conn.execute(api_sessions.delete().where(api_sessions.c.expires_at < now))
        await conn.execute(
            api_sessions.insert().values(
                token_hash=_digest(token), username=user.name, created_at=now, expires_at=now + min(ttl, idle or ttl)
            )
        )
    return token


@dataclass(frozen=True, slots=True)
class Session:
    user: User
    created_at: datetime
    expires_at: datetime


async def session_of(store: Store, token: str, now: datetime) -> Session | None:
    """The live session of ``token``, read fresh from the store (a disabled user has none)."""
    s, u = api_sessions.c, users.c
    rows = await store.fetch(
        sa.select(users, s.created_at.label("session_created"), s.expires_at.label("session_expires"))
        .join(api_sessions, s.username == u.username)
        .where(s.token_hash == _digest(token), s.expires_at > now, u.disabled_at.is_(None))
    )
    if not rows:
        return None
    return Session(_user(rows[0]), rows[0].session_created, rows[0].session_expires)


async def session_user(store: Store, token: str, now: datetime) -> User | None:
    found = await session_of(store, token, now)
    return found.user if found is not None else None


TOUCH_EVERY = timedelta(minutes=1)  # an idle deadline moved at most once a minute: not a write per request


async def touch_session(
    store: Store, token: str, session: Session, now: datetime, ttl: timedelta, idle: timedelta
) -> None:
    """A request the user made moves the idle deadline on (never past created_at + ttl). The live stream does
    not call this: a page left open is not a person using it."""
    new = min(session.created_at + ttl, now + idle)
    if new - session.expires_at < TOUCH_EVERY:
        return
    async with store.engine.begin() as conn:
        await conn.execute(
            api_sessions.update().where(api_sessions.c.token_hash == _digest(token)).values(expires_at=new)
        )


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
    """The logged-in user, or 401; each call moves the session's idle deadline on. Cookie-borne writes must
    come from our own pages (Origin check)."""
    token = request_token(request)
    state = request.app.state
    now = state.clock.now()
    found = await session_of(state.store, token, now) if token else None
    if found is None or token is None:
        raise HTTPException(401, "log in first (POST /login, then the cookie or Authorization: Bearer TOKEN)")
    same_origin(request)
    cfg = state.cfg
    await touch_session(state.store, token, found, now, cfg.session_ttl, cfg.session_idle)
    return found.user


def same_origin(request: Request) -> None:
    """403 for a cookie-borne write from another site (the login and logout forms too, which have no session
    yet or no longer: a forged login would sign a victim in as the attacker)."""
    if request.method in ("GET", "HEAD") or "authorization" in request.headers:
        return
    origin = request.headers.get("origin")
    if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
        raise HTTPException(403, "cross-site request refused")


def need(user: User, permission: str, site: str | None = None) -> None:
    """403 unless the user's role allows it and, for a site's data, the site is theirs."""
    if not user.can(permission):
        raise HTTPException(403, f"role {user.role} may not do this ({permission})")
    if site is not None and not user.sees(site):
        raise HTTPException(403, f"site {site} is not one of {user.name}'s sites")
