"""One login, for the API (JSON) and the dashboard's form alike: throttled, verified, audited.

The rule: the throttle's verdict comes before the password is looked at, and every outcome is in the audit
log with the name and the source: a login, a failure, and the failure that starts a lock-out (refusals while
locked are not written one by one: the limit already bounds them, and a flood of them would bury the log).
A name that cannot be a user's is refused without an argon2 verification and without a place in the
per-name table, and is recorded as ``(invalid)`` with its first characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import Request

from broker.api.audit import record, source_of
from broker.api.auth import User, check_login, open_session, user_target
from broker.api.params import USER_NAME
from broker.api.throttle import Attempt, Refused

MAX_PASSWORD = 1024  # argon2 hashes whatever it is given: a megabyte password would cost its full length


@dataclass(frozen=True, slots=True)
class Login:
    user: User
    token: str
    expires_at: datetime
    ttl: timedelta


@dataclass(frozen=True, slots=True)
class Failure:
    status: int  # 401 wrong name or password; 429 refused by the throttle
    retry_after_s: int = 0


async def log_in(request: Request, name: str, password: str) -> Login | Failure:
    state = request.app.state
    source = source_of(request)
    valid = re.fullmatch(USER_NAME, name) is not None and 0 < len(password) <= MAX_PASSWORD
    key = name if valid else "(invalid)"
    attempt = state.throttle.begin(key, source)
    if isinstance(attempt, Refused):
        return Failure(429, attempt.retry_after_s)
    user = await check_login(state.store, name, password) if valid else None
    now = state.clock.now()
    if user is None:
        await _failed(request, attempt, name if valid else f"(invalid) {name[:32]!r}", now)
        return Failure(401)
    state.throttle.succeeded(attempt)
    cfg = state.cfg
    token = await open_session(state.store, user, now, cfg.session_ttl, cfg.session_idle)
    await _audit(request, "auth.login", user.name, now, {"source": source, "role": user.role})
    return Login(user, token, now + min(cfg.session_ttl, cfg.session_idle), cfg.session_ttl)


async def _failed(request: Request, attempt: Attempt, shown: str, now: datetime) -> None:
    await _audit(request, "auth.failed", shown, now, {"source": attempt.source})
    if attempt.locks:
        why = "known source" if attempt.known else "every source but those it logged in from"
        await _audit(request, "auth.locked", shown, now, {"source": attempt.source, "for": why})


async def _audit(request: Request, action: str, name: str, now: datetime, detail: dict[str, Any]) -> None:
    await record(request.app.state.store, now, name, action, user_target(name), detail)
