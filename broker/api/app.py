"""The API and dashboard as one ASGI app: REST under /api (OpenAPI at /docs), pages, the live stream, /metrics.

The caller owns the store and the MQTT connection (``hallfleet api`` opens both, tests pass their own); the
app only reads ``app.state.mqtt`` when a command is issued, so a supervisor may replace a lost connection.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.api import metrics, pages, routes
from broker.api.auth import LoginThrottle
from broker.api.config import ApiConfig
from broker.api.i18n import language, words
from broker.sites import Sites
from broker.store.db import Store
from protocol.clock import Clock, SystemClock
from protocol.transport import AsyncMqtt


def create_app(cfg: ApiConfig, store: Store, mqtt: AsyncMqtt | None, clock: Clock | None = None) -> FastAPI:
    app = FastAPI(
        title="hallfleet",
        description="Devices, incidents, commands, consumables and attendance of the government service halls",
        version="1",
    )
    app.state.cfg = cfg
    app.state.store = store
    app.state.mqtt = mqtt
    app.state.clock = clock or SystemClock()
    app.state.sites = Sites(cfg.centre_or_default.sites)
    app.state.ack_secret = cfg.centre_or_default.alerts.ack_secret()
    app.state.throttle = LoginThrottle(cfg.login_max_failures, cfg.login_lockout_s)
    app.include_router(routes.router)
    app.include_router(pages.router)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus() -> Response:
        return Response(await metrics.fleet_metrics(store), media_type=metrics.CONTENT_TYPE)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, Any]:
        m = app.state.mqtt
        return {"store": "ok", "mqtt": "connected" if m is not None and m.is_connected else "down"}

    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(SecurityHeaders)
    return app


def _wants_html(request: Request) -> bool:
    path = request.url.path
    return not path.startswith(("/api/", "/metrics", "/events/")) and "text/html" in request.headers.get("accept", "")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 401 and _wants_html(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
    if exc.status_code == 403 and _wants_html(request):
        t = words(language(request))
        return pages.render(request, "forbidden.html", 403, user=None, message=f"{t['forbidden']}: {exc.detail}")
    headers = dict(exc.headers or {})
    if exc.status_code == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    """422 naming each field that failed (``fields``), beside FastAPI's usual ``detail`` list."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    detail = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in errors]
    fields = [".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]) for e in errors]
    return JSONResponse({"detail": detail, "fields": fields}, status_code=422)


class SecurityHeaders:
    """Plain ASGI (not BaseHTTPMiddleware, which would buffer the event stream and hide disconnects)."""

    HEADERS = (
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        # /ack/{token} links carry a credential in the path: never leak it to another site as a Referer.
        # (Not no-referrer: then browsers send "Origin: null" on our own forms and the Origin check refuses them.)
        (b"referrer-policy", b"same-origin"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + list(self.HEADERS)
            await send(message)

        await self.app(scope, receive, with_headers)
