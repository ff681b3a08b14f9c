"""The audit log as people may read it, and what the API adds to it (logins, reads of staff data).

The rule: an audit row is personal data of the same class as what it records, so it is shown only to a role
that may see that data, for a site the user sees. A technician reads who restarted a kiosk, not a staff
member's leave reason (attendance), a roster change, a face enrolment or a review of a rating. Actions are
sorted into classes by their prefix; an action no class names is the IT section's (deny by default), so a
new kind of row never leaks before someone decides who may read it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from fastapi import Request

from broker.api.auth import User
from broker.store.commands import audit
from broker.store.db import Store
from broker.store.schema import audit_log

# permission needed to read a row -> the action prefixes of that class
CLASSES: dict[str, tuple[str, ...]] = {
    "devices": ("command.", "config.", "incident.", "dispatch.", "notification."),
    "attendance": ("attendance.", "staff.", "gallery.", "consent."),
    "ratings": ("rating.", "ratings."),
}
# Users, logins and whatever no class names: the IT section's (permission "users").
EVERYTHING = "users"

# The same rule for a device's own events as a page lists them: a punch names a staff id and its time, a rating
# the staff member at the window, a patrol scan the officer. Event types no class names are the IT section's.
EVENT_CLASSES: dict[str, tuple[str, ...]] = {
    "devices": ("device.", "kiosk.", "command.", "config.", "app.", "door.", "locker.", "duty.", "queue.",
                "attendance.gallery"),
    "attendance": ("attendance.punch", "patrol."),
    "ratings": ("rating.",),
}  # fmt: skip


STAFF_CLASSES = ("attendance", "ratings")  # the classes whose reads are themselves audited


def may_read_event(user: User, event_type: str) -> bool:
    """Whether ``user`` may read the payload of a device event of ``event_type`` (deny by default)."""
    if user.can(EVERYTHING):
        return True
    return any(user.can(perm) for perm, ps in EVENT_CLASSES.items() if event_type.startswith(ps))


def _class_of(action: str, classes: dict[str, tuple[str, ...]]) -> str | None:
    return next((perm for perm, ps in classes.items() if action.startswith(ps)), None)


async def staff_rows_read(
    request: Request, user: User, site: str, what: str, kinds: list[str], *, events: bool
) -> None:
    """A page or an answer that shows audit rows (``events``: device events) of ``kinds``: one audited read per
    staff data class among them, as the attendance page's own read is."""
    classes = EVENT_CLASSES if events else CLASSES
    shown = {_class_of(k, classes) for k in kinds if not events or may_read_event(user, k)}
    for cls in sorted(c for c in shown if c in STAFF_CLASSES):
        await staff_data_read(request, user, f"{cls}.read", site, what=what)


def audit_query(user: User, device: str | None = None) -> sa.Select[Any]:
    """The rows ``user`` may read, newest first (``device``: only rows about that SITE/DEVICE)."""
    a = audit_log.c
    q = sa.select(audit_log).order_by(a.id.desc())
    if not user.can(EVERYTHING):
        prefixes = [p for perm, ps in CLASSES.items() if user.can(perm) for p in ps]
        q = q.where(sa.or_(sa.false(), *[a.action.startswith(p, autoescape=True) for p in prefixes]))
    sites = user.site_filter()
    if sites is not None:
        # Rows name a device, an incident's key or a staff member as {site}/..., or the site itself.
        q = q.where(sa.or_(*[a.target.startswith(f"{s}/", autoescape=True) | (a.target == s) for s in sites]))
    if device is not None:
        q = q.where(a.target == device)
    return q


def source_of(request: Request) -> str:
    """Where a request came from: the client address uvicorn saw (behind the TLS proxy, the address the proxy
    forwarded: uvicorn's proxy_headers trusts X-Forwarded-For from the proxy only)."""
    return request.client.host if request.client else "unknown"


async def record(store: Store, at: datetime, actor: str, action: str, target: str, detail: dict[str, Any]) -> None:
    async with store.engine.begin() as conn:
        await audit(conn, at=at, actor=actor, action=action, target=target, detail=detail)


async def staff_data_read(request: Request, user: User, action: str, site: str, **detail: Any) -> None:
    """A read or an export of staff personal data (attendance, ratings naming staff): who, what, from where.
    Written before the data is answered, so a read the log cannot record is not answered either."""
    state = request.app.state
    detail = {**detail, "source": source_of(request), "path": request.url.path}
    await record(state.store, state.clock.now(), user.name, action, f"{site}/*", detail)
