"""The store banner: every dashboard page says when the data behind it may not be current (issue 16).

The rule: the banner is read from what the consumers themselves report (``consumer_health``, written by
broker/jobs/health.py) and from the API's own read of the store, never guessed. It shows when a consumer
reports waiting for the store; when no consumer's report is fresh (older than ``STALE_INTERVALS`` of its own
interval) while devices are online; and when the API cannot read the store at all, in which case a page that
needed the store answers 503 with the banner, not a 500 with a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import ASGIApp, Receive, Scope, Send

from broker.api.views import hall_time
from broker.ingest.isolation import StoreFault, classify, describe
from broker.jobs.health import STALE_INTERVALS, STOPPED, WAITING
from broker.store.db import Store
from broker.store.schema import consumer_health, devices
from runtime.clock import Clock

log = logging.getLogger(__name__)

UNREACHABLE, SILENT, NO_CONSUMER = "unreachable", "silent", "no_consumer"
STATE = "store_banners"  # request.state attribute the pages read


@dataclass(frozen=True, slots=True)
class Banner:
    kind: str  # unreachable | waiting | silent | no_consumer
    instance: str = ""
    since: datetime | None = None
    state: str = ""
    error: str = ""

    def text(self, t: dict[str, str]) -> str:
        key = "store_" + self.kind
        state = t.get(f"consumer_{self.state}", self.state)
        return t[key].format(instance=self.instance, since=hall_time(self.since), state=state, error=self.error)


def is_unavailable(exc: BaseException) -> bool:
    """The store is away or overloaded (not a bug in a query): what the banner and the 503 are for. A bare
    OSError is asyncpg's refused connect; its subclasses other than connection errors (a missing file) are not."""
    if isinstance(exc, OSError) and type(exc) is not OSError and not isinstance(exc, ConnectionError | TimeoutError):
        return False
    return classify(exc) is StoreFault.UNAVAILABLE


async def banners(store: Store, now: datetime) -> tuple[Banner, ...]:
    rows = await store.fetch(sa.select(consumer_health).order_by(consumer_health.c.updated_at.desc()))
    fresh = [
        r for r in rows if r.state != STOPPED and now - r.updated_at <= timedelta(seconds=STALE_INTERVALS * r.every_s)
    ]
    out = [
        Banner(WAITING, r.instance, r.waiting_since, r.state, r.last_error or "") for r in fresh if r.state == WAITING
    ]
    if fresh or not await _devices_online(store):
        return tuple(out)
    if not rows:
        return (Banner(NO_CONSUMER),)
    last = rows[0]  # the latest report of any consumer: when the silence began
    return (Banner(SILENT, last.instance, last.updated_at, last.state, last.last_error or ""),)


async def _devices_online(store: Store) -> bool:
    return bool(await store.fetch(sa.select(devices.c.key).where(devices.c.presence == "online").limit(1)))


class StoreBanner:
    """Plain ASGI: before a page (a GET that wants HTML) is routed, the banner is read and left in the
    request's state for ``pages.render``; a store that cannot be read becomes the 'unreachable' banner."""

    def __init__(self, app: ASGIApp, store: Store, clock: Clock) -> None:
        self.app = app
        self.store = store
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _is_page(scope):
            scope.setdefault("state", {})[STATE] = await self._read()
        await self.app(scope, receive, send)

    async def _read(self) -> tuple[Banner, ...]:
        try:
            return await banners(self.store, self.clock.now())
        except (SQLAlchemyError, OSError) as exc:
            if not is_unavailable(exc):
                raise
            log.error("dashboard: store unreachable (%s)", describe(exc))
            return (Banner(UNREACHABLE),)


def _is_page(scope: Scope) -> bool:
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    path: str = scope["path"]
    if path.startswith(("/api/", "/metrics", "/events/", "/docs", "/openapi.json", "/healthz")) or path.endswith(
        "/stream"
    ):
        return False
    accept = dict(scope["headers"]).get(b"accept", b"")
    return b"text/html" in accept


async def store_unreachable(request: Request, exc: Exception) -> Response:
    """A request that needed the store while it is away: 503 (a page with the banner for a browser), one log
    line naming the error, no traceback. Any other database error is a bug and stays a 500."""
    if not is_unavailable(exc):
        raise exc
    log.error("%s %s: store unreachable (%s)", request.method, request.url.path, describe(exc))
    from broker.api import pages  # pages imports this module's banner state

    if "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/"):
        return pages.render(request, "store_down.html", 503, user=None, **{STATE: (Banner(UNREACHABLE),)})
    return JSONResponse({"detail": "the store is unreachable; try again shortly"}, status_code=503, headers=_RETRY)


_RETRY: dict[str, Any] = {"Retry-After": "5"}
